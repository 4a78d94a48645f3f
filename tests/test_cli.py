"""`autosam setups`: the 18 set-ups with real-size counts computed without weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autosam.cli import main
from autosam.experiments.demo import DEMO_DATA
from tests.conftest import case_ids, copy_subset

PUBLISHED_TOTALS = {"vit_b": 93.7e6, "vit_h": 641e6, "vit_t": 10.1e6}  # SAM / MobileSAM releases


def _setups_json(capsys, *args: str) -> list[dict]:
    assert main(["setups", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_lists_the_18_setups(capsys) -> None:
    rows = _setups_json(capsys, "--image-size", "256")
    assert len(rows) == 18 and len({r["name"] for r in rows}) == 18
    for row in rows:
        assert row["name"] == f"{row['backbone']}_{row['scope']}_{row['method']}"
        assert isinstance(row["total_params"], int) and 0 < row["trainable_params"] < row["total_params"] + 1
        assert row["gflops"] > 0


@pytest.mark.parametrize("backbone", PUBLISHED_TOTALS)
def test_real_size_totals_match_the_published_models(capsys, backbone: str) -> None:
    # The official checkpoints: 1024 px, decoder with 4 mask tokens.
    rows = _setups_json(capsys, "--backbone", backbone, "--num-classes", "4")
    assert len(rows) == 6
    total = next(r["total_params"] for r in rows if r["method"] == "vanilla")
    assert abs(total - PUBLISHED_TOTALS[backbone]) / PUBLISHED_TOTALS[backbone] < 0.01


def test_bad_flag_value_is_one_line_and_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "autosam", "setups", "--backbone", "vit_q"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "vit_q" in result.stderr and "Traceback" not in result.stderr


def test_unwritable_output_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    unwritable = Path("/sys/autosam_preprocessed")  # sysfs refuses new folders even to root
    if Path("/sys").stat().st_dev == Path("/").stat().st_dev or os.path.exists(unwritable):
        pytest.skip("no unwritable folder available on this machine")
    copy_subset(DEMO_DATA, tmp_path, case_ids(DEMO_DATA)[:6])
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    monkeypatch.setenv("nnUNet_preprocessed", str(unwritable))
    assert main(["plan", "-d", "901", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err

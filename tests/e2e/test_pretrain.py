"""`autosam pretrain` and `autosam pretrain --prompted` through the command line, end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mobile_sam import sam_model_registry

from autosam.cli import main
from autosam.sam.weights.catalogue import USER_CATALOGUE
from tests.conftest import busi_or_demo

TEST_BACKBONES = ("test_vit", "test_tiny_vit")


def test_pretrain_command_end_to_end(tmp_path: Path, capsys) -> None:
    source = busi_or_demo() / "imagesTr"
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(source.glob("*.png"))[:3]:
        (images / path.name).write_bytes(path.read_bytes())
    output = tmp_path / "weights" / "us_t.pth"
    command = ["pretrain", "--images", str(images), "-o", str(output), "--backbone", "vit_t", "--image-size", "256",
               "--epochs", "1", "--batch-size", "2", "--modality", "ultrasound"]
    assert main(command) == 0
    entry = json.loads((output.parent / USER_CATALOGUE).read_text())["checkpoints"]["us_t"]
    assert (entry["backbone"], entry["modality"], entry["size"]) == ("vit_t", "US", output.stat().st_size)

    sam_model_registry["vit_t"](checkpoint=str(output))
    written = output.read_bytes()
    assert main(command) == 2  # never over an existing file
    assert "exists" in capsys.readouterr().err and output.read_bytes() == written
    assert main(command[:3] + ["-o", str(output.with_suffix(".pt"))] + command[5:]) == 2  # nor its catalogue name
    assert "already names" in capsys.readouterr().err


def test_prompted_command_end_to_end(two_labelled_datasets, tmp_path: Path, capsys) -> None:
    output = tmp_path / "weights" / "prompted_cli.pth"
    command = ["pretrain", "--prompted", "-d", "992", "-o", str(output), "--backbone", "vit_t", "--image-size", "256",
               "--epochs", "1", "--batch-size", "3", "--prompts", "point"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert re.search(r"Dice \+ BCE on the fixed evaluation slices: [\d.]+ before, [\d.]+ after", printed)

    sam_model_registry["vit_t"](checkpoint=str(output))
    assert main(["pretrain", "--prompted", "--images", str(tmp_path), "-o", str(tmp_path / "x.pth")]) == 2
    assert "not --images" in capsys.readouterr().err

"""The Python API: resolved on first use, so that ``import autosam`` loads neither torch nor nnU-Net and sets
nnU-Net's environment first; the functions do the commands' work."""

from __future__ import annotations

import subprocess
import sys

import autosam


def test_import_is_light_and_sets_nnunets_environment_first() -> None:
    code = (
        "import os, sys, autosam; loaded = [m for m in sys.modules if m.split('.')[0] in ('torch', 'nnunetv2')]; "
        "assert not loaded, loaded; assert os.environ['nnUNet_def_n_proc']; "
        "assert callable(autosam.run) and callable(autosam.plan); print(sorted(autosam.API))"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "'run'" in result.stdout and "'status'" in result.stdout


def test_plan_previews_and_status_reads_back(planned_demo) -> None:
    plans_file = planned_demo["nnUNet_preprocessed"] / "Dataset901_BUSIDemo" / "autosamPlans.json"
    before = plans_file.read_bytes()
    summary = autosam.plan(901, device="cpu", setup="test_vit_dec_lora", image_size=64, from_scratch=True)
    assert summary["setup"] == "test_vit_dec_lora" and summary["reasons"]["setup"] == "set by the user: --setup (R27 (user))"
    assert plans_file.read_bytes() == before
    assert autosam.status("901")[0].startswith("plan: test_vit_encdec_lora at 64 px")
    assert autosam.validate(901) is not None

"""No code runs from a checkpoint: a fold file that needs pickled code is refused before nnU-Net loads it."""

from __future__ import annotations

from pathlib import Path

import torch

from autosam.cli import main


class _Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_predict_refuses_a_checkpoint_that_needs_code(nnunet_folders, tmp_path: Path, capsys) -> None:
    fold = nnunet_folders["nnUNet_results"] / "Dataset901_Planted" / "nnUNetTrainerSAM__autosamPlans__2d_sam" / "fold_0"
    fold.mkdir(parents=True)
    marker = tmp_path / "code_ran"
    torch.save({"network_weights": {}, "payload": _Payload(marker)}, fold / "checkpoint_final.pth")
    images = tmp_path / "images"
    images.mkdir()

    code = main(["predict", "-d", "901", "-i", str(images), "-o", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert f"checkpoint {fold / 'checkpoint_final.pth'}: needs code to be read" in err and len(err.splitlines()) == 1

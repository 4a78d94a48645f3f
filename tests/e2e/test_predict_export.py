"""Train a fixed set-up, predict with it and export it, on the bundled data, through the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from autosam.cli import main
from autosam.experiments.demo import DEMO_DATA
from autosam.inference.trained_models import SamFold, resolve_model, trained_model_folder
from autosam.paths import Dataset
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam
from tests.conftest import case_ids, copy_subset, predict, stock_sam

TOLERANCE = 1e-4
BF16_TOLERANCE = 0.05  # bf16 keeps 8 bits of mantissa: logits near 1 move by up to ~1e-2


def test_train_setup_then_predict_then_export_on_the_bundled_data(nnunet_folders, base_checkpoint, tmp_path: Path,
                                                                   capsys) -> None:
    """autosam train --setup X -> predict (no --setup) -> export -> stock classes -> the same output."""
    copy_subset(DEMO_DATA, nnunet_folders["nnUNet_raw"], case_ids(DEMO_DATA)[:8])
    base, _ = base_checkpoint("vit_t", 256, 4, name="my_mobile_sam.pt")
    assert main(["plan-and-preprocess", "-d", "901", "--setup", "vit_t_encdec_lora", "--image-size", "256",
                 "--checkpoint", str(base), "--batch-size", "2"]) == 0
    assert main(["train", "-d", "901", "-f", "0", "--setup", "vit_t_dec_lora", "--epochs", "1", "--iterations", "2",
                 "--device", "cpu"]) == 0
    unseen, out = tmp_path / "unseen", tmp_path / "predicted"
    unseen.mkdir()
    case = case_ids(DEMO_DATA)[-1]
    shutil.copy(DEMO_DATA / "imagesTr" / f"{case}_0000.png", unseen / "new_0000.png")
    capsys.readouterr()
    assert main(["predict", "-d", "901", "-i", str(unseen), "-o", str(out), "--device", "cpu", "--disable-tta"]) == 0
    assert "nnUNetTrainerSAM_vit_t_dec_lora__autosamPlans__2d_sam: the only trained SAM model" in capsys.readouterr().out

    target = tmp_path / "exported" / "busi_sam.pth"
    assert main(["export", "-d", "901", "-f", "0", "-o", str(target)]) == 0
    meta = json.loads(target.with_suffix(".json").read_text())
    assert meta["setup"]["name"] == "vit_t_dec_lora" and meta["class_tokens"] == 2 and meta["image_size"] == 256
    assert "TinyViTAnySize" in meta["loading"]  # MobileSAM's own TinyViT only runs at 1024 px
    assert main(["export", "-d", "901", "-f", "0", "-o", str(target)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err

    dataset = Dataset.resolve("901")
    model = resolve_model(dataset).models[0]
    fine_tuned, _ = SamFold(trained_model_folder(dataset, model), model.trainer, model.configuration, "0").network()
    x = torch.randn(1, 1, 256, 256)
    planned = predict(fine_tuned, x)  # in the plan's precision: bf16 where native, on some CPUs too
    fine_tuned.precision = "fp32"  # the weights are compared: both in fp32
    stock = predict(SamSegmenter(stock_sam("vit_t", 256, 2, target), 1), x)
    assert (stock - predict(fine_tuned, x)).abs().max() <= TOLERANCE
    assert (stock - planned).abs().max() <= BF16_TOLERANCE

    # the base file swapped under the plan: predict and export both refuse, naming the fold and the fix
    torch.save(build_sam("vit_t", 256, 4).state_dict(), base)
    for command in (["predict", "-d", "901", "-i", str(unseen), "-o", str(tmp_path / "again"), "--device", "cpu"],
                    ["export", "-d", "901", "-f", "0", "-o", str(tmp_path / "other.pth")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "fold_0/checkpoint_final.pth: fine-tuned from my_mobile_sam.pt" in err
        assert "put the original base file back" in err

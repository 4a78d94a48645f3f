"""Export: a fine-tuned fold becomes a stock SAM checkpoint (LoRA merged by peft) plus peft's own files,
and stock classes given it compute what the fine-tuned network computes."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from autosam.cli import main
from autosam.experiments.demo import DEMO_DATA
from autosam.errors import CheckpointError
from autosam.inference.export import export_network
from autosam.sam.model import build_network
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam
from autosam.sam.setups import Setup
from tests.conftest import case_ids, copy_subset
from tests.test_fold_checkpoint import predict, train_a_step
from autosam.paths import Dataset

TOLERANCE = 1e-4


def _perturbed(setup: str, size: int, classes: int, channels: int = 1) -> SamSegmenter:
    """A network whose trainable weights moved away from their start (LoRA B is zero at the start)."""
    network = build_network(Setup.parse(setup), size, classes, channels)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * (0.02 if "lora_" in name else 0.005))
    return network.eval()


def _stock(backbone: str, size: int, classes: int, path: Path):
    stock = build_sam(backbone, size, classes)  # segment-anything's classes (vit_t: TinyViT at any size)
    stock.load_state_dict(torch.load(path, weights_only=True), strict=True)
    return stock


@pytest.mark.parametrize("name", ["test_vit_encdec_lora", "test_vit_dec_lora", "test_tiny_vit_encdec_lora",
                                  "test_vit_encdec_vanilla", "test_tiny_vit_dec_vanilla"])
def test_export_loads_into_stock_classes_and_computes_the_same(name: str, tmp_path: Path) -> None:
    network = build_network(Setup.parse(name), 64, 3, 1)
    train_a_step(network)
    x = torch.randn(2, 1, 64, 64)
    expected = predict(network, x)
    exported = export_network(network, tmp_path / "sam.pth")

    stock = _stock(network.setup.backbone, 64, 3, exported.checkpoint)
    assert (predict(SamSegmenter(stock, 1), x) - expected).abs().max() <= TOLERANCE
    assert "build_sam('" in exported.loading  # test backbones are in no stock registry
    if network.setup.method != "lora":
        assert exported.peft_folder is None
        return
    # peft's own files on the unmerged weights reproduce the network too
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in exported.peft_folder.iterdir()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapted = PeftModel.from_pretrained(_base_of(network), str(exported.peft_folder))
    assert (predict(SamSegmenter(adapted.base_model.model, 1), x) - expected).abs().max() <= TOLERANCE


def _base_of(network: SamSegmenter):
    """A stock SAM holding the network's frozen base weights (LoRA not applied)."""
    from autosam.sam.weights.base import official_view

    sam = build_sam(network.setup.backbone, network.image_size, network.num_classes)
    own = network.sam.state_dict()
    sam.load_state_dict({official: own[key] for official, key in official_view(network.sam).items()})
    return sam


@pytest.mark.parametrize("name, channels, phrase", [("test_vit_encdec_adapter", 1, "adapters"),
                                                    ("test_vit_encdec_lora", 4, "input projection")])
def test_what_stock_sam_cannot_hold_is_refused(name: str, channels: int, phrase: str, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=phrase):
        export_network(build_network(Setup.parse(name), 64, 3, channels), tmp_path / "sam.pth")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("name, registry", [("vit_t_encdec_lora", "mobile_sam"), ("vit_b_encdec_lora", "segment_anything")])
def test_export_at_1024_with_4_classes_loads_with_the_stock_registry(name: str, registry: str, tmp_path: Path) -> None:
    import importlib

    network = _perturbed(name, 1024, 4, 3)
    exported = export_network(network, tmp_path / "sam.pth")
    assert f"loads unchanged with {registry}.sam_model_registry" in exported.loading
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = importlib.import_module(registry).sam_model_registry[network.setup.backbone](
            checkpoint=str(exported.checkpoint))
    x = torch.randn(1, 3, 1024, 1024)
    assert (predict(SamSegmenter(stock, 3), x) - predict(network, x)).abs().max() <= TOLERANCE


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

    from autosam.inference.trained_models import SamFold, resolve_model, trained_model_folder

    model = resolve_model(Dataset.resolve("901")).models[0]
    fine_tuned, _ = SamFold(trained_model_folder(Dataset.resolve("901"), model), model.trainer, model.configuration, "0").network()
    x = torch.randn(1, 1, 256, 256)
    stock = _stock("vit_t", 256, 2, target)
    assert (predict(SamSegmenter(stock, 1), x) - predict(fine_tuned, x)).abs().max() <= TOLERANCE

    # the base file swapped under the plan: predict and export both refuse, naming the fold and the fix
    torch.save(build_sam("vit_t", 256, 4).state_dict(), base)
    for command in (["predict", "-d", "901", "-i", str(unseen), "-o", str(tmp_path / "again"), "--device", "cpu"],
                    ["export", "-d", "901", "-f", "0", "-o", str(tmp_path / "other.pth")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "fold_0/checkpoint_final.pth: fine-tuned from my_mobile_sam.pt" in err
        assert "put the original base file back" in err

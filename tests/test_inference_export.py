"""Export: a fine-tuned fold becomes a stock SAM checkpoint (LoRA merged by peft) plus peft's own files,
and stock classes given it compute what the fine-tuned network computes."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from autosam.errors import CheckpointError
from autosam.inference.export import export_network
from autosam.sam.model import build_network
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam
from autosam.sam.setups import Setup
from autosam.sam.weights.base import official_view
from tests.conftest import predict, stock_sam, train_a_step

TOLERANCE = 1e-4


def _perturbed(setup: str, size: int, classes: int, channels: int = 1) -> SamSegmenter:
    """A network whose trainable weights moved away from their start (LoRA B is zero at the start)."""
    network = build_network(Setup.parse(setup), size, classes, channels)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * (0.02 if "lora_" in name else 0.005))
    return network.eval()


@pytest.mark.parametrize("name", ["test_vit_encdec_lora", "test_vit_dec_lora", "test_tiny_vit_encdec_lora",
                                  "test_vit_encdec_vanilla", "test_tiny_vit_dec_vanilla"])
def test_export_loads_into_stock_classes_and_computes_the_same(name: str, tmp_path: Path) -> None:
    network = build_network(Setup.parse(name), 64, 3, 1)
    train_a_step(network)
    x = torch.randn(2, 1, 64, 64)
    expected = predict(network, x)
    exported = export_network(network, tmp_path / "sam.pth")

    stock = stock_sam(network.setup.backbone, 64, 3, exported.checkpoint)
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
    network = _perturbed(name, 1024, 4, 3)
    exported = export_network(network, tmp_path / "sam.pth")
    assert f"loads unchanged with {registry}.sam_model_registry" in exported.loading
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = importlib.import_module(registry).sam_model_registry[network.setup.backbone](
            checkpoint=str(exported.checkpoint))
    x = torch.randn(1, 3, 1024, 1024)
    assert (predict(SamSegmenter(stock, 3), x) - predict(network, x)).abs().max() <= TOLERANCE

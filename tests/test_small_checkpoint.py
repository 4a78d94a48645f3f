"""Fine-tuned weights without the base: exact round trip, base identity check, LoRA merge and export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from segment_anything import sam_model_registry

from autosam.errors import CheckpointError
from autosam.sam.model import build_network
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam
from autosam.sam.setups import Setup
from autosam.sam.small_checkpoint import (
    export_merged,
    merged_sam_state,
    read_small_checkpoint,
    restore_small_state,
    save_small_checkpoint,
)


def _train_a_step(network: SamSegmenter, size: int = 64) -> None:
    network.train()
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        x = torch.randn(2, network.input_channels, size, size)
        y = torch.randint(0, network.num_classes, (2, size, size))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(network(x), y).backward()
        optimizer.step()
    network.eval()


def _predict(network: SamSegmenter, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return network.eval()(x)


@pytest.mark.parametrize(
    "name", ["test_vit_encdec_lora", "test_vit_dec_adapter", "test_tiny_vit_encdec_vanilla", "test_tiny_vit_encdec_adapter"]
)
def test_small_checkpoint_reproduces_outputs_exactly(name: str, base_checkpoint, tmp_path: Path) -> None:
    setup = Setup.parse(name)
    base_path, _ = base_checkpoint(setup.backbone, 64, 3)
    network, base = build_network(setup, 64, 3, 1, base_checkpoint=base_path)
    _train_a_step(network)
    save_small_checkpoint(network, base, tmp_path / "fold.pth")

    fresh, fresh_base = build_network(setup, 64, 3, 1, base_checkpoint=base_path)
    restore_small_state(fresh, read_small_checkpoint(tmp_path / "fold.pth"), fresh_base)
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(_predict(network, x), _predict(fresh, x))
    if setup.method != "vanilla":
        assert (tmp_path / "fold.pth").stat().st_size < base_path.stat().st_size / 2


def test_small_checkpoint_from_another_base_is_refused(base_checkpoint, tmp_path: Path) -> None:
    setup = Setup.parse("test_vit_encdec_lora")
    path_a, _ = base_checkpoint("test_vit", 64, 3, name="a.pth")
    network, base = build_network(setup, 64, 3, 1, base_checkpoint=path_a)
    save_small_checkpoint(network, base, tmp_path / "fold.pth")
    path_b, _ = base_checkpoint("test_vit", 64, 3, name="b.pth")
    other, other_base = build_network(setup, 64, 3, 1, base_checkpoint=path_b)
    with pytest.raises(CheckpointError, match="fine-tuned from a.pth"):
        restore_small_state(other, read_small_checkpoint(tmp_path / "fold.pth"), other_base)


def test_small_checkpoint_of_another_setup_is_refused(base_checkpoint, tmp_path: Path) -> None:
    path, _ = base_checkpoint("test_vit", 64, 3)
    network, base = build_network(Setup.parse("test_vit_encdec_lora"), 64, 3, 1, base_checkpoint=path)
    save_small_checkpoint(network, base, tmp_path / "fold.pth")
    other, _ = build_network(Setup.parse("test_vit_dec_lora"), 64, 3, 1, base_checkpoint=path)
    with pytest.raises(CheckpointError, match="set-up test_vit_encdec_lora"):
        restore_small_state(other, read_small_checkpoint(tmp_path / "fold.pth"), base)


def test_truncated_small_checkpoint_is_refused(base_checkpoint, tmp_path: Path) -> None:
    network, base = build_network(Setup.parse("test_vit_dec_lora"), 64, 3, 1)
    save_small_checkpoint(network, base, tmp_path / "fold.pth")
    data = (tmp_path / "fold.pth").read_bytes()
    (tmp_path / "fold.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        read_small_checkpoint(tmp_path / "fold.pth")


def test_from_scratch_keeps_every_weight(tmp_path: Path) -> None:
    network, base = build_network(Setup.parse("test_vit_encdec_lora"), 64, 3, 1)
    save_small_checkpoint(network, base, tmp_path / "fold.pth")
    torch.manual_seed(123)  # a different random base
    fresh, fresh_base = build_network(Setup.parse("test_vit_encdec_lora"), 64, 3, 1)
    restore_small_state(fresh, read_small_checkpoint(tmp_path / "fold.pth"), fresh_base)
    x = torch.randn(1, 1, 64, 64)
    assert torch.equal(_predict(network, x), _predict(fresh, x))


@pytest.mark.parametrize("name", ["test_vit_encdec_lora", "test_tiny_vit_encdec_lora", "test_vit_encdec_vanilla"])
def test_merged_export_matches_and_loads_into_stock_classes(name: str, tmp_path: Path) -> None:
    setup = Setup.parse(name)
    network, _ = build_network(setup, 64, 3, 1)
    _train_a_step(network)
    x = torch.randn(2, 1, 64, 64)
    expected = _predict(network, x)
    export_merged(network, tmp_path / "merged.pth")

    stock = build_sam(setup.backbone, 64, 3)  # segment-anything's own classes, nothing applied
    stock.load_state_dict(torch.load(tmp_path / "merged.pth", weights_only=True), strict=True)
    assert torch.allclose(_predict(SamSegmenter(stock, 1), x), expected, atol=1e-5)


def test_adapter_export_is_refused() -> None:
    network, _ = build_network(Setup.parse("test_vit_encdec_adapter"), 64, 3, 1)
    with pytest.raises(CheckpointError, match="adapters"):
        merged_sam_state(network)


@pytest.mark.slow
def test_merged_vit_b_loads_with_segment_anythings_registry(tmp_path: Path) -> None:
    network, _ = build_network(Setup.parse("vit_b_encdec_lora"), 1024, 4, 3)
    for name, param in network.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.01)  # a non-trivial LoRA update
    export_merged(network, tmp_path / "sam_merged.pth")
    stock = sam_model_registry["vit_b"](checkpoint=str(tmp_path / "sam_merged.pth"))
    tokens = torch.randn(1, 28, 28, 768)  # one block of the encoder, compared on its own
    with torch.no_grad():
        assert torch.allclose(stock.image_encoder.blocks[0](tokens), network.sam.image_encoder.blocks[0](tokens), atol=1e-5)
        assert not torch.allclose(stock.image_encoder.blocks[0].attn.qkv.weight,
                                  network.sam.image_encoder.blocks[0].attn.qkv.base_layer.weight)


def test_lazy_loaders_refuse_a_swapped_base_file(base_checkpoint, tmp_path: Path) -> None:
    """nnU-Net's predictor only calls load_state_dict: the fine-tuned tensors must carry their base's sha256."""
    from autosam.sam.small_checkpoint import trainable_state
    from autosam.sam.setups import apply_setup
    from autosam.sam_plan import BaseCheckpoint, BaseLoader

    setup = Setup.parse("test_vit_encdec_lora")
    original, _ = base_checkpoint("test_vit", 64, 3, name="original.pth")
    swapped, _ = base_checkpoint("test_vit", 64, 3, name="swapped.pth")  # same layout, other weights

    def lazy_network(path: Path) -> SamSegmenter:
        network = SamSegmenter(build_sam("test_vit", 64, 3), 1)
        apply_setup(network, setup)
        network.base_loader = BaseLoader(BaseCheckpoint(path.name, path.name, str(path), None), "test_vit")
        return network

    trained = lazy_network(original)
    trained.ensure_base_loaded()
    _train_a_step(trained)
    state = trainable_state(trained)
    assert state["base_sha256"].any()

    restored = lazy_network(original)
    restored.load_state_dict(state)
    x = torch.randn(1, 1, 64, 64)
    assert torch.equal(_predict(trained, x), _predict(restored, x))
    with pytest.raises(CheckpointError, match="trained on base weights with sha256"):
        lazy_network(swapped).load_state_dict(state)

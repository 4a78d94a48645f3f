"""Fold checkpoints: the fine-tuned tensors alone rebuild the network exactly, and the one identity check
refuses weights that belong to another set-up, size, class count, start or base file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autosam.errors import CheckpointError
from autosam.sam.model import build_network
from autosam.sam.network import SamSegmenter
from autosam.sam.setups import Setup
from autosam.sam.weights.base import BaseCheckpoint
from autosam.sam.weights.fold_checkpoint import check_identity, fine_tuned_weights, identity_of
from autosam.sam.weights.safe_load import load_fold_checkpoint
from tests.conftest import predict, train_a_step


def _trained(setup: str, base: Path | None, size: int = 64) -> SamSegmenter:
    network = build_network(Setup.parse(setup), size, 3, 1, base=base and BaseCheckpoint.of_file(base))
    network.ensure_base_loaded()
    train_a_step(network, size)
    return network


@pytest.mark.parametrize(
    "name", ["test_vit_encdec_lora", "test_vit_dec_adapter", "test_tiny_vit_encdec_vanilla", "test_tiny_vit_encdec_adapter"]
)
def test_fine_tuned_tensors_rebuild_the_network_exactly(name: str, base_checkpoint, tmp_path: Path) -> None:
    path, _ = base_checkpoint(name.rsplit("_", 2)[0], 64, 3)
    network = _trained(name, path)
    weights = fine_tuned_weights(network)
    assert len(weights) < len(network.state_dict())  # the frozen base is not stored
    torch.save({"network_weights": weights, "autosam": identity_of(network, "nnUNetPlans_2d")}, tmp_path / "fold.pth")

    # as nnU-Net's predictor does it: build, then load_state_dict (the base loads on the way)
    fresh = build_network(Setup.parse(name), 64, 3, 1, base=BaseCheckpoint.of_file(path))
    fresh.load_state_dict(load_fold_checkpoint(tmp_path / "fold.pth")["network_weights"])
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(predict(network, x), predict(fresh, x))


def test_from_scratch_keeps_every_weight() -> None:
    network = _trained("test_vit_encdec_lora", None)
    torch.manual_seed(123)  # another random start
    fresh = build_network(Setup.parse("test_vit_encdec_lora"), 64, 3, 1)
    fresh.load_state_dict(fine_tuned_weights(network))
    x = torch.randn(1, 1, 64, 64)
    assert torch.equal(predict(network, x), predict(fresh, x))


def test_a_swapped_base_file_is_refused_on_load(base_checkpoint) -> None:
    """nnU-Net's predictor only calls load_state_dict: the fine-tuned tensors carry their base's sha256."""
    original, _ = base_checkpoint("test_vit", 64, 3, name="original.pth")
    swapped, _ = base_checkpoint("test_vit", 64, 3, name="swapped.pth")  # same layout, other weights
    weights = fine_tuned_weights(_trained("test_vit_encdec_lora", original))
    other = build_network(Setup.parse("test_vit_encdec_lora"), 64, 3, 1, base=BaseCheckpoint.of_file(swapped))
    with pytest.raises(CheckpointError, match="base weights given are swapped.pth"):
        other.load_state_dict(weights)


def _identity(base: Path | None, setup: str = "test_vit_encdec_lora", size: int = 64, classes: int = 3,
              data: str = "autosamPlans_2d_sam_64px") -> dict:
    network = build_network(Setup.parse(setup), size, classes, 1, base=base and BaseCheckpoint.of_file(base))
    network.ensure_base_loaded()
    return identity_of(network, data)


@pytest.mark.parametrize("change, phrase", [
    (dict(setup="test_vit_dec_lora"), "trained with set-up test_vit_encdec_lora"),
    (dict(size=128), "trained with image size 64, but the plan now gives 128"),
    (dict(data="nnUNetPlans_2d"), "trained with preprocessed data \\(spacing and patch\\) autosamPlans_2d_sam_64px"),
    (dict(classes=4), "trained with class count 3"),
    (dict(base=None), "trained from pretrained weights, but this run is from scratch"),
    (dict(base="other.pth"), "fine-tuned from base.pth"),
])
def test_identity_check_names_what_differs(base_checkpoint, change: dict, phrase: str) -> None:
    base, _ = base_checkpoint("test_vit", 64, 3, name="base.pth")
    if change.get("base"):
        change["base"], _ = base_checkpoint("test_vit", 64, 3, name=change["base"])
    saved = _identity(base)
    check_identity(saved, _identity(base), "fold.pth")  # the same network passes
    with pytest.raises(CheckpointError, match=phrase):
        check_identity(saved, _identity(**{"base": base, **change}), "fold.pth")


def test_identity_check_refuses_foreign_and_old_checkpoints() -> None:
    expected = _identity(None)
    with pytest.raises(CheckpointError, match="not written by an autosam trainer"):
        check_identity(None, expected, "fold.pth")
    with pytest.raises(CheckpointError, match="format version 1 is not"):
        check_identity({**expected, "format_version": 1}, expected, "fold.pth")


def test_truncated_fold_checkpoint_is_refused(tmp_path: Path) -> None:
    network = _trained("test_vit_dec_lora", None)
    torch.save({"network_weights": fine_tuned_weights(network)}, tmp_path / "fold.pth")
    data = (tmp_path / "fold.pth").read_bytes()
    (tmp_path / "fold.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_fold_checkpoint(tmp_path / "fold.pth")

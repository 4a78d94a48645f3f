"""One call from a set-up to a ready network: build, load the base weights, apply the set-up."""

from __future__ import annotations

from pathlib import Path

from autosam.sam.checkpoints import FROM_SCRATCH, BaseIdentity, load_base_checkpoint
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam
from autosam.sam.setups import Setup, apply_setup


def build_network(
    setup: Setup,
    image_size: int,
    num_classes: int,
    input_channels: int,
    normalisation: str = "imagenet",
    base_checkpoint: Path | None = None,
    verify_checkpoint: bool = True,
) -> tuple[SamSegmenter, BaseIdentity]:
    """``base_checkpoint=None`` means random initialisation (training from scratch)."""
    sam = build_sam(setup.backbone, image_size, num_classes)
    identity = FROM_SCRATCH
    if base_checkpoint is not None:
        identity = load_base_checkpoint(sam, setup.backbone, base_checkpoint, verify=verify_checkpoint)
    network = SamSegmenter(sam, input_channels, normalisation)
    apply_setup(network, setup)
    return network, identity

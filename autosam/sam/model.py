"""The one way a SAM network is built, for training, prediction, export, tests and benchmarks."""

from __future__ import annotations

from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam, build_sam_on_meta
from autosam.sam.setups import Setup, apply_setup
from autosam.sam.weights.base import BaseCheckpoint, BaseLoader


def build_network(
    setup: Setup,
    image_size: int,
    num_classes: int,
    input_channels: int,
    normalisation: str = "imagenet",
    base: BaseCheckpoint | None = None,
    gradient_checkpointing: bool = False,
    on_meta: bool = False,
) -> SamSegmenter:
    """segment-anything's classes -> promptless network -> set-up applied -> base weights attached.

    The base weights load on first need (``network.ensure_base_loaded()``; training, ``load_state_dict``), so
    nnU-Net can build the network for a fold whose fine-tuned tensors it then loads on top. ``base=None``
    means random initialisation (training from scratch). ``on_meta``: no storage, for counting parameters,
    FLOPs and memory of any backbone on any machine.
    """
    sam = (build_sam_on_meta if on_meta else build_sam)(setup.backbone, image_size, num_classes)
    network = SamSegmenter(sam, input_channels, normalisation)
    apply_setup(network, setup)
    if gradient_checkpointing:
        network.enable_gradient_checkpointing()
    if base is not None:
        network.base_loader = BaseLoader(base, setup.backbone)
    return network

"""Parameter counts and forward FLOPs of set-ups, computed on the meta device (no weights, no memory)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from autosam.sam.model import build_network
from autosam.sam.network import SamSegmenter
from autosam.sam.setups import Setup


def meta_network(setup: Setup, image_size: int, num_classes: int, input_channels: int = 1) -> SamSegmenter:
    return build_network(setup, image_size, num_classes, input_channels, on_meta=True)


def forward_flops(network: SamSegmenter, batch: int = 1) -> int:
    """FLOPs (2 per multiply-add) of one forward pass at the network's own image size."""
    x = torch.empty(batch, network.input_channels, network.image_size, network.image_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(x)
    return counter.get_total_flops()


def setup_costs(setup: Setup, image_size: int, num_classes: int) -> dict:
    """The row ``autosam setups`` prints for one set-up."""
    network = meta_network(setup, image_size, num_classes)
    params = list(network.parameters())
    return {
        "name": setup.name,
        "backbone": setup.backbone,
        "scope": setup.scope,
        "method": setup.method,
        "image_size": image_size,
        "num_classes": num_classes,
        "total_params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "gflops": round(forward_flops(network) / 1e9, 2),
    }

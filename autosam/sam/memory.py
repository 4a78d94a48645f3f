"""Measured activation memory: bytes autograd saves for backward in one training forward.

The forward runs on the meta device (no storage, any model size on any machine) with the same
``no_grad`` placement as real training; every tensor autograd saves is counted once per storage,
parameters and buffers excluded. This equals the real CPU measurement (checked to 0.1 MiB).
"""

from __future__ import annotations

import torch
from torch import nn


def saved_activation_bytes(network: nn.Module, batch: int, image_size: int, input_channels: int) -> int:
    """Bytes saved for backward by one forward of ``network`` (on meta or a real device) in train mode."""
    device = next(network.parameters()).device
    own = {p.untyped_storage()._cdata for p in network.parameters()}
    own |= {b.untyped_storage()._cdata for b in network.buffers()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in own:
            seen[storage._cdata] = storage.nbytes()
        return tensor

    x = torch.zeros(batch, input_channels, image_size, image_size, device=device)
    was_training = network.training
    network.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        network(x)
    network.train(was_training)
    return sum(seen.values())

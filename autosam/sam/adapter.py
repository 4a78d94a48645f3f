"""Bottleneck adapters attached to SAM without changing its modules or their state-dict keys.

An adapter (dim -> dim/4 -> dim, GELU, residual) is registered as a child of the block it serves and
applied to a sub-module's output through a forward hook, so the base weights keep their official names
and an adapted model still loads an official checkpoint. The hook is the adapter's own bound method, so a
deep copy of the model calls its own adapters and the model pickles. The up-projection starts at zero: an adapted
model computes exactly the base model's function until training moves it.
"""

from __future__ import annotations

import torch
from torch import nn

BOTTLENECK_RATIO = 0.25


class Adapter(nn.Module):
    def __init__(self, dim: int, ratio: float = BOTTLENECK_RATIO) -> None:
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))

    def adapt_output(self, _module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
        """Forward hook of the adapted sub-module."""
        return self(output)


def attach_adapter(owner: nn.Module, name: str, target: nn.Module, dim: int) -> Adapter:
    """Register ``owner.<name>`` = Adapter(dim) and apply it to every output of ``target``."""
    reference = next(target.parameters())  # same device/dtype as the block (meta included)
    adapter = Adapter(dim).to(device=reference.device, dtype=reference.dtype)
    owner.add_module(name, adapter)
    target.register_forward_hook(adapter.adapt_output)
    return adapter


def encoder_attention_blocks(image_encoder: nn.Module) -> list[nn.Module]:
    """Transformer blocks of a SAM ViT, of SAM 2.1's Hiera or of TinyViT's attention stages (its first stage is
    convolutional)."""
    if hasattr(image_encoder, "trunk"):  # SAM 2.1: Hiera trunk + FPN neck
        return list(image_encoder.trunk.blocks)
    if hasattr(image_encoder, "blocks"):
        return list(image_encoder.blocks)
    return [block for layer in image_encoder.layers[1:] for block in layer.blocks]


def add_encoder_adapters(image_encoder: nn.Module) -> list[Adapter]:
    """One adapter per block, on the attention output before the residual add."""
    return [
        attach_adapter(block, "adapter", block.attn, block.attn.proj.out_features)
        for block in encoder_attention_blocks(image_encoder)
    ]


def add_decoder_adapters(mask_decoder: nn.Module) -> list[Adapter]:
    """Two adapters per two-way block: on the token stream and on the image stream after cross-attention."""
    adapters = []
    for layer in mask_decoder.transformer.layers:
        dim = layer.norm2.normalized_shape[0]
        adapters.append(attach_adapter(layer, "adapter_tokens", layer.cross_attn_token_to_image, dim))
        adapters.append(attach_adapter(layer, "adapter_image", layer.cross_attn_image_to_token, dim))
    return adapters

"""MobileSAM's TinyViT image encoder at any input size.

The encoder class is MobileSAM's own (``mobile_sam`` on PyPI as ``mobilesam-mirror``), so the state-dict
keys are those of the official ``mobile_sam.pt``. Its ``forward_features`` reshapes the tokens to a fixed
64 x 64 grid (the 1024 px case); this subclass uses the real grid, ``img_size / 16`` per side.
"""

from __future__ import annotations

import warnings

import torch

with warnings.catch_warnings():
    # mobile_sam imports timm through deprecated paths and re-registers timm's TinyViT names.
    warnings.simplefilter("ignore")
    from mobile_sam.modeling.tiny_vit_sam import TinyViT


class TinyViTAnySize(TinyViT):
    """TinyViT whose output grid follows the input size (parameters do not depend on it).

    Its convolutions run channels-last (``registry`` stores their weights so, the input is made so here): the
    blocks' local convolutions already get channels-last views of the tokens, and the patch embedding, the
    first stage's MBConvs and the neck follow (``benchmarks/cpu_step_options.py`` measures it)."""

    channels_last = True

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        batch, tokens, channels = x.shape
        side = int(round(tokens**0.5))
        x = x.view(batch, side, side, channels).permute(0, 3, 1, 2)
        return self.neck(x)

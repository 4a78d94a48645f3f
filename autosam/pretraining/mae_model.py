"""Masked-autoencoder pretraining of SAM's image encoder (MAE's objective on SAM's own encoder classes).

What is masked: 16-px patches, the cells of the encoder's output token grid (``image_size / 16`` per side),
exactly ``round(mask_ratio * cells)`` of them per image, drawn uniformly. SAM's windowed and global attention
need the whole grid, so masked patches are not dropped as in MAE: their embeddings are replaced by one learned
mask token (as SimMIM does for windowed encoders).

- ViT (ImageEncoderViT): the patch embedding is the 16-px grid; a masked patch's token becomes the mask token
  before the positional embedding is added.
- TinyViT (MobileSAM) and Hiera (SAM 2.1): the patch embedding is a 4-px grid (TinyViT: two stride-2
  convolutions; Hiera: one 7 x 7 stride-4 convolution); every 4 x 4 block of cells under a masked 16-px patch
  becomes the mask token, so the masked fraction of the patch-embedding grid equals that of the 16-px grid. The
  stems' overlapping convolutions would see a few pixels into a masked patch from its visible neighbours, so
  masked pixels are also zeroed in the input (for every encoder).

A light decoder (two 1 x 1 convolutions on the encoder's stride-16 output: SAM's neck, SAM 2.1's FPN level the
mask decoder reads) predicts each patch's pixels,
normalised per patch (MAE's ``norm_pix_loss``); the loss is the mean squared error on masked patches only.
The decoder and the mask token are discarded after pretraining: only the encoder's weights are kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, Sam
from torch import nn

from autosam.sam.registry import PATCH_SIZE

STEM_STRIDE = 4  # TinyViT's patch embedding (two stride-2 convolutions) and Hiera's (one stride-4 convolution)
DECODER_WIDTH = 512


def random_patch_mask(batch: int, grid: int, mask_ratio: float, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch, grid, grid) booleans, True = masked; exactly ``round(mask_ratio * grid**2)`` per image."""
    cells = grid * grid
    masked = round(mask_ratio * cells)
    order = torch.rand(batch, cells, generator=generator, device=device).argsort(dim=1)
    mask = torch.zeros(batch, cells, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :masked], True)
    return mask.view(batch, grid, grid)


def patchify(images: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) -> (B, (S/16)^2, 16*16*C), patches in row-major grid order."""
    batch, channels, size, _ = images.shape
    grid = size // PATCH_SIZE
    patches = images.reshape(batch, channels, grid, PATCH_SIZE, grid, PATCH_SIZE)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, grid * grid, PATCH_SIZE * PATCH_SIZE * channels)


def normalised_patches(images: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch's pixels minus its mean, over its standard deviation (MAE's per-patch target)."""
    patches = patchify(images)
    mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


class MaskedAutoencoder(nn.Module):
    """SAM's image encoder + a mask token + a light pixel decoder; ``forward`` returns the masked-patch loss."""

    def __init__(self, sam: Sam, mask_ratio: float = 0.75, in_chans: int = 3) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be between 0 and 1 (exclusive), got {mask_ratio}")
        self.encoder = sam.image_encoder
        self.mask_ratio = mask_ratio
        self.is_hiera = hasattr(self.encoder, "trunk")  # SAM 2.1: Hiera trunk + FPN neck
        self.is_vit = isinstance(self.encoder, ImageEncoderViT)
        self.patch_embed = self.encoder.trunk.patch_embed if self.is_hiera else self.encoder.patch_embed
        if self.is_vit or self.is_hiera:
            embed_dim = self.patch_embed.proj.out_channels
        else:
            embed_dim = self.patch_embed.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        neck_channels = (self.encoder.neck.d_model if self.is_hiera else
                         next(m.out_channels for m in reversed(list(self.encoder.neck)) if isinstance(m, nn.Conv2d)))
        self.decoder = nn.Sequential(
            nn.Conv2d(neck_channels, DECODER_WIDTH, 1), nn.GELU(),
            nn.Conv2d(DECODER_WIDTH, PATCH_SIZE * PATCH_SIZE * in_chans, 1),
        )

    def _mask_embedding(self, mask: torch.Tensor):
        """A forward hook on the patch embedding that puts the mask token in every masked cell."""
        def hook(_module, _inputs, tokens: torch.Tensor) -> torch.Tensor:
            token = self.mask_token.to(tokens.dtype)
            if self.is_vit:  # (B, H/16, W/16, C)
                return torch.where(mask[..., None], token, tokens)
            cells = mask.repeat_interleave(PATCH_SIZE // STEM_STRIDE, 1).repeat_interleave(
                PATCH_SIZE // STEM_STRIDE, 2)  # (B, H/4, W/4)
            if self.is_hiera:  # (B, H/4, W/4, C)
                return torch.where(cells[..., None], token, tokens)
            return torch.where(cells[:, None], token[None, :, None, None], tokens)
        return hook

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images (B, 3, S, S) as the encoder sees them -> (loss, predicted patches, mask (B, S/16, S/16))."""
        batch, _, size, _ = images.shape
        grid = size // PATCH_SIZE
        if mask is None:
            mask = random_patch_mask(batch, grid, self.mask_ratio, generator, images.device)
        pixels = mask.repeat_interleave(PATCH_SIZE, 1).repeat_interleave(PATCH_SIZE, 2)
        handle = self.patch_embed.register_forward_hook(self._mask_embedding(mask))
        try:
            features = self.encoder(images.masked_fill(pixels[:, None], 0.0))
        finally:
            handle.remove()
        if self.is_hiera:
            features = features["vision_features"]  # the stride-16 level
        predicted = self.decoder(features).flatten(2).transpose(1, 2)  # (B, grid^2, 16*16*C)
        per_patch = F.mse_loss(predicted.float(), normalised_patches(images.float()), reduction="none").mean(-1)
        flat = mask.flatten(1).float()
        return (per_patch * flat).sum() / flat.sum(), predicted, mask

"""Backbone registry: SAM built from segment-anything's own classes at any supported image size.

``build_sam(backbone, image_size, num_classes)`` returns a ``segment_anything.modeling.Sam`` whose
state-dict keys are the official ones (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), so
official SAM / MobileSAM / MedSAM checkpoints load into it (see ``weights/base.py``). The mask decoder gets
one mask token per class (background included): ``num_multimask_outputs = num_classes - 1``, and
``network.py`` reads all tokens through ``MaskDecoder.predict_masks``. With 4 classes the decoder has
exactly the official shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from autosam.errors import AutosamError, did_you_mean
from autosam.sam.attention import use_fused_attention
from autosam.sam.tiny_vit import TinyViTAnySize

PATCH_SIZE = 16  # SAM's patch size; the image embedding is image_size / 16 per side.
IMAGE_SIZE_STEP = 64


@dataclass(frozen=True)
class DecoderConfig:
    """Prompt encoder + mask decoder hyper-parameters (SAM's are the same for every backbone)."""

    embed_dim: int = 256
    mlp_dim: int = 2048
    num_heads: int = 8
    iou_head_hidden_dim: int = 256


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14


@dataclass(frozen=True)
class TinyViTConfig:
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_sizes: tuple[int, ...]


@dataclass(frozen=True)
class Backbone:
    """One registered image encoder; ``checkpoint`` names its catalogue entry (``weights/catalogue.py``)."""

    name: str
    encoder: ViTConfig | TinyViTConfig
    description: str
    checkpoint: str | None
    decoder: DecoderConfig = DecoderConfig()
    min_image_size: int = 256
    max_image_size: int = 1024
    native_image_size: int = 1024  # size the official weights were trained at

    @property
    def is_tiny_vit(self) -> bool:
        return isinstance(self.encoder, TinyViTConfig)

    @property
    def encoder_blocks(self) -> int:
        enc = self.encoder
        return sum(enc.depths[1:]) if isinstance(enc, TinyViTConfig) else enc.depth


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "vit_t",
            TinyViTConfig((64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7)),
            "MobileSAM TinyViT (distilled from ViT-H)",
            "mobile_sam",
        ),
        Backbone("vit_b", ViTConfig(768, 12, 12, (2, 5, 8, 11)), "SAM ViT-B", "sam_vit_b"),
        Backbone("vit_l", ViTConfig(1024, 24, 16, (5, 11, 17, 23)), "SAM ViT-L", "sam_vit_l"),
        Backbone("vit_h", ViTConfig(1280, 32, 16, (7, 15, 23, 31)), "SAM ViT-H", "sam_vit_h"),
    )
}

#: The backbones of the study's 18 set-ups.
STUDY_BACKBONES = ("vit_t", "vit_b", "vit_h")


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise AutosamError(f"unknown backbone '{name}'{did_you_mean(name, BACKBONES)}; choose one of "
                           f"{', '.join(BACKBONES)}") from None


def check_image_size(backbone: Backbone, image_size: int) -> None:
    lo, hi = backbone.min_image_size, backbone.max_image_size
    if image_size % IMAGE_SIZE_STEP or not lo <= image_size <= hi:
        raise AutosamError(
            f"image size {image_size} is not supported by {backbone.name}: "
            f"use a multiple of {IMAGE_SIZE_STEP} from {lo} to {hi}"
        )


def _build_encoder(backbone: Backbone, image_size: int) -> nn.Module:
    enc, out_chans = backbone.encoder, backbone.decoder.embed_dim
    if isinstance(enc, ViTConfig):
        return ImageEncoderViT(
            depth=enc.depth,
            embed_dim=enc.embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=enc.num_heads,
            patch_size=PATCH_SIZE,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=enc.global_attn_indexes,
            window_size=enc.window_size,
            out_chans=out_chans,
        )

    tiny = TinyViTAnySize(
        img_size=image_size,
        in_chans=3,
        num_classes=1000,
        embed_dims=list(enc.embed_dims),
        depths=list(enc.depths),
        num_heads=list(enc.num_heads),
        window_sizes=list(enc.window_sizes),
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    # MobileSAM hard-codes the last stage at 320 channels (stride-1 merge) and the neck at 256.
    if out_chans != 256:  # a registered backbone may pair TinyViT with a narrower decoder
        tiny.neck[2] = nn.Conv2d(256, out_chans, 3, padding=1, bias=False)
        tiny.neck[3] = type(tiny.neck[3])(out_chans)
    return tiny


def build_sam(backbone: str, image_size: int = 1024, num_classes: int = 4) -> Sam:
    """Build SAM with random weights; ``num_classes`` logit maps come out of the mask decoder. Its attentions are
    the fused subclasses of ``attention.py`` (same parameters and keys as the official classes)."""
    spec = get_backbone(backbone)
    check_image_size(spec, image_size)
    if num_classes < 1:
        raise AutosamError(f"num_classes must be at least 1, got {num_classes}")
    dec = spec.decoder
    grid = image_size // PATCH_SIZE
    sam = Sam(
        image_encoder=_build_encoder(spec, image_size),
        prompt_encoder=PromptEncoder(
            embed_dim=dec.embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=num_classes - 1,
            transformer=TwoWayTransformer(depth=2, embedding_dim=dec.embed_dim, mlp_dim=dec.mlp_dim, num_heads=dec.num_heads),
            transformer_dim=dec.embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=dec.iou_head_hidden_dim,
        ),
    )
    return use_fused_attention(sam)


def build_sam_on_meta(backbone: str, image_size: int = 1024, num_classes: int = 4) -> Sam:
    """The same model with no storage, for counting parameters, FLOPs and memory on any machine."""
    if get_backbone(backbone).is_tiny_vit:
        # TinyViT's constructor calls .item(), which meta tensors cannot do; it is small enough for the CPU.
        return build_sam(backbone, image_size, num_classes).to("meta")
    with torch.device("meta"):
        return build_sam(backbone, image_size, num_classes)

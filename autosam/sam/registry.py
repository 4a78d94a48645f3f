"""Backbone registry: SAM built from its families' own classes at any supported image size.

Two families: segment-anything's ``Sam`` with a ViT (SAM, MedSAM) or MobileSAM's TinyViT, and SAM 2.1's
``SAM2Base`` with a Hiera encoder, built from the sam2 package's own configuration files. ``build_sam(backbone,
image_size, num_classes)`` returns the family's model class with autosam's image-mode methods
(``image_models.py``) and the official state-dict keys, so official checkpoints load into it (see
``weights/base.py``). The mask decoder gets one mask token per class (background included):
``num_multimask_outputs = num_classes - 1``; with 4 classes it has exactly the official shapes.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from functools import partial

import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import OmegaConf
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from autosam.errors import AutosamError, did_you_mean
from autosam.sam.attention import use_fused_attention
from autosam.sam.image_models import SamImage
from autosam.sam.tiny_vit import TinyViTAnySize

PATCH_SIZE = 16  # the stride of the embedding the mask decoder reads: image_size / 16 per side, in both families
IMAGE_SIZE_STEP = 64  # SAM's sizes; SAM 2.1's are multiples of 32 (Hiera's total stride)


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
class HieraConfig:
    """A SAM 2.1 model: its official configuration file in the sam2 package, plus Hydra overrides (the test-size
    models). ``embed_dim`` and ``blocks`` identify its checkpoints."""

    config: str
    embed_dim: int
    blocks: int
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Backbone:
    """One registered image encoder; ``checkpoint`` names its catalogue entry (``weights/catalogue.py``)."""

    name: str
    encoder: ViTConfig | TinyViTConfig | HieraConfig
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
    def family(self) -> str:
        """"sam2" (SAM 2.1, Hiera) or "sam" (segment-anything's ViT, MobileSAM's TinyViT)."""
        return "sam2" if isinstance(self.encoder, HieraConfig) else "sam"

    @property
    def image_size_step(self) -> int:
        return 32 if self.family == "sam2" else IMAGE_SIZE_STEP

    @property
    def encoder_blocks(self) -> int:
        enc = self.encoder
        if isinstance(enc, HieraConfig):
            return enc.blocks
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
        Backbone("sam2_t", HieraConfig("configs/sam2.1/sam2.1_hiera_t.yaml", 96, 12), "SAM 2.1 Hiera-T",
                 "sam2.1_hiera_tiny"),
        Backbone("sam2_s", HieraConfig("configs/sam2.1/sam2.1_hiera_s.yaml", 96, 16), "SAM 2.1 Hiera-S",
                 "sam2.1_hiera_small"),
        Backbone("sam2_bplus", HieraConfig("configs/sam2.1/sam2.1_hiera_b+.yaml", 112, 24), "SAM 2.1 Hiera-B+",
                 "sam2.1_hiera_base_plus"),
        Backbone("sam2_l", HieraConfig("configs/sam2.1/sam2.1_hiera_l.yaml", 144, 48), "SAM 2.1 Hiera-L",
                 "sam2.1_hiera_large"),
    )
}

#: The backbones of the study's 18 set-ups.
STUDY_BACKBONES = ("vit_t", "vit_b", "vit_h")
#: The backbones each family plans and ablates from: the study's three, and SAM 2.1's sizes nearest them
#: (Hiera-S is registered for --setup and --checkpoint).
FAMILY_BACKBONES = {"sam": STUDY_BACKBONES, "sam2": ("sam2_t", "sam2_bplus", "sam2_l")}


def family_backbones(family: str) -> tuple[str, ...]:
    """The backbones of ``family`` ("sam", "sam2", or "all": both, SAM's first)."""
    return tuple(b for f in (FAMILY_BACKBONES if family == "all" else (family,)) for b in FAMILY_BACKBONES[f])


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise AutosamError(f"unknown backbone '{name}'{did_you_mean(name, BACKBONES)}; choose one of "
                           f"{', '.join(BACKBONES)}") from None


def check_image_size(backbone: Backbone, image_size: int) -> None:
    lo, hi, step = backbone.min_image_size, backbone.max_image_size, backbone.image_size_step
    if image_size % step or not lo <= image_size <= hi:
        raise AutosamError(
            f"image size {image_size} is not supported by {backbone.name}: "
            f"use a multiple of {step} from {lo} to {hi}"
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
    return tiny.to(memory_format=torch.channels_last)  # its convolutions run channels-last (TinyViTAnySize)


def _build_sam2(config: HieraConfig, image_size: int, num_classes: int) -> nn.Module:
    """SAM 2.1 as the official builder makes it (its configuration file through Hydra), as ``Sam2Image``."""
    overrides = ["++model._target_=autosam.sam.image_models.Sam2Image", f"++model.image_size={image_size}",
                 f"++model.num_classes={num_classes}", *config.overrides]
    cfg = compose(config_name=config.config, overrides=overrides)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def build_sam(backbone: str, image_size: int = 1024, num_classes: int = 4) -> nn.Module:
    """Build SAM with random weights; ``num_classes`` logit maps come out of the mask decoder. SAM's attentions are
    the fused subclasses of ``attention.py`` (same parameters and keys as the official classes); SAM 2.1's
    already run through ``scaled_dot_product_attention``."""
    spec = get_backbone(backbone)
    check_image_size(spec, image_size)
    if num_classes < 1:
        raise AutosamError(f"num_classes must be at least 1, got {num_classes}")
    if isinstance(spec.encoder, HieraConfig):
        return _build_sam2(spec.encoder, image_size, num_classes)
    dec = spec.decoder
    grid = image_size // PATCH_SIZE
    sam = SamImage(
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


def build_sam_on_meta(backbone: str, image_size: int = 1024, num_classes: int = 4) -> nn.Module:
    """The same model with no storage, for counting parameters, FLOPs and memory on any machine (a copy of one
    built once per backbone, size and class count: the planner probes several set-ups of each)."""
    return copy.deepcopy(_meta_model(backbone, image_size, num_classes))


@functools.lru_cache(maxsize=16)
def _meta_model(backbone: str, image_size: int, num_classes: int) -> nn.Module:
    spec = get_backbone(backbone)
    if spec.is_tiny_vit or spec.family == "sam2":
        # TinyViT's and Hiera's constructors call .item(), which meta tensors cannot do: built on the CPU.
        return build_sam(backbone, image_size, num_classes).to("meta")
    with torch.device("meta"):
        return build_sam(backbone, image_size, num_classes)

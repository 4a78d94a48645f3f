"""The study's fine-tuning set-ups: backbone x update scope x method, and how to apply one.

Names are ``<backbone>_<scope>_<method>``: scope ``dec`` (mask decoder only) or ``encdec`` (image encoder +
mask decoder); method ``vanilla`` (every parameter of the scope trains), ``adapter`` (bottleneck adapters in
every block of the scope, base frozen) or ``lora`` (peft LoRA on the scope's attention projections, base
frozen). With adapter and LoRA the decoder's output head (mask/IoU tokens, upscaling, hypernetwork MLPs)
trains too, since its class tokens are new. Always frozen, because the promptless network never uses
them: the prompt encoder, the IoU prediction head and TinyViT's ImageNet classifier; for SAM 2.1 also its
object-score head and its video modules (memory attention and encoder, object pointers).

SAM 2.1's "image side" (``Sam2Image.ENCODER_SIDE``) is Hiera, its FPN neck, the mask decoder's projections of
the two finest feature levels (``conv_s0``/``conv_s1``, run once per image in SAM 2.1's own image mode) and the
no-memory embedding: they train with the encoder, so a decoder-only set-up can train on cached features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from autosam.errors import AutosamError, did_you_mean
from autosam.sam.adapter import add_decoder_adapters, add_encoder_adapters
from autosam.sam.lora import add_lora
from autosam.sam.registry import BACKBONES, STUDY_BACKBONES, get_backbone

SCOPES = ("dec", "encdec")
METHODS = ("vanilla", "adapter", "lora")
DEFAULT_LORA_RANK = 4  # the study's rank, with scale alpha / rank = 1
DECODER_HEAD = ("iou_token", "mask_tokens", "output_upscaling", "output_hypernetworks_mlps")


@dataclass(frozen=True)
class Setup:
    backbone: str
    scope: str
    method: str
    lora_rank: int = DEFAULT_LORA_RANK
    lora_alpha: float = float(DEFAULT_LORA_RANK)

    def __post_init__(self) -> None:
        get_backbone(self.backbone)
        if self.scope not in SCOPES or self.method not in METHODS:
            raise AutosamError(
                f"unknown set-up '{self.name}': scope is one of {'/'.join(SCOPES)}, method one of {'/'.join(METHODS)}"
            )
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise AutosamError(f"LoRA rank must be >= 1 and alpha > 0, got rank {self.lora_rank}, alpha {self.lora_alpha}")

    @property
    def name(self) -> str:
        return f"{self.backbone}_{self.scope}_{self.method}"

    @property
    def trains_encoder(self) -> bool:
        return self.scope == "encdec"

    @property
    def trains_whole_encoder(self) -> bool:
        """Every image-encoder weight updates (vanilla encoder + decoder)."""
        return self.method == "vanilla" and self.trains_encoder

    @classmethod
    def parse(cls, name: str, **options) -> "Setup":
        parts = name.rsplit("_", 2)
        if len(parts) != 3:
            raise AutosamError(
                f"unknown set-up '{name}': expected <backbone>_<scope>_<method>, e.g. vit_b_encdec_lora "
                "(list them with 'autosam setups')"
            )
        return cls(*parts, **options)

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Setup":
        return cls(data["backbone"], data["scope"], data["method"], int(data["lora_rank"]), float(data["lora_alpha"]))


def all_setups(backbones: tuple[str, ...] = STUDY_BACKBONES) -> list[Setup]:
    return [Setup(b, s, m) for b in backbones for s in SCOPES for m in METHODS]


def check_setup_name(name: str, flag: str = "--setup") -> None:
    """A set-up name given on the command line, checked before any work, with the closest name when mistyped."""
    try:
        Setup.parse(name)
    except AutosamError:
        known = [s.name for s in all_setups(tuple(BACKBONES))]
        raise AutosamError(f"{flag} {name}: no such set-up{did_you_mean(name, known)} (autosam setups lists the "
                           "study's 18)") from None


@dataclass(frozen=True)
class ParameterCount:
    total: int
    trainable: int


def count_parameters(model: nn.Module) -> ParameterCount:
    params = list(model.parameters())
    return ParameterCount(sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))


def apply_setup(network: nn.Module, setup: Setup) -> ParameterCount:
    """Insert the set-up's modules into a ``SamSegmenter`` and set what trains. Load base weights first:
    LoRA renames the wrapped Linear's keys (``qkv.weight`` -> ``qkv.base_layer.weight``)."""
    if getattr(network, "setup", None) is not None:
        raise RuntimeError(f"set-up {network.setup.name} was already applied to this network")
    sam = network.sam
    network.requires_grad_(False)
    if setup.method == "lora":
        add_lora(network, setup.lora_rank, setup.lora_alpha, encoder=setup.trains_encoder)  # LoRA weights train
    elif setup.method == "adapter":
        adapters = add_decoder_adapters(sam.mask_decoder)
        if setup.trains_encoder:
            adapters += add_encoder_adapters(sam.image_encoder)
        for adapter in adapters:
            adapter.requires_grad_(True)
    else:
        sam.mask_decoder.requires_grad_(True)
        for name, param in sam.named_parameters():  # the image side, SAM 2.1's decoder projections included
            if name.startswith(sam.ENCODER_SIDE):
                param.requires_grad_(setup.trains_encoder)
    for part in DECODER_HEAD:
        getattr(sam.mask_decoder, part).requires_grad_(True)
    if network.channel_mixer is not None and setup.trains_encoder:
        # its gradient flows through the image encoder, which a decoder-only set-up runs without autograd
        network.channel_mixer.requires_grad_(True)
    for name, param in sam.named_parameters():
        if name.startswith(sam.UNUSED):
            param.requires_grad_(False)
    network.setup = setup
    return count_parameters(network)

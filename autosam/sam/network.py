"""The promptless multi-class SAM network that nnU-Net trains and predicts with."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from functools import cache, partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from autosam.errors import CheckpointError
from autosam.sam.adapter import encoder_attention_blocks
from autosam.sam.image_models import Features, image_mode
from autosam.sam.prompts import ImagePrompts
from autosam.sam.weights.base import FROM_SCRATCH, check_base

NORMALISATIONS = ("imagenet", "minmax")


def bf16_native(device: torch.device) -> bool:
    """Hardware that computes bf16 natively: a CUDA GPU of compute capability 8 or later (older ones emulate
    it slowly), or a CPU with AVX512-BF16 or AMX (``cpu_bf16_native``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    return device.type == "cpu" and cpu_bf16_native()


def estimated_precision(precision: str, device_type: str) -> str:
    """The precision a training-memory estimate assumes for a plan's ``precision`` on ``device_type``: "bf16" on a
    CUDA GPU (which may not be this machine's: Ampere or later is assumed), and on a CPU if this one has native
    bf16 (``cpu_bf16_native``); else "fp32"."""
    return "bf16" if precision == "bf16" and (device_type == "cuda" or cpu_bf16_native()) else "fp32"


def bf16_hardware(device: torch.device) -> str:
    """What makes ``device`` compute bf16 natively, in words (for logs)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, compute capability {torch.cuda.get_device_capability(device)[0]}"
    found = cpu_bf16_features()
    return f"this CPU has {' and '.join(found)}" if found else "this CPU has no native bf16"


# torch's checks of this CPU's bf16 instructions, by the name of the instructions
_CPU_BF16_CHECKS = {"AVX512-BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}


@cache
def cpu_bf16_features() -> tuple[str, ...]:
    """This CPU's bf16 instructions (x86 AVX512-BF16, AMX). Elsewhere a CPU's bf16 is emulated by conversions
    around fp32 arithmetic, which gains nothing over fp32; other CPUs' bf16 support (e.g. ARM's BF16 extension)
    is not detected, so they train in fp32."""
    return tuple(name for name, check in _CPU_BF16_CHECKS.items() if getattr(torch.cpu, check, lambda: False)())


def cpu_bf16_native() -> bool:
    """This CPU computes bf16 natively (``cpu_bf16_features``)."""
    return bool(cpu_bf16_features())


class SamSegmenter(nn.Module):
    """nnU-Net patch (B, C, H, W) -> per-class logits (B, K, H, W), float32, with no prompts (or with boxes and
    points per class, ``forward``).

    Channels: C = 3 is used as is, C = 1 is repeated to 3, any other C goes through a learnable 1x1
    convolution to 3 channels that starts as the channel mean (trained when the encoder trains; a
    decoder-only set-up keeps the mean, since its frozen encoder runs without autograd).
    Intensities: nnU-Net's normalised data (z-score or CT normalisation: about zero mean, unit variance
    per channel) are already in the range SAM's own pixel normalisation produces, so with
    ``normalisation="imagenet"`` (SAM, MobileSAM and the SSL weights) they enter the encoder unchanged. With
    ``"minmax"`` (MedSAM) each image is min-max scaled to [0, 1], the range MedSAM was trained on.
    Size: the patch is resized (bilinear) to the square SAM input, and the decoder's S/4 logits are resized
    back to (H, W). Image encoder -> prompt encoder without prompts -> mask decoder with one mask token per
    class, all tokens read out (``MaskDecoder.predict_masks``). ``sam``: either family of ``image_models.py``.
    """

    def __init__(self, sam: nn.Module, input_channels: int, normalisation: str = "imagenet") -> None:
        super().__init__()
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        self.sam = image_mode(sam)
        self.input_channels = input_channels
        self.normalisation = normalisation
        self.image_size: int = sam.input_size
        self.num_classes: int = sam.mask_decoder.num_mask_tokens
        self.setup = None  # the applied fine-tuning set-up (setups.apply_setup)
        # "bf16": bf16 autocast on hardware with native bf16 (bf16_native; weights stay fp32); "fp32": none.
        # compute_dtype forces an autocast dtype on any device.
        self.precision = "fp32"
        self.compute_dtype: torch.dtype | None = None
        self.prompt_mode: str | None = None  # the plan's --prompts: how the fold was trained (None: promptless)
        self._prompts: Sequence[ImagePrompts] | None = None  # set by ``prompting``
        # Loads the frozen base weights on demand, so a state dict holding only the fine-tuned tensors
        # (small checkpoints) can be loaded by code that knows nothing about them, e.g. nnU-Net's predictor.
        self.base_loader: Callable[[SamSegmenter], object] | None = None  # e.g. weights.base.BaseLoader
        self.base_identity = None
        # sha256 of the base weights, saved with the fine-tuned tensors: any loader of them (resume, nnU-Net's
        # predictor, export) is refused a base file other than the one they were trained on. Zeros: unknown.
        self.register_buffer("base_sha256", torch.zeros(32, dtype=torch.uint8))
        self.channel_mixer: nn.Conv2d | None = None
        if input_channels not in (1, 3):
            device = next(sam.parameters()).device
            self.channel_mixer = nn.Conv2d(input_channels, 3, kernel_size=1, device=device)
            nn.init.constant_(self.channel_mixer.weight, 1.0 / input_channels)
            nn.init.zeros_(self.channel_mixer.bias)

    def _to_sam_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.input_channels:
            raise ValueError(f"expected {self.input_channels} input channels, got {x.shape[1]}")
        if self.channel_mixer is not None:
            x = self.channel_mixer(x)
        elif self.input_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.normalisation == "minmax":
            flat = x.flatten(1)
            lo, hi = flat.min(1)[0].view(-1, 1, 1, 1), flat.max(1)[0].view(-1, 1, 1, 1)
            x = (x - lo) / (hi - lo).clamp_min(1e-8)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x

    def encoder_is_trained(self) -> bool:
        return any(p.requires_grad for p in self.sam.image_encoder.parameters())

    def encode(self, x: torch.Tensor) -> Features:
        """Patch (B, C, H, W) -> image features: the embedding (B, D, S/16, S/16), then for SAM 2.1 its finer levels
        (``image_models.py``); a frozen encoder runs without gradients. Runs in the caller's precision
        (``forward`` and the embedding cache set it)."""
        x = self._to_sam_input(x)
        if self.encoder_is_trained():
            return self.sam.embed(x)
        with torch.no_grad():  # a frozen encoder keeps no activations for backward
            return self.sam.embed(x)

    def decode(self, features: Features, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Image features -> promptless per-class logits (B, K, S/4, S/4), or float32 logits resized to
        ``size`` as ``forward`` resizes them to the patch (training on cached embeddings calls this)."""
        sparse, dense = self.sam.prompt_encoder(points=None, boxes=None, masks=None)
        logits = self.sam.decode_features(features, sparse, dense)  # one decoder call per batch
        if size is None:
            return logits
        return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, prompts: Sequence[ImagePrompts] | None = None) -> torch.Tensor:
        """``prompts``: per image, class id -> ``autosam.sam.prompts.Prompt`` in the patch's pixel coordinates
        (None: the ones ``prompting`` set, else none). A prompted class's logits come from one decoder call
        with that prompt, read from its own mask token; every other class keeps the promptless logits."""
        prompts = self._prompts if prompts is None else prompts
        if prompts is not None and len(prompts) != x.shape[0]:
            raise ValueError(f"{len(prompts)} prompt sets for a batch of {x.shape[0]} images")
        with self._autocast(x.device):
            return self._forward(x, prompts)

    @contextlib.contextmanager
    def prompting(self, prompts: Sequence[ImagePrompts]):
        """Prompts for the forwards inside the block, for callers that call the network as ``network(x)``
        (nnU-Net's ``train_step``)."""
        self._prompts = prompts
        try:
            yield self
        finally:
            self._prompts = None

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The dtype this network's forwards autocast to on ``device``: ``compute_dtype`` if set, bf16 where the
        plan says bf16 and the hardware computes it natively, else None (no autocast of its own)."""
        if self.compute_dtype is not None:
            return self.compute_dtype
        if self.precision == "bf16" and bf16_native(device):
            return torch.bfloat16
        return None

    def _autocast(self, device: torch.device):
        """The precision of this forward, whatever autocast the caller runs (nnU-Net's is fp16 on CUDA)."""
        dtype = self.autocast_dtype(device)
        if dtype is not None:
            return torch.autocast(device.type, dtype=dtype)
        if device.type == "cuda" and self.precision == "fp32":
            return torch.autocast("cuda", enabled=False)
        return contextlib.nullcontext()

    def _forward(self, x: torch.Tensor, object_prompts: Sequence[ImagePrompts] | None = None) -> torch.Tensor:
        height, width = x.shape[-2:]
        features = self.encode(x)
        logits = self.decode(features)
        if object_prompts is not None:
            logits = self._prompted(logits, features, object_prompts, height, width)
        return F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)

    def _prompted(self, logits: torch.Tensor, features: Features, prompts: Sequence[ImagePrompts],
                  height: int, width: int) -> torch.Tensor:
        """``logits`` with each prompted class's channel replaced by the decoder's answer to its prompt.
        The prompt encoder takes coordinates in the SAM input frame: patch pixels are scaled per axis."""
        scale = torch.tensor([self.image_size / width, self.image_size / height], device=logits.device)
        images = []
        for i, (image_logits, image_prompts) in enumerate(zip(logits, prompts)):
            image_features = tuple(level[i:i + 1] for level in features)
            channels = list(image_logits)
            for k, prompt in sorted(image_prompts.items()):
                if not 1 <= k < self.num_classes:
                    raise ValueError(f"prompt for class {k}: this network segments classes 1..{self.num_classes - 1}")
                points = boxes = None
                if prompt.points:  # pixel centres scaled; the encoder adds the half pixel back
                    coords = (torch.tensor(prompt.points, device=logits.device) + 0.5) * scale - 0.5
                    points = (coords[None], torch.tensor(prompt.labels, device=logits.device)[None])
                if prompt.box is not None:
                    boxes = ((torch.tensor(prompt.box, device=logits.device).view(2, 2) + 0.5) * scale - 0.5).view(1, 4)
                sparse, dense = self.sam.embed_prompts(points, boxes)
                channels[k] = self.sam.decode_features(image_features, sparse, dense)[0, k]
            images.append(torch.stack(channels))
        return torch.stack(images)

    def ensure_base_loaded(self):
        """Load the base weights once (no-op without a loader, e.g. when training from scratch)."""
        if self.base_identity is None and self.base_loader is not None:
            self.base_identity = self.base_loader(self)
            if self.base_identity.sha256:
                self.base_sha256.copy_(torch.frombuffer(bytearray.fromhex(self.base_identity.sha256), dtype=torch.uint8))
        return self.base_identity

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """A full state dict loads as usual; a fine-tuned-only one loads on top of the base weights."""
        own = self.state_dict()
        if set(state_dict) == set(own):
            return super().load_state_dict(state_dict, strict, assign)
        unknown = [k for k in state_dict if k not in own]
        absent = [n for n, p in self.named_parameters() if p.requires_grad and n not in state_dict]
        if unknown or absent:
            example = (unknown or absent)[0]
            raise CheckpointError(
                f"fine-tuned weights do not fit this network ({example}); they were written for another "
                "set-up, class count or input channel count"
            )
        self.ensure_base_loaded()
        saved = state_dict.get("base_sha256")
        if saved is not None and saved.any():
            check_base(None, bytes(saved.tolist()).hex(), self.base_identity or FROM_SCRATCH, "fine-tuned weights")
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    def train(self, mode: bool = True) -> "SamSegmenter":
        super().train(mode)
        # Frozen batch-norm layers (TinyViT's) keep their pretrained statistics.
        for module in self.modules():
            if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each encoder block in backward instead of keeping its activations.

        Non-reentrant checkpointing: the reentrant variant silently drops the gradients of LoRA/adapter
        weights inside a block whose input does not require grad (a frozen stem).
        """
        for block in encoder_attention_blocks(self.sam.image_encoder):
            block.forward = partial(checkpoint, type(block).forward.__get__(block), use_reentrant=False)

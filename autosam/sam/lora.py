"""LoRA on SAM's attention projections through peft."""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

# Full-match regexes over module names: the image encoder's fused qkv (ViT and TinyViT alike; SAM 2.1's Hiera also
# its blocks' two MLP layers, as SAM 2 fine-tuning recipes do) and the q/k/v projections of every attention in the
# mask decoder's two-way transformer.
ENCODER_TARGETS = r".*image_encoder\..*\.qkv|.*image_encoder\.trunk\.blocks\.\d+\.mlp\.layers\.\d+"
DECODER_TARGETS = r".*mask_decoder\.transformer\..*\.(q_proj|k_proj|v_proj)"


def lora_targets(encoder: bool) -> str:
    """peft's ``target_modules`` for the decoder's attention, and the encoder's when it trains."""
    return f"{ENCODER_TARGETS}|{DECODER_TARGETS}" if encoder else DECODER_TARGETS


def add_lora(model: nn.Module, rank: int, alpha: float, encoder: bool) -> None:
    """Inject LoRA in place. peft freezes every non-LoRA parameter; callers re-enable what else trains."""
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=lora_targets(encoder), bias="none")
    inject_adapter_in_model(config, model)

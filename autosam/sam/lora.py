"""LoRA on SAM's attention projections through peft, and merging it back into plain weights."""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

# Full-match regexes over module names: the image encoder's fused qkv (ViT and TinyViT alike) and the
# q/k/v projections of every attention in the mask decoder's two-way transformer.
ENCODER_TARGETS = r".*image_encoder\..*\.qkv"
DECODER_TARGETS = r".*mask_decoder\.transformer\..*\.(q_proj|k_proj|v_proj)"


def add_lora(model: nn.Module, rank: int, alpha: float, encoder: bool) -> None:
    """Inject LoRA in place. peft freezes every non-LoRA parameter; callers re-enable what else trains."""
    targets = f"{ENCODER_TARGETS}|{DECODER_TARGETS}" if encoder else DECODER_TARGETS
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, bias="none")
    inject_adapter_in_model(config, model)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base Linear and put the plain Linear back (in place)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model

"""The fine-tuned fold checkpoint and the one check that it fits the network it is loaded into.

A fold checkpoint is nnU-Net's checkpoint dict (optimiser, logs, epoch) whose ``network_weights`` hold only
the tensors that train (plus the running statistics of batch-norm layers that train and the base's sha256),
so a ViT-H LoRA fold is megabytes instead of 2.5 GB, and whose ``autosam`` block records what they belong
to: set-up, image size, class and channel counts, normalisation, and the base weights (name + sha256). A
model trained from scratch has no reproducible base, so all of its weights are kept.

``check_identity`` compares that block with the network about to receive the weights; resume, predict and
export all call it, and refuse a mismatch with one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from autosam.errors import CheckpointError
from autosam.sam.setups import Setup
from autosam.sam.weights.base import FROM_SCRATCH, BaseIdentity, check_base

if TYPE_CHECKING:  # weights sit below the network: a fold checkpoint only reads a network's state
    from autosam.sam.network import SamSegmenter

FORMAT_VERSION = 3


def fine_tuned_weights(network: SamSegmenter) -> dict[str, torch.Tensor]:
    """The tensors a fold stores: those that train and their modules' buffers, or all when from scratch."""
    state = network.state_dict()
    if (network.base_identity or FROM_SCRATCH) == FROM_SCRATCH:
        return {k: v.detach().clone() for k, v in state.items()}
    trainable = {name for name, p in network.named_parameters() if p.requires_grad}
    owners = {name.rpartition(".")[0] for name in trainable}
    buffers = {name for name, _ in network.named_buffers() if name.rpartition(".")[0] in owners}
    keep = trainable | buffers | {"base_sha256"}
    return {k: v.detach().clone() for k, v in state.items() if k in keep}


def identity(setup: Setup, image_size: int, num_classes: int, input_channels: int, normalisation: str,
             base: BaseIdentity, data: str, prompts: str | None = None) -> dict:
    """``data``: the nnU-Net data identifier the fold trains on (its spacing and preprocessing); ``prompts``:
    the plan's prompt mode, recorded only for prompted folds (promptless identities are as before)."""
    return {
        "format_version": FORMAT_VERSION,
        "data": data,
        "setup": setup.to_dict(),
        "image_size": image_size,
        "num_classes": num_classes,
        "input_channels": input_channels,
        "normalisation": normalisation,
        "base": base.to_dict(),
        **({"prompts": prompts} if prompts is not None else {}),
    }


def identity_of(network: SamSegmenter, data: str) -> dict:
    """The ``autosam`` block of a fold checkpoint of ``network`` (its base loaded, or from scratch) trained on
    the preprocessed data ``data``."""
    return identity(network.setup, network.image_size, network.num_classes, network.input_channels,
                    network.normalisation, network.base_identity or FROM_SCRATCH, data, network.prompt_mode)


def check_identity(saved: dict | None, expected: dict, source: str) -> None:
    """Refuse fine-tuned weights (``saved``: their checkpoint's ``autosam`` block) that do not belong to the
    network described by ``expected`` (``identity``/``identity_of``)."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {source}: not written by an autosam trainer; pass a fold of 'autosam train'")
    if saved.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {source}: format version {saved.get('format_version')} is not "
                              f"{FORMAT_VERSION}; use the autosam release that wrote it, or retrain the fold")
    was, now = saved["setup"], expected["setup"]
    if was != now:
        detail = (f"set-up {was['name']}" if was["name"] != now["name"]
                  else f"LoRA rank {was['lora_rank']}, alpha {was['lora_alpha']}")
        raise CheckpointError(f"checkpoint {source}: trained with {detail}, but the plan now gives "
                              f"{now['name']} (rank {now['lora_rank']}, alpha {now['lora_alpha']}); restore the plans "
                              f"it was trained with (or plan again with --setup {was['name']}), or retrain")
    for key, what in (("image_size", "image size"), ("data", "preprocessed data (spacing and patch)"),
                      ("num_classes", "class count"),
                      ("input_channels", "input channel count"), ("normalisation", "intensity normalisation")):
        if saved[key] != expected[key]:
            raise CheckpointError(f"checkpoint {source}: trained with {what} {saved[key]}, but the plan now gives "
                                  f"{expected[key]}; restore the plans it was trained with, or retrain")
    if saved.get("prompts") != expected.get("prompts"):
        was, now = (f"prompts {m}" if m else "no prompts" for m in (saved.get("prompts"), expected.get("prompts")))
        raise CheckpointError(f"checkpoint {source}: trained with {was}, but the plan now gives {now}; restore the "
                              "plans it was trained with, or retrain")
    was_scratch, now_scratch = saved["base"]["name"] == FROM_SCRATCH.name, expected["base"]["name"] == FROM_SCRATCH.name
    if was_scratch != now_scratch:
        raise CheckpointError(
            f"checkpoint {source}: trained {'from scratch' if was_scratch else 'from pretrained weights'}, but this "
            f"run is {'from scratch' if now_scratch else 'from pretrained weights'}; pass --from-scratch the same "
            "way as when it was trained")
    check_base(saved["base"]["name"], saved["base"]["sha256"], BaseIdentity(**expected["base"]), source)

"""Fine-tuned weights without the frozen base: save, restore onto a fresh base, export merged weights.

A small checkpoint holds the trainable tensors (plus the running statistics of batch-norm layers that
train), the set-up and the identity (name + sha256) of the base checkpoint it was trained from, so a
ViT-H LoRA model is megabytes instead of 2.5 GB. A model trained from scratch has no reproducible base,
so all of its weights are kept.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from autosam.errors import CheckpointError
from autosam.files import atomic_torch_save
from autosam.sam.checkpoints import FROM_SCRATCH, BaseIdentity
from autosam.sam.lora import merge_lora
from autosam.sam.network import SamSegmenter
from autosam.sam.setups import Setup

FORMAT = "autosam-small-checkpoint"
FORMAT_VERSION = 1


def trainable_state(network: SamSegmenter) -> dict[str, torch.Tensor]:
    trainable = {name for name, p in network.named_parameters() if p.requires_grad}
    owners = {name.rpartition(".")[0] for name in trainable}
    buffers = {name for name, _ in network.named_buffers() if name.rpartition(".")[0] in owners}
    buffers.add("base_sha256")  # the identity of the base the tensors belong to
    return {k: v.detach().clone() for k, v in network.state_dict().items() if k in trainable | buffers}


def small_state(network: SamSegmenter, base: BaseIdentity) -> dict:
    """Everything needed to rebuild the fine-tuned network from its base checkpoint."""
    full = base == FROM_SCRATCH
    weights = {k: v.detach().clone() for k, v in network.state_dict().items()} if full else trainable_state(network)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "setup": network.setup.to_dict(),
        "base": base.to_dict(),
        "image_size": network.image_size,
        "num_classes": network.num_classes,
        "input_channels": network.input_channels,
        "normalisation": network.normalisation,
        "weights": weights,
    }


def save_small_checkpoint(network: SamSegmenter, base: BaseIdentity, path: str | Path) -> None:
    atomic_torch_save(small_state(network, base), path)


def read_small_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise CheckpointError(
            f"checkpoint {path}: cannot be read ({type(e).__name__}); it is truncated or corrupt, "
            "retrain the fold or restore the file from a backup"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an autosam fine-tuned checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {payload.get('format_version')} is not {FORMAT_VERSION}; "
            "use the autosam release that wrote it"
        )
    return payload


def restore_small_state(network: SamSegmenter, payload: dict, base: BaseIdentity, source: str = "checkpoint") -> None:
    """Load a small state onto ``network`` (built from ``base`` with the same set-up)."""
    setup = Setup.from_dict(payload["setup"])
    if network.setup != setup:
        raise CheckpointError(f"{source}: trained with set-up {setup.name}, not {network.setup.name}")
    saved = BaseIdentity(**payload["base"])
    if saved != FROM_SCRATCH and saved.sha256 and base.sha256 and saved.sha256 != base.sha256:
        raise CheckpointError(
            f"{source}: fine-tuned from {saved.name} (sha256 {saved.sha256[:12]}...), but the base weights "
            f"given are {base.name} (sha256 {base.sha256[:12]}...); pass the checkpoint it was trained from"
        )
    try:
        network.load_state_dict(payload["weights"])
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None


def merged_sam_state(network: SamSegmenter) -> dict[str, torch.Tensor]:
    """Official-layout SAM state dict with LoRA folded in, loadable by segment-anything's own classes
    (built with this image size and ``num_multimask_outputs = num_classes - 1``)."""
    setup = network.setup
    if setup is not None and setup.method == "adapter":
        raise CheckpointError(
            f"set-up {setup.name}: adapters are extra modules that stock segment-anything cannot hold; "
            "export works for vanilla and LoRA set-ups"
        )
    if network.channel_mixer is not None:
        raise CheckpointError(
            f"a {network.input_channels}-channel model has an input projection stock segment-anything cannot "
            "hold; export works for 1- and 3-channel models"
        )
    sam = merge_lora(copy.deepcopy(network)).sam
    return {k: v.detach().clone() for k, v in sam.state_dict().items()}


def export_merged(network: SamSegmenter, path: str | Path) -> None:
    atomic_torch_save(merged_sam_state(network), path)

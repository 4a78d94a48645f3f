"""Decoder-only training on cached image embeddings (``autosam.trainers.embedding_cache``).

The training iterations draw slices as nnU-Net's loader draws patches — a training case of the fold uniformly,
the last third of each batch (nnU-Net's ``oversample_foreground_percent``) from slices holding foreground —
and train the mask decoder on their cached embeddings against the slice's label map, with nnU-Net's loss on
the logits resized to the slice (as ``SamSegmenter.forward`` resizes them to a patch), nnU-Net's gradient
clipping and AdamW step. Everything else is the normal path: validation iterations, the final validation and
prediction run the whole network on nnU-Net's patches, and the fold checkpoint is the normal one.

What the cache gives up: nnU-Net's augmentation of the training patches (rotation, scaling, elastic
deformation, noise, blur, brightness, contrast, gamma, low resolution, mirroring) and its random crops — the
decoder sees each whole slice exactly as it was encoded once. Mirrored embeddings would not replace mirrored
images (the encoder is not mirror-equivariant), so nothing is applied to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.utilities.helpers import dummy_context

from autosam.trainers import embedding_cache

LOST_AUGMENTATION = (
    "nnU-Net's spatial and intensity augmentation of the training patches and its random "
    "crops are not applied: the decoder trains on the embeddings of whole, un-augmented slices "
    "(validation and prediction run the whole network on nnU-Net's patches as usual)"
)


@dataclass
class EmbeddingBatch:
    """Cached image features (the embeddings (B, D, S/16, S/16), then SAM 2.1's finer levels) and each slice's
    label map (1, H, W); slices differ in size."""

    features: tuple[torch.Tensor, ...]
    targets: list[torch.Tensor]


def why_not_cached(trainer) -> str | None:
    """None when this trainer can train on cached embeddings, else why it keeps the normal path."""
    plan = trainer.sam_plan
    if not plan.embedding_cache:
        return "the plan turns it off (--no-embedding-cache)"
    if plan.setup.trains_encoder:
        return f"{plan.setup.name} trains the image encoder"
    if getattr(plan, "prompts", None) is not None:
        return "prompted training (prompts come from each augmented patch's reference)"
    if trainer.label_manager.has_regions:
        return "region-based labels (the cache holds label maps, not regions)"
    if trainer.is_ddp:
        return "distributed training (the cached step bypasses DDP's gradient synchronisation)"
    return None


class CachedSlices:
    """An endless iterator of ``EmbeddingBatch`` over the fold's training cases; numpy's global generator draws
    the slices, so a fold checkpoint's generator states make a continued run draw what an unbroken one would."""

    def __init__(
        self, folder: Path, cases: list[str], batch_size: int, oversample_foreground: float, probabilistic: bool = False
    ) -> None:
        self.folder, self.cases, self.batch_size = Path(folder), list(cases), batch_size
        self.oversample_foreground, self.probabilistic = oversample_foreground, probabilistic
        self._open: dict[str, dict] = {}

    def _case(self, case: str) -> dict:
        if case not in self._open:
            self._open[case] = embedding_cache.open_case(self.folder, case)
        return self._open[case]

    def _force_foreground(self, j: int) -> bool:  # nnU-Net's nnUNetDataLoader rules
        if self.probabilistic:
            return np.random.uniform() < self.oversample_foreground
        return not j < round(self.batch_size * (1 - self.oversample_foreground))

    def __iter__(self) -> CachedSlices:
        return self

    def __next__(self) -> EmbeddingBatch:
        features, targets = [], []
        for j, case in enumerate(np.random.choice(self.cases, self.batch_size, replace=True)):
            entry = self._case(case)
            foreground = entry["foreground"]
            if self._force_foreground(j) and foreground:
                labels = sorted(foreground)
                slices = foreground[labels[np.random.choice(len(labels))]]
                z = int(slices[np.random.choice(len(slices))])
            else:
                z = np.random.randint(entry["segmentation"].shape[0])
            features.append([level[z] for level in entry["features"]])
            targets.append(entry["segmentation"][z][None].long())
        return EmbeddingBatch(tuple(torch.stack(level) for level in zip(*features)), targets)


def embedding_loss(loss, logits: list[torch.Tensor], targets: list[torch.Tensor], batch_dice: bool) -> torch.Tensor:
    """nnU-Net's loss over slices of different sizes. With batch Dice (nnU-Net's 2d) cross-entropy averages and
    Dice sums over every pixel of the batch, so the slices laid end to end as one image give exactly the loss of
    the stacked batch; per-image Dice averages the loss of each slice."""
    if batch_dice:
        return loss(
            torch.cat([x.flatten(2) for x in logits], 2)[..., None],
            torch.cat([t.flatten(1) for t in targets], 1)[None, ..., None],
        )
    return torch.stack([loss(x, t[None]) for x, t in zip(logits, targets)]).mean()


def decode_slices(network, features: tuple[torch.Tensor, ...], sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Each slice's float32 logits (1, K, H, W) at its own size: one decoder call for the batch's features, then
    each slice resized as ``network.decode(features, size)`` resizes it."""
    logits = network.decode(features)
    return [
        F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False)
        for x, size in zip(logits, sizes)
    ]


def cached_train_step(trainer, batch: EmbeddingBatch) -> dict:
    """nnU-Net's ``train_step`` with the decoder fed cached embeddings instead of the network fed a patch."""
    network = trainer._sam_network()
    device = trainer.device
    features = tuple(level.to(device, non_blocking=True) for level in batch.features)
    targets = [t.to(device, non_blocking=True) for t in batch.targets]
    trainer.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, enabled=True) if device.type == "cuda" else dummy_context():
        with network._autocast(device):  # the network's own precision, as in its forward
            logits = decode_slices(network, features, [tuple(t.shape[-2:]) for t in targets])
        loss = embedding_loss(trainer.loss, logits, targets, trainer.configuration_manager.batch_dice)
    optimiser_step(trainer, loss)
    return {"loss": loss.detach()}  # moved to the CPU once per epoch (the trainer's on_train_epoch_end)


def optimiser_step(trainer, loss: torch.Tensor) -> None:
    """nnU-Net's backward and step: gradient scaling when the trainer has a scaler, norm clipped at 12."""
    if trainer.grad_scaler is not None:
        trainer.grad_scaler.scale(loss).backward()
        trainer.grad_scaler.unscale_(trainer.optimizer)
        torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), 12)
        trainer.grad_scaler.step(trainer.optimizer)
        trainer.grad_scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), 12)
        trainer.optimizer.step()


def cached_training_loader(trainer, nnunet_loader) -> CachedSlices:
    """Build or reuse the fold's embeddings, stop nnU-Net's training loader and return the cached one."""
    if hasattr(nnunet_loader, "_finish"):  # multi-process augmenters: their workers are not needed
        nnunet_loader._finish()
    network = trainer._sam_network()
    network.ensure_base_loaded()
    key = embedding_cache.cache_key(
        network, trainer.configuration_manager.configuration, trainer.plans_manager.plans, trainer.device
    )
    folder = embedding_cache.cache_folder(trainer.preprocessed_dataset_folder_base, key)
    cases, _ = trainer.do_split()
    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, cases)
    info = embedding_cache.build(
        network,
        dataset,
        cases,
        folder,
        trainer.device,
        key,
        trainer.configuration_manager.batch_size,
        trainer.print_to_log_file,
    )
    trainer.embedding_cache_info = info  # benchmarks/embedding_cache.py reads the build time
    trainer.print_to_log_file(
        f"Embedding cache {folder}: {info.built} cases encoded now ({info.slices} slices, {info.seconds:.1f} s), "
        f"{info.reused} reused, {info.bytes / 2**20:.1f} MiB; the decoder trains on cached embeddings, the "
        "encoder runs only for validation"
    )
    trainer.print_to_log_file(f"Augmentation with the embedding cache: {LOST_AUGMENTATION}")
    return CachedSlices(
        folder, cases, trainer.batch_size, trainer.oversample_foreground_percent, trainer.probabilistic_oversampling
    )

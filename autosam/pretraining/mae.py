"""'autosam pretrain': self-supervised continued pretraining of SAM's image encoder on unlabelled images.

The study's best recipe (Gu et al., MELBA 2025, finding 4 and its README): masked-autoencoder training of
the image encoder on in-domain images, then parameter-efficient tuning of encoder and decoder. The model is
built by autosam's one builder, a ``--from`` start loads through the base-weights path (verified by size and
sha256 where the catalogue knows them), the objective is ``autosam.pretraining.mae_model``, the images come from
``autosam.pretraining.images``. The result is a base checkpoint in the official SAM / MobileSAM key layout at the
backbone's native 1024 px shapes (prompt encoder and mask decoder as they started), written atomically and
never over an existing file, and registered with its sha256, size, backbone and modality in the user
catalogue beside it (``autosam_catalogue.json``): with that folder as ``--checkpoint-dir`` or
``$AUTOSAM_CHECKPOINT_DIR``, ``--checkpoint NAME`` finds it and every load checks its sha256, and the planner
starts from it for datasets of its modality (rule R19).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.transforms import v2
from tqdm import tqdm

from autosam.errors import AutosamError
from autosam.files import atomic_torch_save
from autosam.paths import Dataset
from autosam.planners.fingerprint import modality_of
from autosam.pretraining.images import ImageSet, dataset_images, folder_images, read_slices
from autosam.pretraining.mae_model import MaskedAutoencoder
from autosam.sam.network import bf16_native
from autosam.sam.registry import build_sam, get_backbone
from autosam.sam.weights.base import _fit_to_model, load_base_checkpoint
from autosam.sam.weights.catalogue import (
    CATALOGUE,
    RANDOM_START,
    USER_CATALOGUE,
    CatalogueEntry,
    catalogue_entry_for,
    find_checkpoint,
    register_user_checkpoint,
    sha256_of,
    user_catalogue,
)
from autosam.sam.weights.lineage import ancestry
from autosam.trainers.fold_training import resolve_device
from autosam.trainers.seeding import seed_everything

log = logging.getLogger(__name__)
OFFICIAL_CLASSES = 4  # the official decoder's mask tokens: the written file has the official shapes
MEMORY_SHARE = 0.5  # slices kept in memory may use at most this share of the machine's RAM


@dataclass
class PretrainOptions:
    backbone: str = "vit_b"
    image_size: int = 1024  # the study pretrained at SAM's 1024 px
    epochs: int = 100
    iterations: int | None = None  # steps per epoch; None: one pass over the slices
    batch_size: int = 8
    mask_ratio: float = 0.75
    learning_rate: float = 1e-4
    weight_decay: float = 0.05  # MAE's
    warmup_share: float = 0.05  # linear warm-up over this share of the steps, then cosine decay (MAE's)
    base: str | None = None  # --from: a catalogue name or a file; None: random initialisation
    checkpoint_dir: str | None = None
    modality: str | None = None  # None: the datasets' own (from their channel names)
    seed: int = 0
    device: str | None = None


@dataclass
class PretrainResult:
    checkpoint: Path
    entry: CatalogueEntry
    catalogue: Path
    losses: list[float] = field(default_factory=list)  # mean masked-patch loss per epoch


def _check_output(output: Path) -> None:
    """Fail before any training: an existing file, an official name, a suffix torch.load will not mistake."""
    if output.suffix not in (".pth", ".pt"):
        raise AutosamError(f"-o {output}: name the checkpoint .pth or .pt")
    if output.exists():
        raise AutosamError(f"{output}: exists; autosam never overwrites a file, choose another -o")
    if output.stem in CATALOGUE or output.name in {e.filename for e in CATALOGUE.values()}:
        raise AutosamError(f"-o {output}: '{output.stem}' is an official checkpoint's name; choose another")
    stale = user_catalogue(output.parent).get(output.stem)  # also refuses an unreadable catalogue now
    if stale is not None and (output.parent / stale.filename).exists():
        raise AutosamError(f"-o {output}: '{output.stem}' already names {output.parent / stale.filename} in "
                           f"{output.parent / USER_CATALOGUE}; choose another file name")
    if stale is not None:
        log.warning("%s: its catalogue entry '%s' names a file that is gone; the entry will be replaced",
                    output.parent, output.stem)


def _modality(image_sets: list[ImageSet], given: str | None) -> str | None:
    if given:
        known = modality_of(given)
        return known if known != "unknown" else given
    found = {s.modality for s in image_sets if s.channel_names}
    if not found:
        log.warning("the images' modality is unknown: pass --modality (e.g. MR) so the planner prefers this "
                    "checkpoint for datasets of that modality")
        return None
    return found.pop() if len(found) == 1 else "mixed"


def _schedule(optimiser: torch.optim.Optimizer, steps: int, warmup_share: float):
    warmup = max(1, round(warmup_share * steps))
    return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: (step + 1) / warmup if step < warmup else
                                             0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def _augment(batch: list[torch.Tensor], image_size: int, minmax: bool) -> torch.Tensor:
    """MAE's augmentation (random resized crop, scale 0.2-1, and horizontal flip), then SAM's three channels."""
    transform = v2.Compose([v2.RandomResizedCrop(image_size, scale=(0.2, 1.0), antialias=True),
                            v2.RandomHorizontalFlip()])
    images = torch.stack([transform(s.float()).expand(3, -1, -1) for s in batch])
    return scale_minmax(images) if minmax else images


def scale_minmax(images: torch.Tensor) -> torch.Tensor:
    """Each image of (B, 3, H, W) scaled to [0, 1], as SamSegmenter does for min-max weights (MedSAM)."""
    flat = images.flatten(1)
    lo, hi = flat.min(1)[0].view(-1, 1, 1, 1), flat.max(1)[0].view(-1, 1, 1, 1)
    return (images - lo) / (hi - lo).clamp_min(1e-8)


def _start(options: PretrainOptions, sam) -> tuple[str, str, tuple[dict, ...]]:
    """Load ``--from`` into ``sam``; (its name, its normalisation, the lineage the new checkpoint inherits)."""
    if options.base is None:
        log.warning("no --from: the encoder starts from random weights")
        return RANDOM_START, "imagenet", ()
    path = find_checkpoint(options.base, options.checkpoint_dir)
    identity = load_base_checkpoint(sam, options.backbone, path)
    entry = catalogue_entry_for(path)
    log.info("starting from %s (sha256 %s...)", identity.name, (identity.sha256 or "?")[:12])
    return identity.name, entry.normalisation if entry else "imagenet", ancestry(path, identity.sha256)


def pretrain(output: str | os.PathLike, options: PretrainOptions, datasets: list[Dataset] | None = None,
             images: str | os.PathLike | None = None) -> PretrainResult:
    """Masked-autoencoder pretraining of the image encoder on ``datasets`` (raw nnU-Net ids) or ``images``."""
    output = Path(output)
    if not 0.0 < options.mask_ratio < 1.0:
        raise AutosamError(f"--mask-ratio {options.mask_ratio}: give a share between 0 and 1, e.g. 0.75")
    if min(options.epochs, options.batch_size, options.iterations or 1) < 1:
        raise AutosamError("--epochs, --iterations and --batch-size must be at least 1")
    _check_output(output)
    spec = get_backbone(options.backbone)
    if not (datasets or images):
        raise AutosamError("pretrain: give the images, with --images DIR or -d ID [ID ...]")
    device = resolve_device(options.device)
    image_sets = [dataset_images(d) for d in datasets or []] + ([folder_images(images)] if images else [])
    modality = _modality(image_sets, options.modality)
    seen = {s.name: s.digests() for s in image_sets}  # recorded in the catalogue: R19 and 'run' read it
    seed_everything(options.seed)
    sam = build_sam(options.backbone, options.image_size, OFFICIAL_CLASSES)
    start, normalisation, ancestors = _start(options, sam)
    total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    slices = read_slices(image_sets, options.image_size, MEMORY_SHARE * total_memory)

    model = MaskedAutoencoder(sam, options.mask_ratio).to(device)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=options.weight_decay)
    per_epoch = options.iterations or math.ceil(len(slices) / options.batch_size)
    scheduler = _schedule(optimiser, options.epochs * per_epoch, options.warmup_share)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16_native(device) else contextlib.nullcontext()
    log.info("pretraining the %s encoder at %d px on %d slices: %d epochs x %d steps of batch %d, mask ratio %g, "
             "on %s", spec.name, options.image_size, len(slices), options.epochs, per_epoch, options.batch_size,
             options.mask_ratio, device)
    minmax = normalisation == "minmax"
    losses = run_steps(slices, per_epoch, options, lambda batch: model(_augment(batch, options.image_size, minmax)
                                                                       .to(device))[0],
                       optimiser, scheduler, autocast, "pretraining", "masked-patch loss")
    source = (f"autosam pretrain: MAE (mask ratio {options.mask_ratio:g}), {options.epochs} epochs x {per_epoch} "
              f"steps of batch {options.batch_size} at {options.image_size} px on {len(slices)} slices of "
              f"{', '.join(s.name for s in image_sets)}, from {start}, seed {options.seed}")
    return PretrainResult(*save_and_register(sam, options, output, source, normalisation, modality, start,
                                             image_sets, Seen(False, seen, ancestors)), losses)


def run_steps(slices: list, per_epoch: int, options: PretrainOptions, step_loss: Callable[[list], torch.Tensor],
              optimiser: torch.optim.Optimizer, scheduler, autocast, desc: str, loss_name: str) -> list[float]:
    """The loop both objectives share: each epoch draws its batches from shuffled passes over the slices (more
    than one with --iterations), one optimiser step per batch; returns each epoch's mean loss."""
    losses = []
    progress = tqdm(total=options.epochs * per_epoch, desc=desc, unit="step")
    for epoch in range(options.epochs):
        passes = math.ceil(per_epoch * options.batch_size / len(slices))
        order, running = torch.cat([torch.randperm(len(slices)) for _ in range(passes)]).tolist(), 0.0
        for step in range(per_epoch):
            batch = [slices[i] for i in order[step * options.batch_size:(step + 1) * options.batch_size]]
            with autocast:
                loss = step_loss(batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            running += loss.item()
            progress.update()
            progress.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
        losses.append(running / per_epoch)
        log.info("epoch %d: %s %.4f", epoch, loss_name, losses[-1])
    progress.close()
    return losses


@dataclass(frozen=True)
class Seen:
    """What a new checkpoint saw, for its catalogue entry (autosam/sam/weights/lineage.py)."""

    labels_used: bool
    images: dict[str, list[str]]  # image set name -> the digest of each of its images
    ancestors: tuple[dict, ...]  # its start's record and the start's ancestors (lineage.ancestry)


def save_and_register(sam, options: PretrainOptions, output: Path, source: str, normalisation: str,
                      modality: str | None, start: str, image_sets: list[ImageSet], seen: Seen
                      ) -> tuple[Path, CatalogueEntry, Path]:
    """Write the official-layout checkpoint and register it in its folder's catalogue; (file, entry, catalogue)."""
    checkpoint = _write(sam.to("cpu"), options.backbone, output)
    entry = CatalogueEntry(output.stem, output.name, options.backbone, checkpoint.stat().st_size,
                           sha256_of(checkpoint), source, normalisation, modality, start,
                           tuple(s.name for s in image_sets), seen.labels_used, seen.images, seen.ancestors)
    catalogue = register_user_checkpoint(entry, output.parent)
    log.info("wrote %s (sha256 %s...), registered as '%s' (modality %s) in %s", checkpoint, entry.sha256[:12],
             entry.name, modality, catalogue)
    return checkpoint, entry, catalogue


def _write(sam, backbone: str, output: Path) -> Path:
    """The whole SAM at the backbone's native size (pos_embed and global rel-pos tables resized, as on load),
    so segment-anything's, MobileSAM's and SAM 2.1's own builders load the file unchanged."""
    spec = get_backbone(backbone)
    native = build_sam(backbone, spec.native_image_size, OFFICIAL_CLASSES)
    state = {k: v.detach().clone().contiguous() for k, v in _fit_to_model(sam.state_dict(), native, spec).items()}
    if output.exists():  # appeared while training
        raise AutosamError(f"{output}: exists; autosam never overwrites a file, choose another -o")
    atomic_torch_save({"model": state} if spec.family == "sam2" else state, output)  # as each family releases them
    return output

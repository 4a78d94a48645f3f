"""'autosam pretrain --prompted': prompt-based training of one SAM across several labelled datasets (MedSAM's
recipe, the study's Setup 2), before fine-tuning on a new dataset.

Every (2D slice, class present) of the datasets' imagesTr + labelsTr is an object; its prompt (a jittered box,
points inside and outside, or either with ``box+point``) comes from ``autosam.sam.prompts``, as prompted fine-tuning
derives them. The slices are read and normalised by ``autosam.pretraining.images`` (labels by the same nnU-Net
reader, nearest-neighbour resized). SAM's own prompt path answers each object: image encoder once per slice,
prompt encoder, mask decoder with its single-mask output (``multimask_output=False``); the loss is binary
soft Dice + BCE (nnU-Net's ``DC_and_BCE_loss``, ``ignore`` pixels excluded) on the low-resolution mask
upsampled to the input size. The image encoder and the mask decoder train; the prompt encoder stays as it
started (MedSAM freezes it). The checkpoint is written and catalogued as ``autosam pretrain``'s MAE result is.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss

from autosam.errors import AutosamError
from autosam.paths import Dataset
from autosam.pretraining.images import dataset_images, read_labelled_slices
from autosam.pretraining.mae import (
    MEMORY_SHARE,
    OFFICIAL_CLASSES,
    Seen,
    _check_output,
    _modality,
    _schedule,
    _start,
    run_steps,
    save_and_register,
    scale_minmax,
)
from autosam.sam.network import bf16_native
from autosam.sam.prompts import Prompt, check_mode, image_prompts
from autosam.sam.registry import build_sam, get_backbone
from autosam.sam.weights.catalogue import CatalogueEntry
from autosam.trainers.fold_training import resolve_device
from autosam.trainers.seeding import seed_everything

log = logging.getLogger(__name__)
EVALUATION_SLICES = 16  # the fixed slices (with fixed prompts) whose loss is reported before and after


@dataclass
class PromptedOptions:
    backbone: str = "vit_b"
    image_size: int = 1024
    prompts: str = "box"  # box | point | box+point (autosam.sam.prompts.MODES)
    epochs: int = 10
    iterations: int | None = None  # steps per epoch; None: one pass over the slices
    batch_size: int = 4  # slices per step; each brings all of its objects
    learning_rate: float = 1e-4  # MedSAM's
    weight_decay: float = 0.01  # MedSAM's
    warmup_share: float = 0.05
    base: str | None = None  # --from: a catalogue name or a file; None: random initialisation
    checkpoint_dir: str | None = None
    modality: str | None = None
    seed: int = 0
    device: str | None = None


@dataclass
class Slice:
    image: torch.Tensor  # (1 or 3, S, S) float16, normalised
    label: torch.Tensor  # (S, S) int16
    ignore_label: int | None


@dataclass
class PromptedResult:
    checkpoint: Path
    entry: CatalogueEntry
    catalogue: Path
    objects: int
    loss_before: float  # on the fixed evaluation slices
    loss_after: float
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch


def slice_prompts(item: Slice, mode: str, rng: np.random.Generator) -> dict[int, Prompt]:
    """One prompt per class present in the slice, in SAM-input pixel coordinates (the slice is at its size)."""
    return image_prompts(item.label.numpy(), mode, rng, item.ignore_label)


class PromptedLoss(torch.nn.Module):
    """Binary soft Dice + BCE per object, nnU-Net's implementation; 0 for a perfect mask."""

    def __init__(self) -> None:
        super().__init__()

        self.loss = DC_and_BCE_loss({}, {"batch_dice": False, "do_bg": True, "smooth": 1e-5, "ddp": False},
                                    use_ignore_label=True)

    def forward(self, logits: torch.Tensor, objects: torch.Tensor, ignored: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, 1, S, S); ``objects`` and ``ignored`` (N, S, S) bool."""
        return 1 + self.loss(logits.float(), torch.stack([objects, ignored], 1))  # its Dice term is -Dice


def forward_objects(sam, batch: list[Slice], prompts: list[dict[int, Prompt]], minmax: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each object's single-mask logits at the input size (N, 1, S, S), its mask and its ignored pixels."""
    device = next(sam.parameters()).device
    images = torch.stack([s.image.float().expand(3, -1, -1) for s in batch]).to(device)
    features = sam.embed(scale_minmax(images) if minmax else images)  # image_models.py: either family
    size = images.shape[-1]
    logits, objects, ignored = [], [], []
    for i, (item, image_prompts_) in enumerate(zip(batch, prompts)):
        image_features = tuple(level[i:i + 1] for level in features)
        label = item.label.to(device)
        for k, prompt in sorted(image_prompts_.items()):
            points = boxes = None  # the prompt encoder adds the half pixel itself
            if prompt.points:
                points = (torch.tensor(prompt.points, device=device)[None],
                          torch.tensor(prompt.labels, device=device)[None])
            if prompt.box is not None:
                boxes = torch.tensor(prompt.box, device=device)[None]
            sparse, dense = sam.embed_prompts(points, boxes)
            low_res = sam.decode_features(image_features, sparse, dense)[:, :1]  # the single-mask output
            logits.append(F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False))
            objects.append(label == k)
            ignored.append(label == item.ignore_label if item.ignore_label is not None else torch.zeros_like(label,
                                                                                                          dtype=bool))
    return torch.cat(logits), torch.stack(objects), torch.stack(ignored)


def _read(datasets: list[Dataset], image_size: int) -> tuple[list, list[Slice]]:
    image_sets = [dataset_images(d, labelled=True) for d in datasets]
    total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    slices = []
    for images in image_sets:
        for image, label in read_labelled_slices([images], image_size, MEMORY_SHARE * total_memory):
            present = label != images.ignore_label if images.ignore_label is not None else torch.ones_like(label, dtype=bool)
            if (label[present] > 0).any():  # a slice without objects has nothing to prompt
                slices.append(Slice(image, label, images.ignore_label))
    if not slices:
        raise AutosamError(f"{', '.join(s.name for s in image_sets)}: no slice holds a labelled object; prompted "
                           "pretraining needs labelsTr with foreground")
    return image_sets, slices


def prompted_pretrain(output: str | os.PathLike, options: PromptedOptions, datasets: list[Dataset]) -> PromptedResult:
    """Prompt-based training of SAM's image encoder and mask decoder on the labelled ``datasets``."""
    output = Path(output)
    check_mode(options.prompts)
    if min(options.epochs, options.batch_size, options.iterations or 1) < 1:
        raise AutosamError("--epochs, --iterations and --batch-size must be at least 1")
    if not datasets:
        raise AutosamError("pretrain --prompted: give labelled nnU-Net datasets with -d ID [ID ...], not --images")
    _check_output(output)
    spec = get_backbone(options.backbone)
    device = resolve_device(options.device)
    image_sets, slices = _read(datasets, options.image_size)
    modality = _modality(image_sets, options.modality)
    seen = {s.name: s.digests() for s in image_sets}  # recorded in the catalogue: R19 and 'run' read it
    seed_everything(options.seed)
    rng = np.random.default_rng(options.seed)
    sam = build_sam(options.backbone, options.image_size, OFFICIAL_CLASSES)
    start, normalisation, ancestors = _start(options, sam)
    minmax = normalisation == "minmax"
    sam.to(device).train()
    for name, parameter in sam.named_parameters():  # the prompt encoder stays as released; unused heads frozen
        parameter.requires_grad_(not name.startswith(sam.UNUSED))
    trained = [p for p in sam.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trained, lr=options.learning_rate, weight_decay=options.weight_decay)
    per_epoch = options.iterations or math.ceil(len(slices) / options.batch_size)
    scheduler = _schedule(optimiser, options.epochs * per_epoch, options.warmup_share)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16_native(device) else contextlib.nullcontext()
    loss_fn = PromptedLoss()

    # fixed slices and prompts, drawn by their own generator: the same before and after training
    evaluation = [slices[i] for i in np.random.default_rng(options.seed).permutation(len(slices))[:EVALUATION_SLICES]]
    evaluation_prompts = [slice_prompts(s, options.prompts, np.random.default_rng(options.seed + i))
                          for i, s in enumerate(evaluation)]

    def evaluate() -> float:
        sam.eval()
        with torch.no_grad(), autocast:
            losses = [loss_fn(*forward_objects(sam, evaluation[i:i + options.batch_size],
                                               evaluation_prompts[i:i + options.batch_size], minmax)).item()
                      for i in range(0, len(evaluation), options.batch_size)]
        sam.train()
        return float(np.mean(losses))

    objects = sum(len([k for k in torch.unique(s.label).tolist() if k > 0 and k != s.ignore_label]) for s in slices)
    log.info("prompted pretraining of the %s encoder and mask decoder at %d px on %d objects in %d slices of %s "
             "(%s prompts): %d epochs x %d steps of %d slices, on %s", spec.name, options.image_size, objects,
             len(slices), ", ".join(s.name for s in image_sets), options.prompts, options.epochs, per_epoch,
             options.batch_size, device)
    before = evaluate()
    losses = run_steps(slices, per_epoch, options, lambda batch: loss_fn(*forward_objects(
        sam, batch, [slice_prompts(s, options.prompts, rng) for s in batch], minmax)),
                       optimiser, scheduler, autocast, "prompted pretraining", "Dice + BCE")
    after = evaluate()
    log.info("Dice + BCE on %d fixed slices: %.4f before, %.4f after", len(evaluation), before, after)

    source = (f"autosam pretrain --prompted: prompted pretraining ({options.prompts} prompts; image encoder and "
              f"mask decoder) on {', '.join(s.name for s in image_sets)} ({objects} objects in {len(slices)} "
              f"slices), {options.epochs} epochs x {per_epoch} steps of {options.batch_size} slices at "
              f"{options.image_size} px, from {start}, seed {options.seed}")
    checkpoint, entry, catalogue = save_and_register(sam, options, output, source, normalisation, modality, start,
                                                     image_sets, Seen(True, seen, ancestors))
    return PromptedResult(checkpoint, entry, catalogue, objects, before, after, losses)

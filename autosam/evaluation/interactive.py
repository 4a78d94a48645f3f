"""Interactive evaluation of a prompted SAM fold: a start prompt, then simulated corrective clicks.

On each validation case of a fold, for each class in the reference (2D: the slice; 3D: every slice holding
the class), the model starts from one of three prompts: the reference's tight bounding box, a jittered box (each
side moved outward by a uniform share in [0, ``BOX_JITTER``) of the box's extent along its axis, clipped to the
image: the distribution training draws its boxes from; seeded by (``JITTER_SEED``, the case name, the slice), so
a rerun places the same boxes), or one click at the object's deepest point. Each further interaction is one
click by the rule of RITM's evaluation (Sofiiuk et al., 2022), which SAM's paper follows: the Euclidean distance
transform of the false-negative region and of the false-positive region (each padded by one pixel, so the image
border counts as the region's border, and pixels outside ``valid`` count as border too), pixels already clicked
set to zero; the next click goes to the deepest point of whichever region is deeper (a positive click for the
misses, a negative one for the false positives; a tie goes to the false positives, the first pixel in row order
to break ties in place). A clicked pixel is never clicked again. Every click is kept, so interaction n prompts
with the start and n - 1 clicks. Dice is recorded after each interaction.

A prompted class's mask is its own binary decision, logit > 0 (SAM's threshold), not an argmax against the
promptless background or other classes. The trainer's loss (nnU-Net's softmax Dice + CE) constrains logit
differences, not the logit's level, so this threshold is SAM's convention rather than what the loss calibrated.

The network sees the whole preprocessed slice (resized to its input, as SAM's own interactive use does), and
Dice is computed in the preprocessed geometry. Prompts are placed with the reference, so these numbers measure
how well the model follows corrections; they are not comparable to the automatic (promptless) results.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from scipy import ndimage
from tqdm import tqdm

from autosam.files import atomic_write_json
from autosam.inference.trained_models import Model, SamFold
from autosam.paths import Dataset
from autosam.sam.prompts import BOX_JITTER, ImagePrompts, Prompt, bounding_box, jittered_box

log = logging.getLogger(__name__)

STARTS = ("box", "jittered_box", "click")
INTERACTIONS = 5
REPORTED = (1, 3, 5)  # interactions shown in the report's table
RESULT_FILE = "interactive.json"
JITTER_SEED = 0
# A fold's interactive.json is reused only when it was written under this protocol.
PROTOCOL = "ritm-deepest-error, clicked pixels excluded, logit>0, starts box/jittered_box/click"


@dataclass(frozen=True)
class Click:
    x: int
    y: int
    positive: bool


def _depth(region: np.ndarray) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest pixel outside ``region``, the image border included."""
    return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def next_click(
    prediction: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None, clicked: np.ndarray | None = None
) -> Click | None:
    """RITM's next click for a binary ``prediction`` against ``reference`` (2D): the deepest unclicked point of
    the false negatives against that of the false positives, the deeper one wins (ties: negative). None when no
    unclicked error pixel is left."""
    valid = np.ones(reference.shape, bool) if valid is None else valid
    unclicked = np.ones(reference.shape, bool) if clicked is None else ~clicked
    misses = _depth(reference & ~prediction & valid) * unclicked
    extras = _depth(prediction & ~reference & valid) * unclicked
    deepest_miss, deepest_extra = misses.max(), extras.max()
    if deepest_miss == deepest_extra == 0:
        return None
    positive = bool(deepest_miss > deepest_extra)
    y, x = np.unravel_index(int(np.argmax(misses if positive else extras)), reference.shape)
    return Click(int(x), int(y), positive)


def dice(prediction: np.ndarray, reference: np.ndarray, valid: np.ndarray) -> float:
    a, b = prediction & valid, reference & valid
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def decision(logits: np.ndarray, k: int) -> np.ndarray:
    """A prompted class's mask from per-class logits (K, H, W): its own logit > 0, SAM's binary decision."""
    return logits[k] > 0


def start_prompt(
    start: str, reference: np.ndarray, valid: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[Prompt, Click | None]:
    """The first interaction: the reference's tight bounding box, a jittered one (``rng`` draws it), or one
    click at the object's deepest point."""
    if start == "box":
        return Prompt(tuple(float(v) for v in bounding_box(reference))), None
    if start == "jittered_box":
        if rng is None:
            raise ValueError("a jittered box needs a seeded generator")
        return Prompt(tuple(float(v) for v in jittered_box(reference, rng, BOX_JITTER))), None
    if start != "click":
        raise ValueError(f"unknown start {start!r}: one of {', '.join(STARTS)}")
    click = next_click(np.zeros_like(reference), reference, valid)
    return Prompt(None, ((float(click.x), float(click.y)),), (1,)), click


Segment = Callable[[list[ImagePrompts]], np.ndarray]  # prompt sets for one image -> per-class logits (N, K, H, W)


def simulate(
    segment: Segment,
    label: np.ndarray,
    classes: list[int],
    starts: tuple[str, ...] = STARTS,
    interactions: int = INTERACTIONS,
    ignore_label: int | None = None,
    rng: np.random.Generator | None = None,
) -> dict[tuple[str, int], dict]:
    """Run the click loop on one 2D image for each start x class in ``label`` (all in one batch per
    interaction); returns per (start, class) the Dice after each interaction and the clicks placed. ``rng``
    draws the jittered boxes (default: seeded with ``JITTER_SEED``)."""
    valid = label != ignore_label if ignore_label is not None else np.ones(label.shape, bool)
    rng = np.random.default_rng(JITTER_SEED) if rng is None else rng
    runs = [(s, k) for s in starts for k in classes if (label == k).any()]
    prompts, results, clicked = {}, {}, {}
    for start, k in runs:
        prompts[start, k], first = start_prompt(start, label == k, valid, rng)
        clicked[start, k] = np.zeros(label.shape, bool)
        results[start, k] = {"dice": [], "clicks": []}
        if first is not None:
            clicked[start, k][first.y, first.x] = True
            results[start, k]["clicks"].append([first.x, first.y, True])
    for step in range(interactions):
        if not runs:
            break
        logits = segment([{k: prompts[start, k]} for start, k in runs])
        for (start, k), image_logits in zip(runs, logits):
            reference, mask = label == k, decision(image_logits, k)
            results[start, k]["dice"].append(dice(mask, reference, valid))
            if step + 1 == interactions:
                continue
            click = next_click(mask, reference, valid, clicked[start, k])
            if click is None:  # nothing left to correct (or every error pixel clicked): the prompt stays
                results[start, k]["clicks"].append(None)
                continue
            clicked[start, k][click.y, click.x] = True
            prompts[start, k] = prompts[start, k].with_point((float(click.x), float(click.y)), click.positive)
            results[start, k]["clicks"].append([click.x, click.y, click.positive])
    return results


def network_segmenter(network, image: torch.Tensor) -> Segment:
    """``image`` (C, H, W); each call segments it once per prompt set (one batch) and returns the logits."""

    def segment(prompts: list[ImagePrompts]) -> np.ndarray:
        with torch.no_grad():
            logits = network(image[None].expand(len(prompts), -1, -1, -1), prompts)
        return logits.float().cpu().numpy()

    return segment


def evaluate_case(
    network,
    data: np.ndarray,
    seg: np.ndarray,
    device: torch.device,
    ignore_label: int | None = None,
    starts: tuple[str, ...] = STARTS,
    interactions: int = INTERACTIONS,
    case: str = "",
) -> dict[str, dict[str, dict]]:
    """A preprocessed case (data (C, Z, H, W), seg (1, Z, H, W)): start -> class -> Dice after each interaction
    (the mean over the slices holding the class) and the slices used. The jittered boxes of slice z are drawn
    from (``JITTER_SEED``, the case name's CRC-32, z)."""
    seg = np.where(seg[0] < 0, 0, seg[0]).astype(np.int64)  # nnU-Net marks outside the non-zero mask with -1
    classes = sorted(int(k) for k in np.unique(seg) if k > 0 and k != ignore_label)
    collected: dict[tuple[str, int], list[list[float]]] = {}
    for z in range(seg.shape[0]):
        present = [k for k in classes if (seg[z] == k).any()]
        if not present:
            continue
        image = torch.from_numpy(np.ascontiguousarray(data[:, z])).float().to(device)
        rng = np.random.default_rng([JITTER_SEED, zlib.crc32(case.encode()), z])
        results = simulate(network_segmenter(network, image), seg[z], present, starts, interactions, ignore_label, rng)
        for key, result in results.items():
            collected.setdefault(key, []).append(result["dice"])
    return {
        start: {
            str(k): {"dice": np.mean(collected[start, k], axis=0).tolist(), "slices": len(collected[start, k])}
            for k in classes
            if (start, k) in collected
        }
        for start in starts
    }


def evaluate_fold(
    fold_folder: Path,
    network,
    preprocessed: Path,
    val_cases: list[str],
    device: torch.device,
    ignore_label: int | None = None,
) -> Path:
    """Every validation case of a fold through the click loop; written to ``fold_X/interactive.json``."""
    dataset = infer_dataset_class(str(preprocessed))(str(preprocessed), val_cases)
    network.to(device).eval()
    cases = []
    for case in tqdm(val_cases, desc=f"interactive evaluation, {fold_folder.name}", unit="case"):
        data, seg, _, _ = dataset.load_case(case)
        cases.append(
            {
                "case": case,
                "starts": evaluate_case(network, np.asarray(data), np.asarray(seg), device, ignore_label, case=case),
            }
        )
    path = fold_folder / RESULT_FILE
    atomic_write_json(
        {
            "protocol": PROTOCOL,
            "starts": list(STARTS),
            "interactions": INTERACTIONS,
            "box_jitter": BOX_JITTER,
            "jitter_seed": JITTER_SEED,
            "decision": "logit > 0",
            "prompt_mode": network.prompt_mode,
            "geometry": "preprocessed",
            "cases": cases,
        },
        path,
    )
    log.info("interactive evaluation of %s: %d cases -> %s", fold_folder.name, len(cases), path)
    return path


def evaluate_folds(dataset: Dataset, folds: list[int], device: torch.device) -> list[Path]:
    """The prompted SAM model's folds (``autosam run`` with ``--prompts``); a fold already evaluated under this
    ``PROTOCOL`` after its final checkpoint was written is kept."""
    model = Model.for_setup(None)
    folder = model.folder(dataset)
    preprocessed_base = dataset.preprocessed
    splits = json.loads((preprocessed_base / "splits_final.json").read_text())
    ignore = json.loads((folder / "dataset.json").read_text())["labels"].get("ignore")
    written = []
    for fold in folds:
        sam_fold = SamFold(folder, model.trainer, model.configuration, str(fold))
        result = folder / f"fold_{fold}" / RESULT_FILE
        if (
            result.is_file()
            and result.stat().st_mtime >= sam_fold.path.stat().st_mtime
            and json.loads(result.read_text()).get("protocol") == PROTOCOL
        ):
            written.append(result)
            continue
        network, _ = sam_fold.network()
        preprocessed = preprocessed_base / sam_fold.data
        written.append(
            evaluate_fold(folder / f"fold_{fold}", network, preprocessed, splits[fold]["val"], device, ignore)
        )
    return written

"""Interactive evaluation of a prompted SAM fold: a start prompt, then simulated corrective clicks.

On each validation case of a fold, for each class in the reference (2D: the slice; 3D: every slice holding
the class), the model starts from the reference's bounding box or from one click at the object's centre, and
each further interaction is one click at the centre of the largest error region: the point of the largest
connected component of misses (a positive click) or false positives (a negative click) farthest from the
component's border (scipy's Euclidean distance transform; the image edge counts as border). Every click is
kept, so interaction n prompts with the start and n - 1 clicks. Dice is recorded after each interaction.

The network sees the whole preprocessed slice (resized to its input, as SAM's own interactive use does), and
Dice is computed in the preprocessed geometry. Prompts are placed with the reference, so these numbers measure
how well the model follows corrections; they are not comparable to the automatic (promptless) results.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from scipy import ndimage
from tqdm import tqdm

from autosam.files import atomic_write_json
from autosam.inference.trained_models import Model, SamFold
from autosam.paths import Dataset
from autosam.sam.prompts import ImagePrompts, Prompt, bounding_box

log = logging.getLogger(__name__)

STARTS = ("box", "click")
INTERACTIONS = 5
REPORTED = (1, 3, 5)  # interactions shown in the report's table
RESULT_FILE = "interactive.json"


@dataclass(frozen=True)
class Click:
    x: int
    y: int
    positive: bool


def error_click(prediction: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None) -> Click | None:
    """The corrective click for a binary ``prediction`` against ``reference`` (2D), None when they agree: the
    pixel of the largest error component (misses or false positives, 8-connected) farthest from its border."""
    valid = np.ones(reference.shape, bool) if valid is None else valid
    best: tuple[float, np.ndarray, bool] | None = None
    for errors, positive in ((reference & ~prediction & valid, True), (prediction & ~reference & valid, False)):
        labelled, count = ndimage.label(errors, structure=np.ones((3, 3)))
        if count == 0:
            continue
        sizes = ndimage.sum_labels(errors, labelled, index=np.arange(1, count + 1))
        largest = int(np.argmax(sizes))
        if best is None or sizes[largest] > best[0]:
            best = (float(sizes[largest]), labelled == largest + 1, positive)
    if best is None:
        return None
    distance = ndimage.distance_transform_edt(np.pad(best[1], 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return Click(int(x), int(y), best[2])


def dice(prediction: np.ndarray, reference: np.ndarray, valid: np.ndarray) -> float:
    a, b = prediction & valid, reference & valid
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def start_prompt(start: str, reference: np.ndarray, valid: np.ndarray) -> tuple[Prompt, Click | None]:
    """The first interaction: the reference's bounding box, or one click at the centre of the object."""
    if start == "box":
        return Prompt(tuple(float(v) for v in bounding_box(reference))), None
    click = error_click(np.zeros_like(reference), reference, valid)
    return Prompt(None, ((float(click.x), float(click.y)),), (1,)), click


Segment = Callable[[list[ImagePrompts]], np.ndarray]  # prompt sets for one image -> label maps (N, H, W)


def simulate(segment: Segment, label: np.ndarray, classes: list[int], starts: tuple[str, ...] = STARTS,
             interactions: int = INTERACTIONS, ignore_label: int | None = None) -> dict[tuple[str, int], dict]:
    """Run the click loop on one 2D image for each start x class in ``label`` (all in one batch per
    interaction); returns per (start, class) the Dice after each interaction and the clicks placed."""
    valid = label != ignore_label if ignore_label is not None else np.ones(label.shape, bool)
    runs = [(s, k) for s in starts for k in classes if (label == k).any()]
    prompts, results = {}, {}
    for start, k in runs:
        prompts[start, k], first = start_prompt(start, label == k, valid)
        results[start, k] = {"dice": [], "clicks": [] if first is None else [[first.x, first.y, True]]}
    for step in range(interactions):
        if not runs:
            break
        predictions = segment([{k: prompts[start, k]} for start, k in runs])
        for (start, k), prediction in zip(runs, predictions):
            reference, mask = label == k, prediction == k
            results[start, k]["dice"].append(dice(mask, reference, valid))
            click = error_click(mask, reference, valid) if step + 1 < interactions else None
            if click is not None:
                prompts[start, k] = prompts[start, k].with_point((float(click.x), float(click.y)), click.positive)
                results[start, k]["clicks"].append([click.x, click.y, click.positive])
            elif step + 1 < interactions:  # nothing left to correct: the prompt stays, Dice is final
                results[start, k]["clicks"].append(None)
    return results


def network_segmenter(network, image: torch.Tensor) -> Segment:
    """``image`` (C, H, W); each call segments it once per prompt set (one batch) and takes the argmax."""

    def segment(prompts: list[ImagePrompts]) -> np.ndarray:
        with torch.no_grad():
            logits = network(image[None].expand(len(prompts), -1, -1, -1), prompts)
        return logits.argmax(1).cpu().numpy()

    return segment


def evaluate_case(network, data: np.ndarray, seg: np.ndarray, device: torch.device,
                  ignore_label: int | None = None, starts: tuple[str, ...] = STARTS,
                  interactions: int = INTERACTIONS) -> dict[str, dict[str, dict]]:
    """A preprocessed case (data (C, Z, H, W), seg (1, Z, H, W)): start -> class -> Dice after each interaction
    (the mean over the slices holding the class) and the slices used."""
    seg = np.where(seg[0] < 0, 0, seg[0]).astype(np.int64)  # nnU-Net marks outside the non-zero mask with -1
    classes = sorted(int(k) for k in np.unique(seg) if k > 0 and k != ignore_label)
    collected: dict[tuple[str, int], list[list[float]]] = {}
    for z in range(seg.shape[0]):
        present = [k for k in classes if (seg[z] == k).any()]
        if not present:
            continue
        image = torch.from_numpy(np.ascontiguousarray(data[:, z])).float().to(device)
        results = simulate(network_segmenter(network, image), seg[z], present, starts, interactions, ignore_label)
        for key, result in results.items():
            collected.setdefault(key, []).append(result["dice"])
    return {start: {str(k): {"dice": np.mean(collected[start, k], axis=0).tolist(), "slices": len(collected[start, k])}
                    for k in classes if (start, k) in collected} for start in starts}


def evaluate_fold(fold_folder: Path, network, preprocessed: Path, val_cases: list[str], device: torch.device,
                  ignore_label: int | None = None) -> Path:
    """Every validation case of a fold through the click loop; written to ``fold_X/interactive.json``."""
    dataset = infer_dataset_class(str(preprocessed))(str(preprocessed), val_cases)
    network.to(device).eval()
    cases = []
    for case in tqdm(val_cases, desc=f"interactive evaluation, {fold_folder.name}", unit="case"):
        data, seg, _, _ = dataset.load_case(case)
        cases.append({"case": case, "starts": evaluate_case(network, np.asarray(data), np.asarray(seg), device,
                                                            ignore_label)})
    path = fold_folder / RESULT_FILE
    atomic_write_json({"starts": list(STARTS), "interactions": INTERACTIONS, "prompt_mode": network.prompt_mode,
                       "geometry": "preprocessed", "cases": cases}, path)
    log.info("interactive evaluation of %s: %d cases -> %s", fold_folder.name, len(cases), path)
    return path


def evaluate_folds(dataset: Dataset, folds: list[int], device: torch.device) -> list[Path]:
    """The prompted SAM model's folds (``autosam run`` with ``--prompts``); a fold already evaluated after its
    final checkpoint was written is kept."""
    model = Model.for_setup(None)
    folder = model.folder(dataset)
    preprocessed_base = dataset.preprocessed
    splits = json.loads((preprocessed_base / "splits_final.json").read_text())
    ignore = json.loads((folder / "dataset.json").read_text())["labels"].get("ignore")
    written = []
    for fold in folds:
        sam_fold = SamFold(folder, model.trainer, model.configuration, str(fold))
        result = folder / f"fold_{fold}" / RESULT_FILE
        if result.is_file() and result.stat().st_mtime >= sam_fold.path.stat().st_mtime:
            written.append(result)
            continue
        network, _ = sam_fold.network()
        preprocessed = preprocessed_base / sam_fold.data
        written.append(evaluate_fold(folder / f"fold_{fold}", network, preprocessed, splits[fold]["val"], device,
                                     ignore))
    return written

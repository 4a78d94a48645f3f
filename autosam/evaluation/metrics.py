"""Per-case, per-label segmentation metrics computed by MONAI: Dice, normalised surface distance, HD95.

Empty masks are scored by the rules in ``conventions`` (the same for every method); distances are in the
image's physical units (mm for medical formats, pixels for PNG).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

from autosam.evaluation.conventions import NSD_TOLERANCE, empty_scores, worst_distance


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    m = torch.from_numpy(mask.astype(bool))
    return torch.stack([~m, m])[None].float()  # (1, 2, *spatial): background, label


def case_metrics(reference: np.ndarray, prediction: np.ndarray, labels: dict[str, int],
                 spacing: tuple[float, ...], tolerance: float = NSD_TOLERANCE,
                 ignore: int | None = None) -> dict[str, dict]:
    """``reference``/``prediction``: integer label maps of the same shape; ``spacing`` per axis; ``labels``:
    the foreground labels to score; pixels labelled ``ignore`` in the reference count for none. Besides the
    scores, each label's voxel counts ``tp``, ``fp`` and ``fn``."""
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} differ in shape")
    if ignore is not None:
        unscored = reference == ignore
        reference, prediction = np.where(unscored, 0, reference), np.where(unscored, 0, prediction)
    keep = [i for i, n in enumerate(reference.shape) if n > 1]  # 2D images drop their singleton axis
    drop = tuple(i for i in range(reference.ndim) if i not in keep)
    reference, prediction = reference.squeeze(drop), prediction.squeeze(drop)
    spacing = [float(spacing[i]) for i in keep]
    diagonal = worst_distance(reference.shape, spacing)
    out = {}
    for name, value in labels.items():
        if value == 0:
            continue
        ref, pred = reference == value, prediction == value
        empty = {(False, False): "both", (False, True): "reference", (True, False): "prediction"}.get(
            (bool(ref.any()), bool(pred.any())))  # which side lacks the label: None, "both", "reference", ...
        counts = {"tp": int(np.count_nonzero(ref & pred)), "fp": int(np.count_nonzero(~ref & pred)),
                  "fn": int(np.count_nonzero(ref & ~pred))}  # summed over a patient's cases: its pooled Dice
        fixed = empty_scores(not ref.any(), not pred.any(), diagonal)
        if fixed is not None:
            out[name] = {**fixed, "empty": empty, **counts}
            continue
        y, y_pred = _one_hot(ref), _one_hot(pred)
        with warnings.catch_warnings():  # MONAI's own internal call to a deprecated argument, once per case
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            out[name] = {
                "dice": float(compute_dice(y_pred, y, include_background=False)[0, 0]),
                "nsd": float(compute_surface_dice(y_pred, y, [tolerance], spacing=spacing)[0, 0]),
                "hd95": float(compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing)[0, 0]),
                "empty": None, **counts,
            }
    return out

"""Per-case, per-label segmentation metrics computed by MONAI: Dice, normalised surface distance, HD95.

Conventions (as nnU-Net's evaluation): a label absent from both reference and prediction has no score (NaN)
and is left out of means; absent from one of them gives Dice 0 and NSD 0, and no HD95 (undefined).
Distances are in the image's physical units (mm for medical formats, pixels for PNG).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

NSD_TOLERANCE = 2.0  # mm (or pixels), the boundary tolerance of the normalised surface distance


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    m = torch.from_numpy(mask.astype(bool))
    return torch.stack([~m, m])[None].float()  # (1, 2, *spatial): background, label


def case_metrics(reference: np.ndarray, prediction: np.ndarray, labels: dict[str, int],
                 spacing: tuple[float, ...], tolerance: float = NSD_TOLERANCE) -> dict[str, dict[str, float]]:
    """``reference``/``prediction``: integer label maps of the same shape; ``spacing`` per axis."""
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} differ in shape")
    keep = [i for i, n in enumerate(reference.shape) if n > 1]  # 2D images drop their singleton axis
    drop = tuple(i for i in range(reference.ndim) if i not in keep)
    reference, prediction = reference.squeeze(drop), prediction.squeeze(drop)
    spacing = [float(spacing[i]) for i in keep]
    out = {}
    for name, value in labels.items():
        if value == 0:
            continue
        ref, pred = reference == value, prediction == value
        if not ref.any() and not pred.any():
            out[name] = {"dice": math.nan, "nsd": math.nan, "hd95": math.nan}
            continue
        if not ref.any() or not pred.any():
            out[name] = {"dice": 0.0, "nsd": 0.0, "hd95": math.nan}
            continue
        y, y_pred = _one_hot(ref), _one_hot(pred)
        out[name] = {
            "dice": float(compute_dice(y_pred, y, include_background=False)[0, 0]),
            "nsd": float(compute_surface_dice(y_pred, y, [tolerance], spacing=spacing)[0, 0]),
            "hd95": float(compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing)[0, 0]),
        }
    return out

"""Box and point prompts derived from a reference label map, one object per class present.

Independent of the trainer (numpy in, plain records out), so training, interactive evaluation and later
prompt pretraining on other datasets derive prompts the same way. Coordinates are pixel indices of the label
map: ``x`` the column, ``y`` the row (segment-anything's order); a box is ``(x0, y0, x1, y1)`` with both
corners inside the object's extent (inclusive). Randomness comes from a ``numpy.random.Generator`` the caller
passes; ``generator_from_torch`` derives one from torch's global generator, which nnU-Net's training seeds and
autosam's fold checkpoints save, so prompts are reproduced on a rerun and across ``--continue``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autosam.errors import AutosamError

MODES = ("box", "point", "box+point")
BOX_JITTER = 0.1  # each side moves outward by up to this share of the box's extent along its axis
MAX_POSITIVE, MAX_NEGATIVE = 3, 2  # points per object when training: 1..3 inside, 0..2 outside


@dataclass(frozen=True)
class Prompt:
    """One object's prompt: a box, points (``labels``: 1 inside the object, 0 outside), or both."""

    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.box is None and not self.points:
            raise ValueError("a prompt needs a box or at least one point")
        if len(self.points) != len(self.labels):
            raise ValueError(f"{len(self.points)} points but {len(self.labels)} labels")

    def with_point(self, point: tuple[float, float], positive: bool) -> "Prompt":
        return Prompt(self.box, self.points + (point,), self.labels + (int(positive),))


ImagePrompts = dict[int, Prompt]  # class id (>= 1) -> that class's prompt


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise AutosamError(f"unknown prompt mode '{mode}': use one of {', '.join(MODES)}")
    return mode


def generator_from_torch() -> np.random.Generator:
    """A numpy generator seeded from torch's global generator (one draw; advances it)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``, inclusive, of a non-empty 2D mask."""
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def jittered_box(mask: np.ndarray, rng: np.random.Generator, jitter: float = BOX_JITTER) -> tuple[float, ...]:
    """The mask's bounding box, each side moved outward by up to ``jitter`` of the box's width (x sides) or
    height (y sides), clipped to the image: it always contains the object, as a user's box does."""
    x0, y0, x1, y1 = bounding_box(mask)
    width, height = x1 - x0 + 1, y1 - y0 + 1
    dx0, dy0, dx1, dy1 = rng.uniform(0, jitter, 4) * (width, height, width, height)
    rows, cols = mask.shape
    return (max(0.0, x0 - dx0), max(0.0, y0 - dy0), min(cols - 1.0, x1 + dx1), min(rows - 1.0, y1 + dy1))


def sample_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> tuple[tuple[float, float], ...]:
    """``count`` distinct pixels of ``mask`` (fewer if it has fewer), as ``(x, y)``."""
    flat = np.flatnonzero(mask)
    picks = rng.choice(flat, size=min(count, flat.size), replace=False) if count else flat[:0]
    rows, cols = np.unravel_index(picks, mask.shape)
    return tuple((float(c), float(r)) for r, c in zip(rows, cols))


def object_prompt(mask: np.ndarray, kind: str, rng: np.random.Generator, outside: np.ndarray | None = None,
                  max_positive: int = MAX_POSITIVE, max_negative: int = MAX_NEGATIVE) -> Prompt:
    """A prompt for one object. ``kind``: ``box``, ``point`` or ``box+point`` (box and points). Points:
    1..max_positive inside ``mask``, 0..max_negative in ``outside`` (default: everywhere else)."""
    box = jittered_box(mask, rng) if kind in ("box", "box+point") else None
    if kind == "box":
        return Prompt(box)
    outside = ~mask if outside is None else outside
    positive = sample_points(mask, int(rng.integers(1, max_positive + 1)), rng)
    negative = sample_points(outside, int(rng.integers(0, max_negative + 1)), rng)
    return Prompt(box, positive + negative, (1,) * len(positive) + (0,) * len(negative))


def image_prompts(label: np.ndarray, mode: str, rng: np.random.Generator, ignore_label: int | None = None,
                  max_positive: int = MAX_POSITIVE, max_negative: int = MAX_NEGATIVE) -> ImagePrompts:
    """One prompt per class present in the 2D label map ``label``. ``box+point`` draws, per object, a box,
    points, or both (equally likely), so a model trained with it takes any of the three."""
    check_mode(mode)
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"expected a 2D label map, got shape {label.shape}")
    valid = label != ignore_label if ignore_label is not None else np.ones(label.shape, bool)
    prompts = {}
    for k in np.unique(label[valid]).astype(int):
        if k <= 0:
            continue
        mask = label == k
        kind = mode if mode != "box+point" else ("box", "point", "box+point")[int(rng.integers(3))]
        prompts[int(k)] = object_prompt(mask, kind, rng, valid & ~mask, max_positive, max_negative)
    return prompts


def batch_prompts(target: torch.Tensor | np.ndarray, mode: str, rng: np.random.Generator,
                  ignore_label: int | None = None, share: float = 1.0) -> list[ImagePrompts]:
    """Prompts for each image of an nnU-Net target batch ``(B, 1, H, W)``. Each image is prompted with
    probability ``share`` (its present classes), else gets none: it then trains the promptless path."""
    target = target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
    if target.ndim != 4 or target.shape[1] != 1:
        raise ValueError(f"expected a (B, 1, H, W) target, got shape {target.shape}")
    return [image_prompts(np.rint(t[0]).astype(np.int64), mode, rng, ignore_label) if rng.random() < share else {}
            for t in target]

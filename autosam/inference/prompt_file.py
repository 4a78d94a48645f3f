"""The user's prompts file for ``autosam predict --prompts``: read, checked, and mapped into the network's input.

Format (JSON; coordinates are pixel indices of the input image, ``x`` the column and ``y`` the row)::

    {"<case id>": {"<class name or id>": {"box": [x0, y0, x1, y1],
                                          "points": [[x, y], ...], "labels": [1, 0, ...]}}}

A class takes a box, points or both; ``labels`` (1: inside the object, 0: outside) defaults to all 1. The case
id is the input file's name without ``_0000`` and the ending. Every problem is one line that names the file.
Mapping follows nnU-Net's preprocessing (transpose, crop to the non-zero bounding box, resample): the case's
preprocessing properties give the crop and the shapes, so a pixel of the input lands on the same anatomy in the
preprocessed slice the network sees.
"""

from __future__ import annotations

import json
from pathlib import Path

from autosam.errors import AutosamError
from autosam.sam.prompts import ImagePrompts, Prompt


def _number_list(value, length: int | None) -> bool:
    return (isinstance(value, list) and (length is None or len(value) == length)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def read_prompt_file(path: Path, image_sizes: dict[str, tuple[int, int]], labels: dict[str, int]
                     ) -> dict[str, ImagePrompts]:
    """``image_sizes``: case -> (height, width) of each input image; ``labels``: the dataset's class names ->
    ids (background excluded). Returns case -> class id -> ``Prompt`` in input pixels."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AutosamError(f"{path}: no such prompts file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AutosamError(f"{path}: not valid JSON ({e}); see the README for the prompts format") from None
    if not isinstance(data, dict):
        raise AutosamError(f"{path}: expected an object {{case: {{class: {{box, points, labels}}}}}}, got "
                           f"{type(data).__name__}")
    ids = {str(v): v for v in labels.values()}
    result = {}
    for case, per_class in data.items():
        if case not in image_sizes:
            known = ", ".join(sorted(image_sizes)[:5]) + (", ..." if len(image_sizes) > 5 else "")
            raise AutosamError(f"{path}: unknown image '{case}': the input folder has no {case}_0000 file "
                               f"(its cases: {known})")
        if not isinstance(per_class, dict) or not per_class:
            raise AutosamError(f"{path}: '{case}' must map class names or ids to prompts")
        height, width = image_sizes[case]
        result[case] = {}
        for name, spec in per_class.items():
            k = labels.get(name, ids.get(name))
            if k is None:
                raise AutosamError(f"{path}: '{case}': unknown class '{name}'; the model segments "
                                   + ", ".join(f"{n} ({v})" for n, v in labels.items()))
            where = f"{path}: '{case}' class '{name}'"
            result[case][k] = _prompt(spec, where, height, width)
    return result


def _prompt(spec, where: str, height: int, width: int) -> Prompt:
    if not isinstance(spec, dict) or not set(spec) <= {"box", "points", "labels"} or not spec.keys() & {"box", "points"}:
        raise AutosamError(f"{where}: expected {{\"box\": [x0, y0, x1, y1]}} and/or {{\"points\": [[x, y], ...], "
                           "\"labels\": [1, 0, ...]}")

    def inside(x: float, y: float) -> bool:
        return 0 <= x <= width - 1 and 0 <= y <= height - 1

    box = spec.get("box")
    if box is not None:
        if not _number_list(box, 4) or box[0] > box[2] or box[1] > box[3]:
            raise AutosamError(f"{where}: box must be [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1, got {box}")
        if not (inside(box[0], box[1]) and inside(box[2], box[3])):
            raise AutosamError(f"{where}: box {box} lies outside the image ({width} x {height} pixels: x in "
                               f"0..{width - 1}, y in 0..{height - 1})")
        box = tuple(float(v) for v in box)
    points = spec.get("points", [])
    if not isinstance(points, list) or not all(_number_list(p, 2) for p in points):
        raise AutosamError(f"{where}: points must be a list of [x, y], got {points}")
    labels = spec.get("labels", [1] * len(points))
    if not isinstance(labels, list) or len(labels) != len(points) or any(v not in (0, 1) for v in labels):
        raise AutosamError(f"{where}: labels must hold one 1 (inside) or 0 (outside) per point, got {labels}")
    for x, y in points:
        if not inside(x, y):
            raise AutosamError(f"{where}: point [{x}, {y}] lies outside the image ({width} x {height} pixels)")
    if box is None and not points:
        raise AutosamError(f"{where}: give a box or at least one point")
    return Prompt(box, tuple((float(x), float(y)) for x, y in points), tuple(int(v) for v in labels))


def to_preprocessed(prompt: Prompt, properties: dict, shape: tuple[int, ...], transpose_forward: list[int]) -> Prompt:
    """Input-pixel prompt -> the preprocessed slice's pixels (``shape``: (1, H, W), the preprocessed data's
    spatial shape), by nnU-Net's transpose, crop and resampling; points outside the crop are clipped to it."""
    bbox = properties["bbox_used_for_cropping"]
    cropped = properties["shape_after_cropping_and_before_resampling"]

    def mapped(x: float, y: float) -> tuple[float, float]:
        index = [0.0, y, x]  # the 2D image as nnU-Net reads it: (1, rows, columns)
        index = [index[axis] for axis in transpose_forward]
        out = [min(max((index[a] - bbox[a][0] + 0.5) * shape[a] / cropped[a] - 0.5, 0.0), shape[a] - 1.0)
               for a in range(3)]
        return out[2], out[1]

    box = None
    if prompt.box is not None:
        box = mapped(*prompt.box[:2]) + mapped(*prompt.box[2:])
    return Prompt(box, tuple(mapped(x, y) for x, y in prompt.points), prompt.labels)

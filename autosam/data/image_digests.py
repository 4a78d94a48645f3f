"""A digest of each image's decoded pixels, so that a copy of an image is recognised whatever its file.

"The same image" means the same pixel values on the same grid, as nnU-Net's reader for the file decodes them
(the reader training uses): each channel of ``reader.read_images([file])`` — shape (C, Z, Y, X), float32 — with
its singleton axes dropped (a PNG's (1, 1, H, W) and a 2D NIfTI's (1, H, W) both become (H, W)), its values as
little-endian float32 with -0.0 read as 0.0, hashed with sha256 together with its shape. So renaming a file,
re-encoding it losslessly (PNG to NIfTI, .nii to .nii.gz or .mha, uint8 to int16 or float32), or changing its
header (spacing, origin, direction) keeps its digest. Any change of a pixel value or of the grid makes another
image: windowing, rescaling, resampling, cropping, flipping or transposing, lossy compression, a 2D slice cut from
a volume. A channel holding a single value (an empty slice or mask) has no digest: blank images of one size would
all look alike.

Digesting a dataset reads every image once; the digests are cached per file (keyed by its size and modification
time) in a JSON file the caller names (autosam keeps one in the dataset's ``nnUNet_preprocessed`` folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from tqdm import tqdm

from autosam.errors import AutosamError
from autosam.files import atomic_write_json

log = logging.getLogger(__name__)
DIGEST_CACHE = "autosam_image_digests.json"
CACHE_FORMAT = 1


def channel_digest(channel: np.ndarray) -> str | None:
    """sha256 of one channel's canonical pixels (module docstring); None for a constant channel."""
    pixels = np.ascontiguousarray(np.squeeze(channel), dtype="<f4") + np.float32(0.0)  # -0.0 -> 0.0
    if pixels.size == 0 or np.ptp(pixels) == 0:
        return None
    digest = hashlib.sha256(repr(tuple(pixels.shape)).encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def image_digests(image: np.ndarray) -> list[str]:
    """The digests of an image's non-constant channels; ``image`` is (C, ...) as nnU-Net's readers return it."""
    return [d for d in (channel_digest(c) for c in image) if d is not None]


def file_digests(
    files: list[str],
    reader_class: type,
    cache_file: Path | None = None,
    root: Path | None = None,
    desc: str = "image digests",
) -> dict[str, list[str]]:
    """file -> the digests of the images it decodes to. ``cache_file``: reuse and record them there, keyed by the
    file's path relative to ``root`` (its name when no root is given), its size and its modification time."""
    cache = _read_cache(cache_file)
    found, todo = {}, []
    for file in files:
        stat = Path(file).stat()
        key = str(Path(file).relative_to(root)) if root else Path(file).name
        known = cache.get(key)
        if known and known["size"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
            found[file] = known["digests"]
        else:
            todo.append((file, key, stat))
    if todo:
        reader = reader_class()
        for file, key, stat in tqdm(todo, desc=desc, unit="file", leave=False, disable=len(todo) < 20):
            try:
                image, _ = reader.read_images([file])
            except Exception as e:  # noqa: BLE001 - readers raise anything from RuntimeError to IndexError
                raise AutosamError(
                    f"{file}: cannot be read as an image ({type(e).__name__}: {str(e)[:80]}); fix or remove the file"
                ) from None
            found[file] = image_digests(image)
            cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digests": found[file]}
        if cache_file is not None:
            atomic_write_json({"format_version": CACHE_FORMAT, "files": cache}, cache_file)
        log.info("%s: digested %d images (%d from the cache)", desc, len(todo), len(files) - len(todo))
    return found


def _read_cache(cache_file: Path | None) -> dict:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        data = json.loads(cache_file.read_text())
        return data["files"] if data.get("format_version") == CACHE_FORMAT else {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}  # a damaged cache is recomputed, never trusted


def dataset_digests(
    raw: Path, cache_folder: Path | None = None, folders: tuple[str, ...] = ("imagesTr",)
) -> dict[str, list[str]]:
    """Image file (relative to the raw dataset ``raw``) -> its digests, for every image file of ``folders``.
    ``cache_folder``: where the cache file lives (the dataset's nnUNet_preprocessed folder)."""
    meta = json.loads((raw / "dataset.json").read_text())
    ending = meta["file_ending"]
    files = sorted(
        str(p)
        for f in folders
        if (raw / f).is_dir()
        for p in (raw / f).iterdir()
        if p.is_file() and p.name.endswith(ending)
    )
    if not files:
        return {}
    reader = determine_reader_writer_from_dataset_json(meta, files[0], verbose=False)
    digests = file_digests(
        files, reader, cache_folder / DIGEST_CACHE if cache_folder else None, raw, f"image digests of {raw.name}"
    )
    return {str(Path(f).relative_to(raw)): d for f, d in digests.items()}

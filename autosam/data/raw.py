"""Image files as stored on disk, checked before any reader that could alter them runs.

nnU-Net reads images with SimpleITK, which turns NaN and ±Inf voxels of a NIfTI file into 0, pads a cut-short
``.nii.gz`` with zeros, reads a spacing of 0 as 1 and allocates whatever a header declares. Here each file is
looked at as stored: the size its header declares against what the file can hold and against a share of this
machine's memory (nothing is allocated before both pass), then its values from the raw array (NIfTI streamed
through nibabel in chunks, 2D images decoded by PIL or tifffile, other volumes by SimpleITK, which keeps
their NaN). Nothing is written.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import tifffile
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from nibabel.openers import Opener
from PIL import Image

MAX_IMAGE_GB_ENV = "AUTOSAM_MAX_IMAGE_GB"  # set by --max-image-gb
MEMORY_SHARE = 0.25  # of physical memory, for one image as float32 (nnU-Net's working type)
DEFLATE_MAX_RATIO = 1032  # deflate (gzip, PNG, MetaImage/NRRD compression) never expands a byte beyond this
CHUNK = 1 << 24  # bytes decompressed at a time when a NIfTI file is streamed
NIFTI_ENDINGS = (".nii.gz", ".nii")
TIFF_ENDINGS = (".tif", ".tiff")
PIL_ENDINGS = (".png", ".bmp")
UNREADABLE = "cannot be read: it is corrupt or not an image (or cut short); re-export it"
NON_FINITE = (
    "holds NaN or infinite values, which nnU-Net's reader turns into 0 (NIfTI) or passes into training; "
    "replace them in the file (e.g. by the image's minimum) and check the export that made it"
)


class StoredProblem(Exception):
    """What is wrong with a file as stored: ``message`` is the same for every file with the cause (it holds the
    fix), ``detail`` what differs from file to file."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message, self.detail = message, detail


@dataclass(frozen=True)
class StoredImage:
    """What a file holds, as its header and data say."""

    shape: tuple[int, ...]  # spatial, as stored
    channels: int  # components per pixel (RGB: 3)
    dtype: str  # the stored type, e.g. uint8, uint16, float32
    mode: str | None = None  # PIL's mode for PNG/BMP ("L", "I;16", "P", "RGB", ...)
    oblique: bool = False  # direction not a permutation of the axes (fine: nnU-Net keeps it)


def memory_limit() -> int:
    """Bytes one image may take as float32: ``$AUTOSAM_MAX_IMAGE_GB`` (``--max-image-gb``) or a quarter of the
    machine's physical memory."""
    given = os.environ.get(MAX_IMAGE_GB_ENV)
    if given:
        return int(float(given) * 1e9)
    return int(MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _check_declared(
    shape: tuple[int, ...], channels: int, itemsize: int, file_size: int, exact_offset: int | None
) -> None:
    """Refuse a declaration the machine or the file cannot hold. ``exact_offset``: the data's start in an
    uncompressed file (the file must then hold every byte), None when the data may be deflate-compressed."""
    if any(n < 1 for n in shape) or channels < 1:
        raise StoredProblem(
            "header declares an empty or negative dimension; re-export the image", f"shape {tuple(shape)}"
        )
    voxels = math.prod(shape) * channels
    limit = memory_limit()
    if voxels * 4 > limit:
        source = "--max-image-gb" if os.environ.get(MAX_IMAGE_GB_ENV) else "a quarter of this machine's memory"
        raise StoredProblem(
            f"header declares more voxels than the limit of {limit / 1e9:.3g} GB as float32 ({source}"
            "); if the image is genuine, raise it with --max-image-gb GB, else re-export the file",
            f"{' x '.join(map(str, shape))} x {channels} channel(s), {voxels * 4 / 1e9:.3g} GB",
        )
    stored = voxels * itemsize
    if exact_offset is not None and exact_offset + stored > file_size:
        raise StoredProblem(
            "holds fewer bytes than its header declares: cut short (an interrupted copy?); copy or export it again",
            f"{file_size} of {exact_offset + stored} bytes",
        )
    if exact_offset is None and stored > DEFLATE_MAX_RATIO * file_size:
        raise StoredProblem(
            "header declares more data than the file can hold even compressed: the header is "
            "wrong or the file cut short; export it again",
            f"{stored} bytes declared in {file_size} bytes",
        )


def _non_finite(counts: tuple[int, int]) -> None:
    nan, inf = counts
    if nan or inf:
        raise StoredProblem(NON_FINITE, ", ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n))


def _count_non_finite(array: np.ndarray) -> tuple[int, int]:
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.complexfloating):
        return 0, 0
    return int(np.isnan(array).sum()), int(np.isinf(array).sum())


def _nifti_header(path: Path) -> Nifti1Header:
    """The header as stored (nibabel's loader would correct pixdim and other fields on the way)."""
    with Opener(str(path)) as f:
        head = f.read(4)
    size = int.from_bytes(head, "little") if len(head) == 4 else 0
    swapped = int.from_bytes(head, "big") if len(head) == 4 else 0
    klass = Nifti2Header if 540 in (size, swapped) else Nifti1Header
    if klass.sizeof_hdr not in (size, swapped):
        raise StoredProblem("is not a NIfTI file (no NIfTI header); re-export it", f"header size {size}")
    with Opener(str(path)) as f:
        return klass.from_fileobj(f, check=False)


def _nifti_chunks(path: Path, offset: int, length: int, itemsize: int) -> Iterator[bytes]:
    with Opener(str(path)) as f:
        f.seek(offset)
        left = length
        step = CHUNK - CHUNK % itemsize
        while left:
            block = f.read(min(step, left))
            if not block:
                return
            left -= len(block)
            yield block


def _read_nifti(path: Path) -> StoredImage:
    header = _nifti_header(path)
    ndim = int(header["dim"][0])
    if not 1 <= ndim <= 7:
        raise StoredProblem("header's dim[0] is not 1 to 7: not a valid NIfTI header; re-export it", f"dim {ndim}")
    shape = tuple(int(n) for n in header["dim"][1 : ndim + 1])
    dtype = header.get_data_dtype()
    offset = int(header.get_data_offset())
    compressed = path.name.endswith(".gz")
    _check_declared(shape, 1, dtype.itemsize, path.stat().st_size, None if compressed else offset)
    spacing = [float(f"{v:.6g}") for v in header["pixdim"][1 : min(ndim, 3) + 1]]
    if any(not v > 0 for v in spacing):  # also NaN
        raise StoredProblem(
            "spacing (pixdim) of 0 or below, which SimpleITK silently reads as 1 or its absolute "
            "value; write the voxel size in mm into the header (nibabel: header.set_zooms)",
            f"pixdim {spacing}",
        )
    length = math.prod(shape) * dtype.itemsize
    got, nan, inf = 0, 0, 0
    remainder = b""
    try:
        for block in _nifti_chunks(path, offset, length, dtype.itemsize):
            got += len(block)
            data = remainder + block
            usable = len(data) - len(data) % dtype.itemsize
            values = np.frombuffer(data[:usable], dtype=dtype)
            counts = _count_non_finite(values)
            nan, inf = nan + counts[0], inf + counts[1]
            remainder = data[usable:]
    except (EOFError, zlib.error, OSError) as e:  # gzip: cut short or CRC mismatch
        raise StoredProblem(
            "is cut short or corrupt (an interrupted copy?): SimpleITK would pad it with zeros; "
            "copy or export it again",
            type(e).__name__,
        ) from None
    if got < length:
        raise StoredProblem(
            "is cut short or corrupt (an interrupted copy?): SimpleITK would pad it with zeros; "
            "copy or export it again",
            f"{got} of {length} data bytes",
        )
    _non_finite((nan, inf))
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    if math.isinf(slope) or (slope and math.isfinite(slope) and not math.isfinite(inter)):  # 0 or NaN: unscaled
        raise StoredProblem(
            "header scales the values by an infinite scl_slope or scl_inter; re-export it",
            f"scl_slope {slope}, scl_inter {inter}",
        )
    affine = header.get_best_affine()[:3, :3]
    return StoredImage(shape, 1, str(dtype), oblique=_oblique(affine))


def _oblique(matrix: np.ndarray) -> bool:
    """Whether the axes are rotated against the world's, not just permuted or flipped."""
    norms = np.linalg.norm(matrix, axis=0)
    directions = matrix / np.where(norms > 0, norms, 1)
    return bool(np.any(np.abs(np.abs(directions) - np.round(np.abs(directions))) > 1e-3))


def _read_pil(path: Path) -> StoredImage:
    bomb = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit below is checked before decoding; PIL's stops at open
    try:
        with Image.open(path) as image:
            width, height = image.size
            bands = len(image.getbands())
            itemsize = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}.get(image.mode, 1)
            _check_declared((height, width), bands, itemsize, path.stat().st_size, None)
            image.load()
            mode = image.mode
            array = np.asarray(image) if mode == "F" else None
    except StoredProblem:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises anything from OSError to SyntaxError on a bad file
        raise StoredProblem(UNREADABLE, type(e).__name__) from None
    finally:
        Image.MAX_IMAGE_PIXELS = bomb
    if array is not None:
        _non_finite(_count_non_finite(array))
    dtype = {"I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16", "I": "int32", "F": "float32", "1": "bool"}
    return StoredImage((height, width), bands, dtype.get(mode, "uint8"), mode)


def _read_tiff(path: Path) -> StoredImage:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.pages[0]
            samples = int(getattr(page, "samplesperpixel", 1))
            shape = tuple(int(n) for n in series.shape)
            spatial = shape[:-1] if samples > 1 and shape[-1] == samples else shape
            uncompressed = int(page.compression) == 1 and len(series.pages) == 1
            offset = int(page.dataoffsets[0]) if uncompressed and len(page.dataoffsets) == 1 else None
            # a compressed TIFF may use codecs beyond deflate's ratio: only the memory limit holds it
            _check_declared(
                spatial, samples, series.dtype.itemsize, path.stat().st_size if offset is not None else 1 << 62, offset
            )
            array = tif.asarray()
    except StoredProblem:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises many types on a bad file
        raise StoredProblem(UNREADABLE, type(e).__name__) from None
    _non_finite(_count_non_finite(array))
    return StoredImage(spatial, samples, str(array.dtype))


def _read_sitk(path: Path) -> StoredImage:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise StoredProblem(UNREADABLE, "header") from None
    shape = tuple(reversed(reader.GetSize()))
    channels = reader.GetNumberOfComponents()
    itemsize = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    _check_declared(shape, channels, itemsize, path.stat().st_size, None)
    spacing = [float(v) for v in reader.GetSpacing()]
    if any(not v > 0 for v in spacing):
        raise StoredProblem(
            "spacing of 0 or below in the header; write the voxel size in mm into it", f"spacing {spacing}"
        )
    try:
        image = reader.Execute()  # kept in a name: the array below is a view of its memory
    except RuntimeError:
        raise StoredProblem("cannot be read: it is corrupt or cut short; copy or export it again", "data") from None
    array = sitk.GetArrayViewFromImage(image)
    _non_finite(_count_non_finite(array))
    dimension = reader.GetDimension()
    direction = np.array(reader.GetDirection()).reshape(dimension, dimension)
    return StoredImage(shape, channels, str(array.dtype), oblique=_oblique(direction))


def read_stored(path: str | os.PathLike) -> StoredImage:
    """The file's shape, channels and stored type, after checking it as stored (declared size against the file
    and the memory limit before any allocation, every value finite); ``StoredProblem`` says what is wrong."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_ENDINGS):
        return _read_nifti(path)
    if name.endswith(PIL_ENDINGS):
        return _read_pil(path)
    if name.endswith(TIFF_ENDINGS):
        return _read_tiff(path)
    return _read_sitk(path)

"""Image files checked as stored: values from the raw array, declared sizes refused before any allocation, the
legitimate variants (16-bit PNG, oblique directions, float labels) accepted; nothing written."""

from __future__ import annotations

import gzip
import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from autosam.data.raw import MAX_IMAGE_GB_ENV, NON_FINITE, StoredProblem, read_stored

BOMB_SIDE = 32767  # the largest NIfTI-1 dimension


def _volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Written by nibabel: SimpleITK's writer would turn NaN into 0."""
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 3.0, 1.0]) if affine is None else affine), str(path))
    return path


def _patched_pixdim(path: Path, index: int, value: float) -> Path:
    """The stored header with pixdim[index] set as a scanner export could (nibabel's writer refuses it)."""
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[76 + 4 * index : 80 + 4 * index] = struct.pack("<f", value)
    path.write_bytes(gzip.compress(bytes(data)))
    return path


def _bomb(path: Path, shape: tuple[int, ...], dtype=np.uint8) -> Path:
    """A NIfTI-1 header declaring ``shape`` followed by 4 kB of zeros."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_data_offset(352)
    body = header.binaryblock + b"\0" * 4 + b"\0" * 4096
    path.write_bytes(gzip.compress(body) if path.name.endswith(".gz") else body)
    return path


def _problem(path: Path) -> StoredProblem:
    with pytest.raises(StoredProblem) as caught:
        read_stored(path)
    return caught.value


def test_nan_and_inf_are_counted_from_the_raw_array(tmp_path: Path) -> None:
    array = _volume()
    array[0, 0, :3] = np.nan
    array[1, 1, 1] = -np.inf
    path = _nifti(tmp_path / "nan.nii.gz", array)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).any()  # what nnU-Net's reader sees
    problem = _problem(path)
    assert (problem.message, problem.detail) == (NON_FINITE, "3 NaN, 1 Inf")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    tiff = tmp_path / "nan.tif"
    tifffile.imwrite(tiff, array[0])
    assert _problem(tiff).detail == "3 NaN"
    mha = tmp_path / "inf.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.where(np.isnan(array), 1, array)), str(mha))
    assert _problem(mha).detail == "1 Inf"


def test_truncated_files_are_refused_not_padded(tmp_path: Path) -> None:
    for name in ("cut.nii.gz", "cut.nii", "cut.mha", "cut.png"):
        path = tmp_path / name
        if name.endswith(".png"):
            Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(path)
        elif name.endswith(".mha"):
            sitk.WriteImage(sitk.GetImageFromArray(_volume()), str(path))
        else:
            _nifti(path, _volume())
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
        problem = _problem(path)
        assert "cut short" in problem.message, (name, problem.message)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cut.nii.gz"))).shape == (4, 5, 6)  # padded
    short = _bomb(tmp_path / "short.nii.gz", (200, 200))  # a whole gzip stream, shorter than its header says
    assert (_problem(short).detail, _problem(short).message.startswith("is cut short")) == (
        "4096 of 40000 data bytes",
        True,
    )


def test_declared_sizes_beyond_the_file_or_the_memory_limit_are_refused(tmp_path: Path, monkeypatch) -> None:
    assert "even compressed" in _problem(_bomb(tmp_path / "bomb.nii.gz", (BOMB_SIDE, BOMB_SIDE))).message
    assert "fewer bytes than its header declares" in _problem(_bomb(tmp_path / "bomb.nii", (BOMB_SIDE,) * 2)).message
    problem = _problem(_bomb(tmp_path / "huge.nii.gz", (BOMB_SIDE,) * 3))
    assert "limit" in problem.message and "--max-image-gb" in problem.message
    assert problem.detail.startswith(f"{BOMB_SIDE} x {BOMB_SIDE} x {BOMB_SIDE} x 1 channel(s)")
    image = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 200), np.uint16)).save(image)
    monkeypatch.setenv(MAX_IMAGE_GB_ENV, "0.0001")  # 100 kB; the image takes 240 kB as float32
    assert "limit of 0.0001 GB" in _problem(image).message
    monkeypatch.setenv(MAX_IMAGE_GB_ENV, "0.001")  # raised
    assert read_stored(image).shape == (300, 200)


CHILD = """
import resource, sys
from autosam.data.raw import StoredProblem, read_stored
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    try:
        read_stored(path)
    except StoredProblem as e:
        print(e.message[:40])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_refusing_a_bomb_allocates_nothing(tmp_path: Path) -> None:
    """Peak memory of a child process: SimpleITK would allocate 1 to 4 GB for these headers."""
    files = [
        _bomb(tmp_path / "a.nii.gz", (BOMB_SIDE,) * 2),
        _bomb(tmp_path / "b.nii", (BOMB_SIDE,) * 2),
        _bomb(tmp_path / "c.nii.gz", (BOMB_SIDE,) * 2, np.float32),
        _bomb(tmp_path / "d.nii.gz", (BOMB_SIDE,) * 3),
    ]
    digests = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, files)], capture_output=True, text=True, check=True)
    *refused, grown_kb = out.stdout.split("\n")[:-1]
    assert len(refused) == len(files), out.stdout + out.stderr
    assert int(grown_kb) < 32 * 1024, f"peak memory grew by {int(grown_kb) / 1024:.0f} MB"
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] == digests


def test_spacing_zero_or_negative_is_refused(tmp_path: Path) -> None:
    for value, name in ((0.0, "zero"), (-0.8, "negative")):
        path = _patched_pixdim(_nifti(tmp_path / f"{name}.nii.gz", _volume()), 2, value)
        problem = _problem(path)
        assert "spacing (pixdim) of 0 or below" in problem.message and str(value) in problem.detail
    assert sitk.ReadImage(str(tmp_path / "zero.nii.gz")).GetSpacing()[1] == 1.0  # what SimpleITK would use


def test_legitimate_variants_pass(tmp_path: Path) -> None:
    """16-bit and palette PNGs, an oblique volume, a label map stored as float with integer values."""
    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(np.full((8, 8), 60000, np.uint16)).save(sixteen)
    assert (read_stored(sixteen).dtype, read_stored(sixteen).channels) == ("uint16", 1)
    palette = tmp_path / "palette.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).convert("P").save(palette)
    assert read_stored(palette).mode == "P"  # a finding only where the channels disagree (autosam.data.checks)
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.8, 3.0])
    assert read_stored(_nifti(tmp_path / "oblique.nii.gz", _volume(), affine)).oblique
    assert not read_stored(_nifti(tmp_path / "straight.nii.gz", _volume())).oblique
    label = read_stored(_nifti(tmp_path / "label.nii.gz", np.round(np.abs(_volume())).astype(np.float32)))
    assert label.dtype == "float32"


def test_other_bytes_than_an_image(tmp_path: Path) -> None:
    for name, body in (
        ("text.nii.gz", gzip.compress(b"not an image " * 40)),
        ("text.png", b"not a png"),
        ("text.mha", b"ObjectType = Image\nNDims = two\n"),
        ("text.tif", b"II*\0garbage"),
    ):
        (tmp_path / name).write_bytes(body)
        problem = _problem(tmp_path / name)
        assert "re-export" in problem.message or "export it again" in problem.message, (name, problem.message)

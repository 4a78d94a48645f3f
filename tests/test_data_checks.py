"""Common dataset mistakes: one line per cause, with the count of files, two of them and the fix that names the
mistake; `autosam validate --all` names every file."""

from __future__ import annotations

import gzip
import json
import re
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from autosam.cli import main
from autosam.data.checks import PALETTE_IMAGE, PALETTE_LABEL, Finding, group
from autosam.data.raw import NON_FINITE
from autosam.experiments.demo import DEMO_DATA
from tests.conftest import case_ids, copy_subset, make_volumes

CASES = 12
NAME = "Dataset992_Findings"


def _demo(raw: Path) -> Path:
    return copy_subset(DEMO_DATA, raw, case_ids(DEMO_DATA)[:CASES], NAME)


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def _masks_0_255(raw: Path) -> list[Path]:
    labels = _files(_demo(raw) / "labelsTr")
    for path in labels:
        Image.fromarray(np.array(Image.open(path)) * 255).save(path)
    return labels


def _string_label_ids(raw: Path) -> list[Path]:
    path = _demo(raw) / "dataset.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "labels": {"background": "0", "lesion": "1"}}))
    return [path]


def _channel_declared_absent(raw: Path) -> list[Path]:
    folder = _demo(raw)
    path = folder / "dataset.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "channel_names": {"0": "US", "1": "Doppler"}}))
    return [p.with_name(p.name.replace("_0000", "_0001")) for p in _files(folder / "imagesTr")]


def _swap_contents(folder: Path, ending: str) -> list[Path]:
    """Each image written where its label belongs and the label where the image belongs, names kept."""
    labels = _files(folder / "labelsTr")
    for label in labels:
        image = folder / "imagesTr" / f"{label.name[: -len(ending)]}_0000{ending}"
        image_bytes = image.read_bytes()
        image.write_bytes(label.read_bytes())
        label.write_bytes(image_bytes)
    return labels


def _swapped_png(raw: Path) -> list[Path]:
    return _swap_contents(_demo(raw), ".png")


def _swapped_volumes(raw: Path) -> list[Path]:
    return _swap_contents(make_volumes(raw, NAME), ".mha")


def _swapped_folder_names(raw: Path) -> list[Path]:
    folder = _demo(raw)
    (folder / "imagesTr").rename(folder / "swap")
    (folder / "labelsTr").rename(folder / "imagesTr")
    (folder / "swap").rename(folder / "labelsTr")
    return _files(folder / "imagesTr")


def _jpeg_labels(raw: Path) -> list[Path]:
    jpegs = []
    for path in _files(_demo(raw) / "labelsTr"):
        Image.open(path).save(path.with_suffix(".jpg"), quality=90)
        path.unlink()
        jpegs.append(path.with_suffix(".jpg"))
    return jpegs


def _jpeg_named_png(raw: Path) -> list[Path]:
    labels = _files(_demo(raw) / "labelsTr")
    for path in labels:
        Image.open(path).save(path, format="JPEG", quality=90)
    return labels


def _nifti(raw: Path) -> Path:
    return make_volumes(raw, NAME, ".nii.gz")


def _edit_images(folder: Path, change: Callable[[np.ndarray], np.ndarray]) -> list[Path]:
    """Each NIfTI image rewritten by nibabel (SimpleITK's writer would zero NaN), its geometry kept."""
    images = _files(folder / "imagesTr")
    for path in images:
        image = nib.load(path)
        nib.save(nib.Nifti1Image(change(np.asarray(image.dataobj)), image.affine), path)
    return images


def _nan_nifti(raw: Path) -> list[Path]:
    return _edit_images(_nifti(raw), lambda a: np.where(a > 1.5, np.nan, a).astype(np.float32))


def _cut_short_nifti(raw: Path) -> list[Path]:
    images = _files(_nifti(raw) / "imagesTr")
    for path in images:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return images


def _spacing_zero(raw: Path) -> list[Path]:
    images = _files(_nifti(raw) / "imagesTr")
    for path in images:  # pixdim[1] = 0 in the stored header, as an export can leave it (nibabel refuses to)
        data = bytearray(gzip.decompress(path.read_bytes()))
        data[80:84] = struct.pack("<f", 0.0)
        path.write_bytes(gzip.compress(bytes(data)))
    return images


def _palette(folder: str) -> Callable[[Path], list[Path]]:
    def build(raw: Path) -> list[Path]:
        files = _files(_demo(raw) / folder)
        for path in files:
            Image.open(path).convert("P").save(path)
        return files

    return build


# cause: (break a dataset and return the files it touches, the count the line gives, the fix's key phrase)
CAUSES: dict[str, tuple[Callable[[Path], list[Path]], str, str]] = {
    "masks_0_255": (_masks_0_255, f"{CASES} files", "mask saved as 0/255; save it as 0/1 (divide by 255)"),
    "string_label_ids": (_string_label_ids, "2 label id(s)", 'write them as numbers: "background": 0, not '
                                                             '"background": "0"'),
    "channel_declared_absent": (_channel_declared_absent, f"{CASES} files",
                                "declare 1 channel(s) in channel_names or add the _0001 files"),
    "swapped_png": (_swapped_png, f"{CASES} files", "imagesTr and labelsTr look swapped; swap the files"),
    "swapped_volumes": (_swapped_volumes, "6 files", "imagesTr and labelsTr look swapped; swap the files"),
    "swapped_folder_names": (_swapped_folder_names, f"{CASES} files",
                             "imagesTr and labelsTr look swapped; swap the two folders"),
    "jpeg_labels": (_jpeg_labels, f"{CASES} files", "lossy compression"),
    "jpeg_named_png": (_jpeg_named_png, f"{CASES} files", "lossy compression"),
    "nan_nifti": (_nan_nifti, "6 files", NON_FINITE),
    "cut_short_nifti": (_cut_short_nifti, "6 files", "cut short or corrupt (an interrupted copy?)"),
    "spacing_zero": (_spacing_zero, "6 files", "spacing (pixdim) of 0 or below"),
    "palette_images": (_palette("imagesTr"), f"{CASES} files", PALETTE_IMAGE),
    "palette_labels": (_palette("labelsTr"), f"{CASES} files", PALETTE_LABEL),
}


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("autosam: error")]


def _names(line: str, path: Path) -> bool:
    """Whether ``line`` names ``path`` itself, not a longer path that starts with it."""
    return re.search(re.escape(str(path)) + r"(?=[:, ]|$)", line) is not None


@pytest.mark.parametrize("cause", CAUSES)
def test_one_line_per_cause_with_count_examples_and_fix(cause: str, nnunet_folders, capsys) -> None:
    build, count, fix = CAUSES[cause]
    touched = build(nnunet_folders["nnUNet_raw"])
    assert main(["validate", "-d", "992"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1, errors
    assert count in errors[0] and fix in errors[0], errors[0]
    assert sum(_names(errors[0], p) for p in touched) == min(2, len(touched)), errors[0]


@pytest.mark.parametrize("cause", CAUSES)
def test_all_names_every_file(cause: str, nnunet_folders, capsys) -> None:
    build, count, fix = CAUSES[cause]
    touched = build(nnunet_folders["nnUNet_raw"])
    assert main(["validate", "-d", "992", "--all"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1, errors
    assert fix in errors[0]
    assert [p for p in touched if not _names(errors[0], p)] == []


def test_grouping_keeps_each_files_detail_and_the_order_found() -> None:
    found = [Finding("error", "a.png", "holds ids; fix", "ids [2]"), Finding("warning", "b.png", "constant"),
             Finding("error", "c.png", "holds ids; fix", "ids [3]"), Finding("error", "d.png", "holds ids; fix")]
    grouped = group(found)
    assert [str(f) for f in grouped] == ["error: 3 files, e.g. a.png (ids [2]), c.png (ids [3]): holds ids; fix",
                                         "warning: b.png: constant"]
    assert grouped[0].line(every_file=True) == "error: 3 files: a.png (ids [2]), c.png (ids [3]), d.png: holds ids; fix"
    assert group(grouped) == grouped



def test_empty_labels_are_one_warning_naming_every_file_with_all(nnunet_folders, capsys) -> None:
    labels = _files(_demo(nnunet_folders["nnUNet_raw"]) / "labelsTr")
    for path in labels[:4]:
        Image.fromarray(np.zeros_like(np.array(Image.open(path)))).save(path)
    for flags, named in (([], 2), (["--all"], 4)):
        assert main(["validate", "-d", "992", *flags]) == 0
        warnings = [line for line in capsys.readouterr().out.splitlines() if "empty label map" in line]
        assert len(warnings) == 1 and "4 files" in warnings[0], warnings
        assert sum(_names(warnings[0], p) for p in labels[:4]) == named


def _oblique(raw: Path) -> None:
    folder = _nifti(raw)
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    for path in [*_files(folder / "imagesTr"), *_files(folder / "labelsTr")]:  # image and label rotated alike
        image = nib.load(path)
        affine = image.affine.copy()
        affine[:3, :3] = rotation @ affine[:3, :3]
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), path)


def _sixteen_bit(raw: Path) -> None:
    for path in _files(_demo(raw) / "imagesTr"):
        Image.fromarray(np.array(Image.open(path)).astype(np.uint16) * 257).save(path)


def _float_labels(raw: Path) -> None:
    for path in _files(_nifti(raw) / "labelsTr"):
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj).astype(np.float32), image.affine), path)


def _mixed_types(raw: Path) -> None:
    for path in _files(_demo(raw) / "imagesTr")[:3]:
        Image.fromarray(np.array(Image.open(path)).astype(np.uint16) * 257).save(path)


# what legitimate exports hold: accepted, with the warning (if any) each gets
LEGITIMATE: dict[str, tuple[Callable[[Path], None], str | None]] = {
    "oblique_direction": (_oblique, None),
    "sixteen_bit_png": (_sixteen_bit, None),
    "float_labels_with_integer_values": (_float_labels, None),
    "mixed_types": (_mixed_types, "3 files, e.g."),
}


@pytest.mark.parametrize("case", LEGITIMATE)
def test_legitimate_exports_pass(case: str, nnunet_folders, capsys) -> None:
    build, warned = LEGITIMATE[case]
    build(nnunet_folders["nnUNet_raw"])
    assert main(["validate", "-d", "992"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    typed = [line for line in out.splitlines() if "stores intensities as another type" in line]
    if warned is None:
        assert typed == [], out
    else:
        assert len(typed) == 1 and warned in typed[0], out


def test_independent_mistakes_are_reported_in_one_pass(nnunet_folders, capsys) -> None:
    folder = _demo(nnunet_folders["nnUNet_raw"])
    first, second, third = case_ids(folder)[:3]
    misnamed = folder / "imagesTr" / "hc18_1014.png"  # the image named as its label, no _0000: not channel 1014
    (folder / "imagesTr" / f"{first}_0000.png").rename(misnamed)
    (folder / "labelsTr" / f"{first}.png").rename(folder / "labelsTr" / "hc18_1014.png")
    label = folder / "labelsTr" / f"{second}.png"
    Image.fromarray(np.array(Image.open(label)) * 255).save(label)
    image = folder / "imagesTr" / f"{third}_0000.png"
    Image.open(image).convert("RGBA").save(image)
    assert main(["validate", "-d", "992"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 3, errors
    assert _names(errors[0], misnamed) and "rename it hc18_1014_0000.png" in errors[0]
    assert not any("has no image" in e for e in errors)
    assert any(_names(e, label) and "0/255" in e for e in errors)
    assert any(_names(e, image) and "alpha channel" in e for e in errors)

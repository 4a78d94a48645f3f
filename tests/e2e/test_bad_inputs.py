"""Broken inputs: `autosam run` stops at once on a broken dataset, `autosam predict` on a broken input folder and
`autosam pretrain --images` on a broken image, each with one line per cause naming the file and the fix; inputs
untouched, nothing written."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from autosam.cli import main
from autosam.experiments.demo import DEMO_DATA
from tests.conftest import case_ids, copy_subset, make_volumes

PNG, NII, NIFTI = "Dataset990_BadPNG", "Dataset991_BadVolumes", "Dataset993_BadNifti"


def _edit_json(folder: Path, change: Callable[[dict], None]) -> Path:
    path = folder / "dataset.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    return path


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)


def _nii_edit(path: Path, change: Callable[[sitk.Image], sitk.Image]) -> Path:
    sitk.WriteImage(change(sitk.ReadImage(str(path))), str(path))
    return path


def _with_array(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    new = sitk.GetImageFromArray(array)
    new.CopyInformation(image)
    return new


def _img(f: Path, i: int = 0) -> Path:
    return sorted((f / "imagesTr").iterdir())[i]


def _lab(f: Path, i: int = 0) -> Path:
    return sorted((f / "labelsTr").iterdir())[i]


def _truncate(path: Path, size: int) -> Path:
    path.write_bytes(path.read_bytes()[:size])
    return path


def _second_channel_missing_one(f: Path) -> Path:
    _edit_json(f, lambda m: m.update(channel_names={"0": "US", "1": "US2"}))
    paths = sorted((f / "imagesTr").glob("*_0000.png"))
    for path in paths[1:]:
        shutil.copy(path, path.with_name(path.name.replace("_0000", "_0001")))
    return paths[0].with_name(paths[0].name.replace("_0000", "_0001"))


def _collide(f: Path) -> Path:
    image, label = _img(f), _lab(f)
    upper = image.with_name(image.name.upper().replace(".PNG", ".png"))
    shutil.copy(image, upper)
    shutil.copy(label, label.with_name(label.stem.upper() + ".png"))
    _edit_json(f, lambda m: m.update(numTraining=m["numTraining"] + 1))
    return upper


def _drop_cases(f: Path) -> Path:
    for path in sorted((f / "labelsTr").iterdir())[3:]:
        path.unlink()
        (f / "imagesTr" / f"{path.stem}_0000.png").unlink()
    _edit_json(f, lambda m: m.update(numTraining=3))
    return f / "labelsTr"


def _empty_labels(f: Path) -> Path:
    for path in (f / "labelsTr").iterdir():
        _png(path, np.zeros_like(np.array(Image.open(path))))
    return f / "labelsTr"


def _duplicate_id(f: Path) -> Path:
    shutil.copytree(f, f.with_name("Dataset990_Twin"))
    return f.parent


# case: (break the dataset and return the file the error must name, the phrase of the check that must fire)
PNG_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "dataset_json_missing": (lambda f: (f / "dataset.json").unlink() or f / "dataset.json",
                             "missing; write it as nnU-Net's generate_dataset_json does"),
    "dataset_json_not_json": (lambda f: (f / "dataset.json").write_text("{labels: ") and f / "dataset.json",
                              "is not valid JSON"),
    "dataset_json_a_list": (lambda f: (f / "dataset.json").write_text("[1, 2]") and f / "dataset.json",
                            "must be a JSON object"),
    "no_labels_field": (lambda f: _edit_json(f, lambda m: m.pop("labels")), "missing field(s) labels;"),
    "no_file_ending": (lambda f: _edit_json(f, lambda m: m.pop("file_ending")), "missing field(s) file_ending;"),
    "no_channel_names": (lambda f: _edit_json(f, lambda m: m.pop("channel_names")),
                         "missing field(s) channel_names;"),
    "no_background": (lambda f: _edit_json(f, lambda m: m.update(labels={"lesion": 1})),
                      'labels must map names to ids with "background": 0'),
    "label_ids_not_consecutive": (lambda f: _edit_json(f, lambda m: m.update(labels={"background": 0, "lesion": 2})),
                                  "label ids [0, 2] must be consecutive from 0"),
    "label_ids_not_integers": (lambda f: _edit_json(f, lambda m: m.update(labels={"background": 0, "lesion": 1.5})),
                               "label ids must be integers"),
    "shared_label_id": (lambda f: _edit_json(f, lambda m: m.update(labels={"background": 0, "a": 1, "b": 1})),
                        "two labels share an id"),
    "num_training_wrong": (lambda f: _edit_json(f, lambda m: m.update(numTraining=99)),
                           "numTraining is 99 but labelsTr holds 6 cases"),
    "jpeg_ending": (lambda f: _edit_json(f, lambda m: m.update(file_ending=".jpg")),
                    "file_ending .jpg is not supported (JPEG is lossy"),
    "unsupported_ending": (lambda f: _edit_json(f, lambda m: m.update(file_ending=".gif")),
                           "file_ending .gif is not supported;"),
    "mixed_endings": (lambda f: shutil.copy(_img(f), f / "imagesTr" / "extra_0000.tif"),
                      "does not end in .png (dataset.json file_ending)"),
    "image_without_label": (lambda f: _lab(f).unlink() or _img(f), "has no label file in labelsTr"),
    "label_without_image": (lambda f: _img(f).unlink() or _lab(f), "has no image in imagesTr"),
    "badly_named_image": (lambda f: shutil.copy(_img(f), f / "imagesTr" / "noindex.png"),
                          "name must be <case>_<channel 0000>.png"),
    "second_channel_missing": (_second_channel_missing_one,
                               "other cases have their _0001 file; add this one or remove the case"),
    "case_ids_collide": (_collide, "case id differs from another only in upper/lower case"),
    "undeclared_label_value": (lambda f: _png(_lab(f), np.array(Image.open(_lab(f))) * 2) or _lab(f),
                               "(ids [2]): holds label ids not declared in dataset.json labels"),
    "rgba_image": (lambda f: Image.open(_img(f)).convert("RGBA").save(_img(f)) or _img(f), "has an alpha channel"),
    "colour_label": (lambda f: Image.open(_lab(f)).convert("RGB").save(_lab(f)) or _lab(f),
                     "label map saved as colour"),
    "rgb_image_for_one_channel": (lambda f: Image.open(_img(f)).convert("RGB").save(_img(f)) or _img(f),
                                  "(3 channels): has other than the 1 channel(s) dataset.json declares"),
    "truncated_image": (lambda f: _truncate(_img(f), 60), "cannot be read: it is corrupt or not an image"),
    "garbage_label": (lambda f: (_lab(f).write_bytes(b"not a png at all"), _lab(f))[1],
                      "cannot be read: it is corrupt or not an image"),
    "label_shape_differs": (lambda f: Image.open(_lab(f)).resize((20, 20)).save(_lab(f)) or _lab(f),
                            "((1, 20, 20) vs (1, 107, 128)): label shape differs from its image"),
    "all_labels_empty": (_empty_labels, "every label map is empty"),
    "fewer_cases_than_folds": (_drop_cases, "3 cases cannot fill 5 folds"),
    "dataset_id_twice": (_duplicate_id, "matches Dataset990_BadPNG, Dataset990_Twin; rename one"),
}

NII_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "nan_intensities": (lambda f: _nii_edit(_img(f), lambda i: _with_array(i, np.where(
        sitk.GetArrayFromImage(i) > 1, np.nan, sitk.GetArrayFromImage(i)).astype(np.float32))),
        "holds NaN or infinite values"),
    "inf_intensities": (lambda f: _nii_edit(_img(f), lambda i: _with_array(i, np.where(
        sitk.GetArrayFromImage(i) > 1, np.inf, sitk.GetArrayFromImage(i)).astype(np.float32))),
        "holds NaN or infinite values"),
    "label_spacing_differs": (lambda f: _nii_edit(_lab(f), lambda i: (i.SetSpacing((1.0, 1.0, 3.0)), i)[1]),
                              "(spacing [3.0, 1.0, 1.0] vs [3.0, 0.8, 0.8]): geometry differs from its image"),
    "label_origin_differs": (lambda f: _nii_edit(_lab(f), lambda i: (i.SetOrigin((0.0, 0.0, 0.0)), i)[1]),
                             "(origin): geometry differs from its image"),
    "label_direction_differs": (lambda f: _nii_edit(_lab(f), lambda i: (i.SetDirection(
        (-1, 0, 0, 0, 1, 0, 0, 0, 1)), i)[1]), "(direction): geometry differs from its image"),
    "float_label_values": (lambda f: _nii_edit(_lab(f), lambda i: _with_array(
        i, sitk.GetArrayFromImage(i).astype(np.float32) * 0.5)), "holds non-integer label values"),
    "label_shape_differs_3d": (lambda f: _nii_edit(_lab(f), lambda i: sitk.GetImageFromArray(
        np.zeros((8, 16, 12), np.uint8))), "((8, 16, 12) vs (8, 16, 16)): label shape differs from its image"),
    "corrupt_volume": (lambda f: _truncate(_img(f), 100), "cannot be read: it is corrupt or not an image"),
}


def _nifti_values(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    """Rewritten by nibabel: SimpleITK's writer would turn NaN into 0."""
    image = nib.load(path)
    nib.save(nib.Nifti1Image(change(np.asarray(image.dataobj)).astype(np.float32), image.affine), path)
    return path


def _header_bomb(path: Path) -> Path:
    """A NIfTI-1 header claiming 32767 x 32767 voxels, with 4 kB of data."""
    header = nib.Nifti1Header()
    header.set_data_shape((32767, 32767))
    header.set_data_dtype(np.uint8)
    header.set_data_offset(352)
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4100))
    return path


def _pixdim(path: Path, index: int, value: float) -> Path:
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[76 + 4 * index: 80 + 4 * index] = np.float32(value).tobytes()
    path.write_bytes(gzip.compress(bytes(data)))
    return path


# NIfTI written by nibabel, read as stored (SimpleITK would zero NaN, pad a cut-short file, read spacing 0 as 1)
NIFTI_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "nifti_nan": (lambda f: _nifti_values(_img(f), lambda a: np.where(a > 1.5, np.nan, a)),
                  "NaN): holds NaN or infinite values"),
    "nifti_inf": (lambda f: _nifti_values(_img(f), lambda a: np.where(a > 1.5, -np.inf, a)),
                  "Inf): holds NaN or infinite values"),
    "nifti_label_nan": (lambda f: _nifti_values(_lab(f), lambda a: np.where(a > 0, np.nan, a)),
                        "NaN): holds NaN or infinite values"),
    "nifti_cut_short": (lambda f: _truncate(_img(f), _img(f).stat().st_size // 2),
                        "is cut short or corrupt (an interrupted copy?)"),
    "nifti_header_bomb": (lambda f: _header_bomb(_img(f)), "header declares more data than the file can hold"),
    "nifti_spacing_zero": (lambda f: _pixdim(_img(f), 3, 0.0), "spacing (pixdim) of 0 or below"),
    "nifti_spacing_negative": (lambda f: _pixdim(_img(f), 1, -0.8), "spacing (pixdim) of 0 or below"),
}


def _names(line: str, path: Path) -> bool:
    """Whether ``line`` names ``path`` itself, not a longer path that starts with it."""
    return re.search(re.escape(str(path)) + r"(?=[:, ]|$)", line) is not None


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", [*PNG_CASES, *NII_CASES, *NIFTI_CASES])
def test_broken_dataset_gets_one_line_naming_the_file(case: str, nnunet_folders, capsys) -> None:
    raw = nnunet_folders["nnUNet_raw"]
    if case in PNG_CASES:
        folder = copy_subset(DEMO_DATA, raw, case_ids(DEMO_DATA)[:6], PNG)
        (breaker, phrase), dataset = PNG_CASES[case], "990"
    elif case in NII_CASES:
        folder = make_volumes(raw, NII)
        (breaker, phrase), dataset = NII_CASES[case], "991"
    else:
        folder = make_volumes(raw, NIFTI, ".nii.gz")
        (breaker, phrase), dataset = NIFTI_CASES[case], "993"
    expected = breaker(folder)
    before = _digest(raw)
    code = main(["run", "-d", dataset, "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("autosam: error")]
    assert code == 2
    assert len(errors) == 1, err
    assert phrase in errors[0], (phrase, errors[0])
    assert _names(errors[0], expected), (expected, errors[0])
    assert "Traceback" not in err
    assert _digest(raw) == before
    assert not any(nnunet_folders["nnUNet_preprocessed"].iterdir())  # stopped before any work


def test_valid_datasets_pass(nnunet_folders, capsys) -> None:
    copy_subset(DEMO_DATA, nnunet_folders["nnUNet_raw"], case_ids(DEMO_DATA)[:6], PNG)
    make_volumes(nnunet_folders["nnUNet_raw"], NII)
    make_volumes(nnunet_folders["nnUNet_raw"], NIFTI, ".nii.gz")
    assert main(["validate", "-d", "990"]) == 0
    assert main(["validate", "-d", "991"]) == 0
    assert main(["validate", "-d", "993"]) == 0


def _png_header_bomb(path: Path) -> Path:
    """A PNG whose header claims 32767 x 32767 grey pixels, with a few bytes of image data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = (32767).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _converted(mode: str) -> Callable[[Path], Path]:
    def convert(d: Path) -> Path:
        Image.open(d / "new_0000.png").convert(mode).save(d / "new_0000.png")
        return d / "new_0000.png"

    return convert


def _renamed(name: str) -> Callable[[Path], Path]:
    return lambda d: (d / "new_0000.png").rename(d / name)


# case: (break the input folder holding new_0000.png beside good_0000.png; the file named, the phrase of the check)
PREDICT_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "rgb_for_one_channel": (_converted("RGB"), "(3 channels): holds more channels than the model's 1 (RGB counts 3)"),
    "stray_channel_file": (lambda d: Path(shutil.copy(d / "new_0000.png", d / "new_0001.png")),
                           "stray channel file: the model takes 1 channel(s); remove it"),
    "no_channel_suffix": (_renamed("new.png"), "name lacks the channel suffix: name it <case>_0000.png"),
    "second_channel_only": (lambda d: _renamed("new_0001.png")(d) and d / "new_0000.png",
                            "missing: the model takes 1 channel(s); add this file or remove the case"),
    "other_ending": (_renamed("new_0000.jpg"), "does not end in .png, the model's file ending"),
    "palette_image": (_converted("P"), "palette (indexed-colour) PNG"),
    "alpha_channel": (_converted("RGBA"), "has an alpha channel"),
    "cut_short_png": (lambda d: _truncate(d / "new_0000.png", 200), "cannot be read: it is corrupt or not an image"),
    "png_header_bomb": (lambda d: _png_header_bomb(d / "new_0000.png"),
                        "header declares more data than the file can hold"),
}


@pytest.fixture
def trained_fold(planned_demo) -> dict[str, Path]:
    """The planned demo subset (test-size ViT, 64 px) with fold 0 trained for one epoch of two iterations."""
    assert main(["train", "-d", "901", "-f", "0", "--device", "cpu", "--epochs", "1", "--iterations", "2"]) == 0
    return planned_demo


def _input_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    for case, target in zip(case_ids(DEMO_DATA)[-2:], ("good", "new")):
        shutil.copy(DEMO_DATA / "imagesTr" / f"{case}_0000.png", folder / f"{target}_0000.png")
    return folder


def test_predict_checks_its_input_folder(trained_fold, tmp_path: Path, capsys) -> None:
    """Every broken folder is refused in one line, nothing written to -o, exit 2; a 16-bit PNG is predicted. One
    test: the trained fold is the expensive part."""
    capsys.readouterr()
    for case, (breaker, phrase) in PREDICT_CASES.items():
        folder = _input_folder(tmp_path, case)
        named = breaker(folder)
        before, out = _digest(folder), tmp_path / f"out_{case}"
        for prompts in ([], ["--prompts", str(tmp_path / "prompts.json")]):  # the prompted path checks the same
            code = main(["predict", "-d", "901", "-i", str(folder), "-o", str(out), "--device", "cpu",
                         "--disable-tta", *prompts])
            err = capsys.readouterr().err
            errors = [line for line in err.splitlines() if line.startswith("autosam: error")]
            assert code == 2, (case, err)
            assert len(errors) == 1 and phrase in errors[0] and _names(errors[0], named), (case, phrase, err)
            assert "Traceback" not in err and not out.exists() and _digest(folder) == before

    folder = _input_folder(tmp_path, "sixteen")
    path = folder / "new_0000.png"
    Image.fromarray(np.array(Image.open(path)).astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode == "I;16"
    out = tmp_path / "predicted"
    assert main(["predict", "-d", "901", "-i", str(folder), "-o", str(out), "--device", "cpu", "--disable-tta"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["good.png", "new.png"]


def test_pretrain_refuses_a_broken_image_before_training(tmp_path: Path, capsys) -> None:
    folder = _input_folder(tmp_path, "images")
    _truncate(folder / "new_0000.png", 200)
    output = tmp_path / "weights" / "mine.pth"
    code = main(["pretrain", "--images", str(folder), "-o", str(output), "--backbone", "vit_t", "--epochs", "1"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("autosam: error")]
    assert code == 2 and len(errors) == 1 and _names(errors[0], folder / "new_0000.png"), errors
    assert "cannot be read" in errors[0] and not output.parent.exists()

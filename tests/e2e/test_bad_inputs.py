"""Broken datasets: `autosam run` stops at once with one line naming the file and the fix; inputs untouched."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from autosam.cli import main
from autosam.experiments.demo import DEMO_DATA
from tests.conftest import case_ids, copy_subset, make_volumes

PNG, NII = "Dataset990_BadPNG", "Dataset991_BadVolumes"


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
                      "cannot be read; re-export the label map"),
    "label_shape_differs": (lambda f: Image.open(_lab(f)).resize((20, 20)).save(_lab(f)) or _lab(f),
                            "((1, 20, 20) vs (1, 107, 128)): label shape differs from its image"),
    "all_labels_empty": (_empty_labels, "every label map is empty"),
    "fewer_cases_than_folds": (_drop_cases, "3 cases cannot fill 5 folds"),
    "dataset_id_twice": (_duplicate_id, "matches Dataset990_BadPNG, Dataset990_Twin; rename one"),
}

NII_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "nan_intensities": (lambda f: _nii_edit(_img(f), lambda i: _with_array(i, np.where(
        sitk.GetArrayFromImage(i) > 1, np.nan, sitk.GetArrayFromImage(i)).astype(np.float32))),
        "contains NaN or infinite intensities"),
    "inf_intensities": (lambda f: _nii_edit(_img(f), lambda i: _with_array(i, np.where(
        sitk.GetArrayFromImage(i) > 1, np.inf, sitk.GetArrayFromImage(i)).astype(np.float32))),
        "contains NaN or infinite intensities"),
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


def _names(line: str, path: Path) -> bool:
    """Whether ``line`` names ``path`` itself, not a longer path that starts with it."""
    return re.search(re.escape(str(path)) + r"(?=[:, ]|$)", line) is not None


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", [*PNG_CASES, *NII_CASES])
def test_broken_dataset_gets_one_line_naming_the_file(case: str, nnunet_folders, capsys) -> None:
    raw = nnunet_folders["nnUNet_raw"]
    if case in PNG_CASES:
        folder = copy_subset(DEMO_DATA, raw, case_ids(DEMO_DATA)[:6], PNG)
        (breaker, phrase), dataset = PNG_CASES[case], "990"
    else:
        folder = make_volumes(raw, NII)
        (breaker, phrase), dataset = NII_CASES[case], "991"
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
    assert main(["validate", "-d", "990"]) == 0
    assert main(["validate", "-d", "991"]) == 0

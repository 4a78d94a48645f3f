"""Pixel digests: a renamed, re-encoded copy of an image keeps its digest; a changed pixel does not; the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

from autosam.data.image_digests import DIGEST_CACHE, channel_digest, dataset_digests
from autosam.experiments.demo import DEMO_DATA
from tests.conftest import case_ids, copy_subset


def renamed_nifti_copy(source: Path, raw_root: Path, name: str) -> Path:
    """Every image of ``source`` (a PNG dataset) decoded and written again as NIfTI (int16, other spacing and
    origin) under other case names, with its labels: a dataset that shares no file name, format or id."""
    target = raw_root / name
    for sub in ("imagesTr", "labelsTr"):
        (target / sub).mkdir(parents=True)
    reader = NaturalImage2DIO()
    for i, case in enumerate(case_ids(source)):
        image, _ = reader.read_images([str(source / "imagesTr" / f"{case}_0000.png")])
        label, _ = reader.read_seg(str(source / "labelsTr" / f"{case}.png"))
        for array, path in (
            (image[0], target / "imagesTr" / f"copy{i:03d}_0000.nii.gz"),
            (label[0], target / "labelsTr" / f"copy{i:03d}.nii.gz"),
        ):
            item = sitk.GetImageFromArray(array.astype(np.int16))  # (1, H, W): nnU-Net's 2D NIfTI layout
            item.SetSpacing((0.5, 0.5, 7.0))
            item.SetOrigin((3.0, -2.0, 1.0))
            sitk.WriteImage(item, str(path))
    meta = json.loads((source / "dataset.json").read_text())
    (target / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".nii.gz", "name": name}))
    return target


def test_a_renamed_reencoded_copy_has_the_same_digests_and_a_changed_pixel_does_not(tmp_path: Path) -> None:
    source = copy_subset(DEMO_DATA, tmp_path / "raw", case_ids(DEMO_DATA)[:3], "Dataset992_Busi")
    copy = renamed_nifti_copy(source, tmp_path / "raw", "Dataset995_Renamed")
    original, copied = dataset_digests(source), dataset_digests(copy)
    assert len(original) == len(copied) == 3 and all(len(d) == 1 for d in original.values())
    assert set(original) != set(copied)  # no file name in common
    assert sorted(original.values()) == sorted(copied.values())
    # one pixel changed: another image
    image, _ = NaturalImage2DIO().read_images([str(min((source / "imagesTr").iterdir()))])
    changed = image[0].copy()
    changed[0, 0, 0] += 1
    assert channel_digest(changed) != channel_digest(image[0]) == channel_digest(image[0].astype(np.float64))
    assert channel_digest(np.zeros((1, 8, 8))) is None  # blank images of one size would all match


def test_digests_are_cached_per_file_and_recomputed_when_a_file_changes(tmp_path: Path) -> None:
    source = copy_subset(DEMO_DATA, tmp_path / "raw", case_ids(DEMO_DATA)[:2], "Dataset992_Busi")
    cache_folder = tmp_path / "preprocessed"
    first = dataset_digests(source, cache_folder)
    cached = json.loads((cache_folder / DIGEST_CACHE).read_text())["files"]
    assert {k: v["digests"] for k, v in cached.items()} == first
    key = min(first)
    cached[key]["digests"] = ["planted"]  # what a cache hit returns, unread
    (cache_folder / DIGEST_CACHE).write_text(json.dumps({"format_version": 1, "files": cached}))
    assert dataset_digests(source, cache_folder)[key] == ["planted"]
    # the file is rewritten (another size or time): read again
    other = min(p for p in (source / "imagesTr").iterdir() if str(p.relative_to(source)) != key)
    (source / key).write_bytes(other.read_bytes())
    assert dataset_digests(source, cache_folder)[key] == first[str(other.relative_to(source))]

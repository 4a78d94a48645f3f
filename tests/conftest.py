"""Shared fixtures: small real SAM models, official-layout checkpoints, nnU-Net folder trees from real data."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

# nnU-Net reads its pool size at import; one worker keeps the tests from spawning eight on a small machine.
os.environ.setdefault("nnUNet_def_n_proc", "1")
# The test-size backbones, here and in every process the tests start (tests/site/sitecustomize.py).
SITE = str(Path(__file__).parent / "site")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SITE, os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, SITE)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

import autosam_test_backbones  # noqa: E402
from autosam.sam.registry import build_sam  # noqa: E402

autosam_test_backbones.register()

SHARED_DATA = Path(os.environ.get("AUTOSAM_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "dataset.json").is_file():
        pytest.skip(f"real dataset {name} not found in {SHARED_DATA} (set AUTOSAM_TEST_DATA to its parent folder)")
    return path


BUSI = "Dataset501_BUSI"


def busi_or_demo() -> Path:
    """The shared BUSI set, or without it the bundled BUSI subset (same modality, format and labels), so a
    fresh clone's test run still exercises the whole path. Install it as BUSI: ``copy_subset(..., BUSI)``."""
    path = SHARED_DATA / BUSI
    if (path / "dataset.json").is_file():
        return path
    from autosam.experiments.demo import DEMO_DATA

    return DEMO_DATA


def copy_subset(source: Path, raw_root: Path, cases: list[str], target_name: str | None = None) -> Path:
    """A new nnU-Net raw dataset holding ``cases`` of ``source`` (images, labels, dataset.json)."""
    meta = json.loads((source / "dataset.json").read_text())
    ending = meta["file_ending"]
    target = raw_root / (target_name or source.name)
    for folder in ("imagesTr", "labelsTr"):
        (target / folder).mkdir(parents=True)
    for case in cases:
        for image in sorted((source / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}")):
            shutil.copy(image, target / "imagesTr" / image.name)
        shutil.copy(source / "labelsTr" / f"{case}{ending}", target / "labelsTr" / f"{case}{ending}")
    (target / "dataset.json").write_text(json.dumps({**meta, "numTraining": len(cases)}, indent=2))
    return target


def make_volumes(raw: Path, name: str = "Dataset991_Volumes") -> Path:
    """3D volumes in MetaImage (.mha): SimpleITK's NIfTI writer turns NaN into 0, MetaImage keeps it."""
    folder = raw / name
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        image = sitk.GetImageFromArray(rng.normal(size=(8, 16, 16)).astype(np.float32))
        label_array = np.zeros((8, 16, 16), np.uint8)
        label_array[2:6, 4:12, 4:12] = 1
        label = sitk.GetImageFromArray(label_array)
        for item in (image, label):
            item.SetSpacing((0.8, 0.8, 3.0))
            item.SetOrigin((10.0, -5.0, 2.0))
        sitk.WriteImage(image, str(folder / "imagesTr" / f"vol{i}_0000.mha"))
        sitk.WriteImage(label, str(folder / "labelsTr" / f"vol{i}.mha"))
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": 6,
            "file_ending": ".mha"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def case_ids(source: Path) -> list[str]:
    ending = json.loads((source / "dataset.json").read_text())["file_ending"]
    return sorted(p.name[: -len(ending)] for p in (source / "labelsTr").glob(f"*{ending}"))


@pytest.fixture
def nnunet_folders(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    folders = {name: tmp_path / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, path in folders.items():
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    return folders


@pytest.fixture(autouse=True)
def _seed_and_environment():
    """Every test starts from the same seed and leaves os.environ as it found it (the CLI sets defaults)."""
    torch.manual_seed(0)
    saved = dict(os.environ)
    threads = torch.get_num_threads()
    yield
    os.environ.clear()
    os.environ.update(saved)
    torch.set_num_threads(threads)


@pytest.fixture
def base_checkpoint(tmp_path: Path):
    """Write an official-layout checkpoint of a randomly initialised SAM; returns (path, sam)."""

    def write(backbone: str = "test_vit", image_size: int = 64, num_classes: int = 4, name: str = "base.pth"):
        sam = build_sam(backbone, image_size, num_classes)
        path = tmp_path / name
        torch.save(sam.state_dict(), path)
        return path, sam

    return write

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

import autosam_test_backbones  # noqa: E402, F401 (registers the test-size backbones)
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from autosam.cli import main  # noqa: E402
from autosam.data.subset import case_ids, copy_subset  # noqa: E402, F401 (the tests' helpers, one import away)
from autosam.experiments.demo import DEMO_DATA  # noqa: E402
from autosam.paths import Dataset
from autosam.sam.registry import build_sam  # noqa: E402

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
    return DEMO_DATA


def make_volumes(raw: Path, name: str = "Dataset991_Volumes", ending: str = ".mha") -> Path:
    """3D volumes in MetaImage (.mha), or NIfTI (``ending=".nii.gz"``) written by nibabel: SimpleITK's NIfTI writer
    turns NaN into 0, MetaImage and nibabel keep it."""
    folder = raw / name
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        image_array = rng.normal(size=(8, 16, 16)).astype(np.float32)
        label_array = np.zeros((8, 16, 16), np.uint8)
        label_array[2:6, 4:12, 4:12] = 1
        for array, path in ((image_array, folder / "imagesTr" / f"vol{i}_0000{ending}"),
                            (label_array, folder / "labelsTr" / f"vol{i}{ending}")):
            if ending == ".mha":
                item = sitk.GetImageFromArray(array)
                item.SetSpacing((0.8, 0.8, 3.0))
                item.SetOrigin((10.0, -5.0, 2.0))
                sitk.WriteImage(item, str(path))
            else:  # the same geometry: nibabel's axes are SimpleITK's reversed
                affine = np.diag([0.8, 0.8, 3.0, 1.0])
                affine[:3, 3] = (10.0, -5.0, 2.0)
                nib.save(nib.Nifti1Image(array.transpose(2, 1, 0), affine), str(path))
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": 6,
            "file_ending": ending}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def nnunet_folders(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    folders = {name: tmp_path / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, path in folders.items():
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    return folders


FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
# The bundled BUSI subset's first 10 cases, planned two ways (test-size ViT at 64 px; MobileSAM's ViT-T at 256 px,
# for what only the study's set-ups run: ablations, Ray), each from random weights.
PLANS = {"demo": ["--setup", "test_vit_encdec_lora", "--image-size", "64", "--from-scratch", "--batch-size", "2"],
         "vit_t": ["--setup", "vit_t_encdec_lora", "--image-size", "256", "--from-scratch", "--batch-size", "2"]}


@pytest.fixture(scope="session")
def planned_templates(tmp_path_factory):
    """Fingerprinted, planned and preprocessed copies of the demo subset, each made once per test session on first
    use; returns a function of the plan's name (``PLANS``) giving its folder (raw and preprocessed inside)."""
    made: dict[str, Path] = {}

    def template(name: str) -> Path:
        if name not in made:
            root = tmp_path_factory.mktemp(f"planned_{name}")
            saved = dict(os.environ)
            for variable in FOLDER_VARIABLES:
                (root / variable).mkdir()
                os.environ[variable] = str(root / variable)
            copy_subset(DEMO_DATA, root / "nnUNet_raw", case_ids(DEMO_DATA)[:10])
            try:
                assert main(["plan-and-preprocess", "-d", "901", *PLANS[name]]) == 0
            finally:
                os.environ.clear()
                os.environ.update(saved)
            made[name] = root
        return made[name]

    return template


def copy_planned(template: Path, folders: dict[str, Path]) -> dict[str, Path]:
    for name in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.copytree(template / name, folders[name], dirs_exist_ok=True)
    return folders


@pytest.fixture
def planned_demo(planned_templates, nnunet_folders: dict[str, Path]) -> dict[str, Path]:
    """This test's nnU-Net folders holding a copy of the planned demo subset (dataset 901, ``PLANS["demo"]``): plan
    again with other options on top of it, and only autosam's plan changes."""
    return copy_planned(planned_templates("demo"), nnunet_folders)


@pytest.fixture
def planned_vit_t(planned_templates, nnunet_folders: dict[str, Path]) -> dict[str, Path]:
    """This test's nnU-Net folders holding a copy of the demo subset planned for ViT-T at 256 px (``PLANS["vit_t"]``)."""
    return copy_planned(planned_templates("vit_t"), nnunet_folders)


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


def stock_sam(backbone: str, image_size: int, num_classes: int, path: Path):
    """segment-anything's own classes (vit_t: TinyViT at any size) with an exported checkpoint loaded strictly."""
    sam = build_sam(backbone, image_size, num_classes)
    sam.load_state_dict(torch.load(path, weights_only=True), strict=True)
    return sam


def train_a_step(network, size: int = 64) -> None:
    network.train()
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        x = torch.randn(2, network.input_channels, size, size)
        y = torch.randint(0, network.num_classes, (2, size, size))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(network(x), y).backward()
        optimizer.step()
    network.eval()


def predict(network, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return network.eval()(x)


def predict_unseen(image: Path, dataset: str, fold: str, work: Path) -> Path:
    """`autosam predict` (CPU, no mirroring) of one image copied into a folder of its own; the prediction's path."""
    unseen, out = work / f"unseen_{image.name}", work / f"predicted_{image.name}"
    unseen.mkdir()
    shutil.copy(image, unseen / image.name)
    assert main(["predict", "-d", dataset, "-i", str(unseen), "-o", str(out), "-f", fold, "--device", "cpu",
                 "--disable-tta"]) == 0
    return out / image.name.replace("_0000", "", 1)


@pytest.fixture
def two_labelled_datasets(nnunet_folders) -> list[Dataset]:
    """Three BUSI ultrasound images (PNG, 2D) and six MR volumes (MetaImage, 3D, an 8x8 organ in 4 slices)."""
    source = busi_or_demo()
    copy_subset(source, nnunet_folders["nnUNet_raw"], case_ids(source)[:3], "Dataset992_Busi")
    meta_file = make_volumes(nnunet_folders["nnUNet_raw"]) / "dataset.json"
    # as MRI: z-scored per image, no nnU-Net fingerprint (CT normalisation's statistics) to compute
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "channel_names": {"0": "MRI"}}))
    return [Dataset.resolve("992"), Dataset.resolve("991")]


class PickledPayload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)

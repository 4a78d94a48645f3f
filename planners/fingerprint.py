"""Dataset facts the SAM planner needs, on top of nnU-Net's ``dataset_fingerprint.json``.

Computed once and cached as ``nnUNet_preprocessed/DatasetXXX/autosam_fingerprint.json`` (recomputed when
nnU-Net's fingerprint changes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from tqdm import tqdm

from autosam.data.image_digests import dataset_digests
from autosam.files import atomic_write_json
from autosam.paths import checkpoint_folder
from autosam.sam.weights.catalogue import CATALOGUE, user_catalogue
from autosam.sam.weights.lineage import check_lineage

# Channel names (lower case, any separator) -> modality. Unknown names map to "unknown", stated in the plan.
MODALITY_WORDS = {
    "CT": ("ct", "cta", "hu", "computed tomography"),
    "MR": ("mr", "mri", "t1", "t1w", "t1c", "t1ce", "t1gd", "t2", "t2w", "flair", "adc", "dwi", "pd", "swi", "dce",
           "bold", "cine", "lge"),
    "US": ("us", "ultrasound", "echo", "sonography"),
    "XR": ("xr", "x-ray", "xray", "cr", "dx", "radiograph", "mammography", "mg"),
    "PET": ("pet", "suv"),
    "RGB": ("r", "g", "b", "rgb", "red", "green", "blue", "rgb_to_0_1"),
}
TINY_TARGET_FRACTION = 0.01


def _words(text: str) -> str:
    """Lower case, any run of separators one space, padded: ``' x ray '`` for 'X-ray' and 'x_ray'."""
    return " " + " ".join(text.lower().replace("-", " ").replace("_", " ").split()) + " "


def modality_of(channel_name: str) -> str:
    """The modality a channel name says, matched word by word (keywords are normalised like the name, so a
    keyword with a separator, 'x-ray', matches 'X-ray', 'X_RAY' and 'chest x-ray')."""
    name = _words(channel_name)
    for modality, keys in MODALITY_WORDS.items():
        if any(_words(key) in name for key in keys):
            return modality
    return "unknown"


@dataclass
class DatasetFacts:
    dataset: str
    num_cases: int
    num_slices: int  # 2D training slices (cases for 2D data)
    num_foreground_slices: int
    is_3d: bool
    median_slice_shape: list[int]
    median_spacing: list[float]
    channels: dict[str, str]  # channel index -> name
    modalities: list[str]  # per channel
    labels: dict[str, int]
    median_foreground_fraction: dict[str, float]  # per label, over cases that contain it
    tiny_targets: list[str]
    unlabelled_images: int
    checkpoints_present: list[str]
    # 'autosam pretrain' checkpoints present in the checkpoint folder: name -> {"backbone", "modality",
    # "started_from", "seen"}
    pretrained_checkpoints: dict[str, dict] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        known = {m for m in self.modalities}
        return known.pop() if len(known) == 1 else "mixed"

    def to_dict(self) -> dict:
        return {**asdict(self), "modality": self.modality}


def checkpoints_present(checkpoint_dir: str | None = None) -> list[str]:
    folder = checkpoint_folder(checkpoint_dir)
    if not folder:
        return []
    return [name for name, e in CATALOGUE.items() if (Path(folder) / e.filename).is_file()]


def pretrained_present(checkpoint_dir: str | None = None, target: Callable[[], dict[str, list[str]]] | None = None
                       ) -> dict[str, dict]:
    """The user catalogue's checkpoints whose files are in the checkpoint folder: backbone, modality, start, and
    ("seen") what their lineage saw of the dataset's images, ``target()`` (file -> pixel digests), in words ('':
    nothing; R19 never starts from one that saw any)."""
    folder = checkpoint_folder(checkpoint_dir)
    if not folder:
        return {}
    present = {name: e for name, e in user_catalogue(folder).items() if (Path(folder) / e.filename).is_file()}
    images = target() if target and present else {}
    return {name: {"backbone": e.backbone, "modality": e.modality, "started_from": e.started_from,
                   "seen": check_lineage(e, name, images).problem()} for name, e in present.items()}


def _label_statistics(raw: Path, meta: dict, transpose: list[int]) -> tuple[int, int, dict[str, float]]:
    ending = meta["file_ending"]
    labels = sorted((raw / "labelsTr").glob(f"*{ending}"))
    reader = determine_reader_writer_from_dataset_json(meta, str(labels[0]))()
    fractions: dict[str, list[float]] = {name: [] for name, v in meta["labels"].items() if name != "background"}
    slices = foreground_slices = 0
    for path in tqdm(labels, desc="label statistics", unit="case", leave=False):
        seg = reader.read_seg(str(path))[0][0].transpose(transpose)
        slices += seg.shape[0]
        foreground_slices += int(np.count_nonzero(seg.reshape(seg.shape[0], -1).any(1)))
        for name, value in meta["labels"].items():
            if name in fractions and isinstance(value, int):
                count = np.count_nonzero(seg == value)
                if count:
                    fractions[name].append(count / seg.size)
    return slices, foreground_slices, {k: float(np.median(v)) if v else 0.0 for k, v in fractions.items()}


def dataset_facts(raw: Path, preprocessed: Path, transpose: list[int], unlabelled_dir: Path | None = None,
                  checkpoint_dir: str | None = None) -> DatasetFacts:
    """Facts for the dataset whose nnU-Net fingerprint exists in ``preprocessed``; ``transpose`` is the
    plans' ``transpose_forward`` (axis 0 = the slicing axis of the 2D configuration)."""
    fingerprint_file = preprocessed / "dataset_fingerprint.json"
    key = hashlib.sha256(fingerprint_file.read_bytes()).hexdigest()
    cache = preprocessed / "autosam_fingerprint.json"
    meta = json.loads((raw / "dataset.json").read_text())
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    fingerprint = json.loads(fingerprint_file.read_text())
    shapes = np.array(fingerprint["shapes_after_crop"])[:, transpose]
    spacings = np.array(fingerprint["spacings"])[:, transpose]
    if cached.get("fingerprint_sha256") == key:
        slices, fg_slices, fractions = cached["num_slices"], cached["num_foreground_slices"], cached["fractions"]
    else:
        slices, fg_slices, fractions = _label_statistics(raw, meta, transpose)
        atomic_write_json({"fingerprint_sha256": key, "num_slices": slices, "num_foreground_slices": fg_slices,
                           "fractions": fractions}, cache)
    channels = meta.get("channel_names", meta.get("modality", {}))
    ending = meta["file_ending"]
    unlabelled = len(list((raw / "imagesTs").glob(f"*_0000{ending}"))) if (raw / "imagesTs").is_dir() else 0
    if unlabelled_dir:
        unlabelled += sum(1 for p in Path(unlabelled_dir).iterdir() if p.is_file())
    return DatasetFacts(
        dataset=raw.name,
        num_cases=len(shapes),
        num_slices=slices,
        num_foreground_slices=fg_slices,
        is_3d=bool(np.median(shapes[:, 0]) > 1),
        median_slice_shape=[int(v) for v in np.median(shapes, 0)[1:]],
        median_spacing=[float(v) for v in np.median(spacings, 0)],
        channels={str(k): str(v) for k, v in channels.items()},
        modalities=[modality_of(str(v)) for v in channels.values()],
        labels={k: v for k, v in meta["labels"].items() if isinstance(v, int)},
        median_foreground_fraction=fractions,
        tiny_targets=[k for k, v in fractions.items() if 0 < v < TINY_TARGET_FRACTION],
        unlabelled_images=unlabelled,
        checkpoints_present=checkpoints_present(checkpoint_dir),
        pretrained_checkpoints=pretrained_present(checkpoint_dir, lambda: dataset_digests(raw, preprocessed)),
    )

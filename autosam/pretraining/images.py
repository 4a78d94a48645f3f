"""Unlabelled images for 'autosam pretrain': read by nnU-Net's readers, normalised as training sees them.

Sources are nnU-Net raw datasets (``-d``: every case of ``imagesTr`` and ``imagesTs``, labels ignored; or,
for prompted pretraining, ``imagesTr`` with its ``labelsTr`` label maps, ``labelled=True``) or a folder of images (``--images``: every file with an ending one of nnU-Net's readers supports, each file one
image). Every file is first checked as stored (``autosam.data.raw``: readable, declared size, finite values).
Each image goes through the normalisation nnU-Net's preprocessing gives its channel name
(``get_normalization_scheme``: z-score per image for most names, CT windowing with the dataset's foreground
statistics from nnU-Net's fingerprint for ``CT``); the SAM network receives exactly such data
(``SamSegmenter``). Not reproduced: the nonzero-region cropping and ``use_mask_for_norm`` that nnU-Net's plans
may add, and its resampling (the network resizes every patch to its input anyway). A folder's images have no
channel names: they are z-scored per image, CT included.

3D volumes are cut into 2D slices along their coarsest axis (nnU-Net's 2D configuration slices the same way);
slices holding a single value (e.g. the empty slices of a skull-stripped MRI) are skipped. Channels become
SAM's three as in the network: one channel is repeated, three are kept, any other count is averaged (the
network's channel mixer starts as the channel mean). Each slice is resized (bilinear) to the square SAM
input and kept in memory as float16; a label slice is resized by nearest neighbour to the same size and kept
as int16 (``read_labelled_slices``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
from nnunetv2.imageio.reader_writer_registry import (
    LIST_OF_IO_CLASSES,
    determine_reader_writer_from_dataset_json,
    determine_reader_writer_from_file_ending,
)
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization, ZScoreNormalization
from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme
from nnunetv2.utilities.utils import create_paths_fn, get_identifiers_from_splitted_dataset_folder, subfiles
from tqdm import tqdm

from autosam.data.checks import DatasetInvalid, stored_findings
from autosam.data.image_digests import DIGEST_CACHE, file_digests
from autosam.errors import AutosamError
from autosam.paths import Dataset
from autosam.planners.fingerprint import modality_of

log = logging.getLogger(__name__)


@dataclass
class ImageSet:
    """One source of images: a dataset or a folder."""

    name: str
    cases: list[list[str]]  # per image, one file per channel
    channel_names: list[str]
    reader: type
    ct_properties: dict[int, dict] = field(default_factory=dict)  # channel -> nnU-Net's intensity statistics
    labels: list[str] = field(default_factory=list)  # per image, its label map (labelled datasets only)
    ignore_label: int | None = None  # dataset.json's "ignore" label, if any
    root: Path | None = None  # a dataset's raw folder (its images' digests are cached per dataset)

    def digests(self) -> list[str]:
        """The pixel digest of every image (``autosam.data.image_digests``), cached in the dataset's preprocessed
        folder when nnUNet_preprocessed is set."""
        cache = (Path(os.environ["nnUNet_preprocessed"]) / self.root.name
                 if self.root is not None and os.environ.get("nnUNet_preprocessed") else None)
        found = file_digests([f for case in self.cases for f in case], self.reader,
                             cache / DIGEST_CACHE if cache else None, self.root, f"image digests of {self.name}")
        return sorted({d for digests in found.values() for d in digests})

    @property
    def modality(self) -> str:
        found = {modality_of(n) for n in self.channel_names}
        return found.pop() if len(found) == 1 else "mixed"


def _reader_for(ending: str, example: str) -> type:
    try:
        return determine_reader_writer_from_file_ending(ending, example, verbose=False)
    except RuntimeError:
        raise AutosamError(f"{example}: no nnU-Net reader opens this file; convert the images to NIfTI, PNG or "
                           "TIFF") from None


def _check_stored(cases: list[list[str]]) -> None:
    """Every file as stored (``autosam.data.raw``: readable, declared size, finite values), one line per cause,
    before nnU-Net's reader allocates or alters anything."""
    findings = []
    stored_findings([Path(f) for files in cases for f in files], findings)
    if findings:
        raise DatasetInvalid(findings)


def dataset_images(dataset: Dataset, labelled: bool = False) -> ImageSet:
    """Every case of a raw nnU-Net dataset's imagesTr and imagesTs (labels are not read), or with ``labelled``
    the cases of imagesTr with their labelsTr label maps."""
    raw = dataset.raw
    meta_file = raw / "dataset.json"
    if not meta_file.is_file():
        raise AutosamError(f"{meta_file}: not found; -d takes datasets in nnUNet_raw's format")
    meta = json.loads(meta_file.read_text())
    ending = meta["file_ending"]
    cases = []
    for folder in (str(raw / f) for f in (("imagesTr",) if labelled else ("imagesTr", "imagesTs")) if (raw / f).is_dir()):
        # nnU-Net's grouping of <case>_XXXX files, without its process pool
        files = subfiles(folder, suffix=ending, join=False, sort=True)
        cases += [create_paths_fn(folder, files, ending, case)
                  for case in get_identifiers_from_splitted_dataset_folder(folder, ending)]
    if not cases:
        raise AutosamError(f"{raw}/imagesTr: no <case>_0000{ending} images; check the dataset's file_ending")
    _check_stored(cases)
    reader = determine_reader_writer_from_dataset_json(meta, cases[0][0], verbose=False)
    channels = meta.get("channel_names", meta.get("modality", {}))
    names = [str(channels[k]) for k in sorted(channels, key=int)]
    images = ImageSet(dataset.name, cases, names, reader, root=raw)
    if labelled:
        images.labels = [str(raw / "labelsTr" / (Path(c[0]).name[:-len(ending) - 5] + ending)) for c in cases]
        missing = [f for f in images.labels if not Path(f).is_file()]
        if missing:
            raise AutosamError(f"{missing[0]}: not found; prompted pretraining needs a label map in labelsTr for "
                               "every case of imagesTr")
        _check_stored([[f] for f in images.labels])
        images.ignore_label = meta["labels"].get("ignore")
    ct = [c for c, n in enumerate(names) if n.casefold() == "ct"]
    if ct:
        images.ct_properties = _ct_properties(dataset, ct)
    return images


def _ct_properties(dataset: Dataset, channels: list[int]) -> dict[int, dict]:
    """nnU-Net's foreground intensity statistics (its CT normalisation needs them), fingerprinting if needed."""
    fingerprint = dataset.preprocessed / "dataset_fingerprint.json"
    if not fingerprint.is_file():
        log.info("%s: CT normalisation needs nnU-Net's fingerprint; computing it (as 'autosam plan' does)",
                 dataset.name)
        with contextlib.redirect_stdout(sys.stderr):  # nnU-Net prints the dataset's name
            extract_fingerprint_dataset(dataset.id, num_processes=1, check_dataset_integrity=False,
                                        verbose=False)
    properties = json.loads(fingerprint.read_text())["foreground_intensity_properties_per_channel"]
    return {c: properties[str(c)] for c in channels}


def folder_images(folder: str | os.PathLike) -> ImageSet:
    """Every file in ``folder`` that one of nnU-Net's readers supports, each file one image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AutosamError(f"--images {folder}: no such folder")
    endings = sorted({e for io in LIST_OF_IO_CLASSES for e in io.supported_file_endings}, key=len, reverse=True)
    files = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(tuple(endings)))
    if not files:
        raise AutosamError(f"--images {folder}: no images nnU-Net can read ({', '.join(sorted(endings))})")
    ending = next(e for e in endings if files[0].lower().endswith(e))
    others = [f for f in files if not f.lower().endswith(ending)]
    if others:
        raise AutosamError(f"--images {folder}: mixes {ending} with other file types (e.g. {Path(others[0]).name}); "
                           "keep one type per folder")
    _check_stored([[f] for f in files])
    return ImageSet(folder.name, [[f] for f in files], [], _reader_for(ending, files[0]))


def _normalise(image: np.ndarray, images: ImageSet) -> np.ndarray:
    """(C, Z, Y, X) -> float32, each channel as nnU-Net's preprocessing normalises it."""
    out = np.empty(image.shape, dtype=np.float32)
    for c in range(image.shape[0]):
        scheme = get_normalization_scheme(images.channel_names[c]) if c < len(images.channel_names) else \
            ZScoreNormalization
        properties = images.ct_properties.get(c)
        if scheme is CTNormalization and properties is None:
            scheme = ZScoreNormalization  # a folder's CT: no dataset statistics
        out[c] = scheme(use_mask_for_norm=False, intensityproperties=properties or {}).run(image[c].astype(np.float32))
    return out


def _to_three_channels(slice_: np.ndarray) -> np.ndarray:
    if slice_.shape[0] in (1, 3):
        return slice_
    return slice_.mean(0, keepdims=True)


def _read(read, files: list[str], what: str):
    try:
        return read(files)
    except Exception as e:  # readers raise anything from RuntimeError to IndexError on a bad file
        raise AutosamError(f"{files[0]}: cannot be read as {what} ({type(e).__name__}: {str(e)[:80]}); fix or "
                           "remove the file") from None


def read_slices(image_sets: list[ImageSet], image_size: int, max_memory_gb: float | None = None) -> list[torch.Tensor]:
    """Every non-constant 2D slice of every image, normalised, at ``image_size`` (float16, 1 or 3 channels)."""
    return [image for image, _ in _slices(image_sets, image_size, max_memory_gb, labelled=False)]


def read_labelled_slices(image_sets: list[ImageSet], image_size: int, max_memory_gb: float | None = None
                         ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """As ``read_slices``, each slice with its label slice ``(image_size, image_size)`` (int16, nearest
    neighbour), for image sets read with ``dataset_images(..., labelled=True)``."""
    return _slices(image_sets, image_size, max_memory_gb, labelled=True)


def _slices(image_sets: list[ImageSet], image_size: int, max_memory_gb: float | None, labelled: bool
            ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    slices: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    skipped = 0
    for images in image_sets:
        reader = images.reader()
        for i, files in enumerate(tqdm(images.cases, desc=f"reading {images.name}", unit="image", leave=False)):
            data, properties = _read(reader.read_images, files, "an image")
            volume = _normalise(data, images)
            label = _read(lambda f: reader.read_seg(f[0])[0], [images.labels[i]], "a label map") if labelled else None
            if label is not None and label.shape[1:] != volume.shape[1:]:
                raise AutosamError(f"{images.labels[i]}: shape {label.shape[1:]} differs from its image's "
                                   f"{volume.shape[1:]}; the label map must match the image voxel for voxel")
            axis = 1 + int(np.argmax(properties["spacing"]))  # the coarsest axis; ties -> the first
            for index in range(volume.shape[axis]):
                plane = _to_three_channels(np.take(volume, index, axis=axis))
                if np.ptp(plane) == 0:
                    skipped += 1
                    continue
                resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(plane))[None], size=(image_size,) * 2,
                                        mode="bilinear", align_corners=False)[0]
                label_slice = None
                if label is not None:
                    label_plane = torch.from_numpy(np.ascontiguousarray(np.take(label[0], index, axis=axis - 1)))
                    label_slice = F.interpolate(label_plane[None, None].float(), size=(image_size,) * 2,
                                                mode="nearest")[0, 0].to(torch.int16)
                slices.append((resized.half(), label_slice))
            held = sum(s.numel() * 2 + (0 if t is None else t.numel() * 2) for s, t in slices) / 1e9
            if max_memory_gb is not None and held > max_memory_gb:
                raise AutosamError(f"the slices at {image_size} px already take {held:.1f} GB of memory (limit "
                                   f"{max_memory_gb:.1f} GB); pretrain at a smaller --image-size or on fewer images")
    if not slices:
        raise AutosamError(f"{', '.join(s.name for s in image_sets)}: every slice holds a single value; nothing "
                           "to learn from")
    log.info("%d slices from %s (%d constant slices skipped), %.2f GB in memory", len(slices),
             ", ".join(f"{s.name} ({len(s.cases)} images)" for s in image_sets), skipped,
             sum(s.numel() for s, _ in slices) * 2 / 1e9)
    return slices

"""Image embeddings of a frozen SAM encoder, computed once per preprocessed slice and kept on disk.

In decoder-only set-ups the image encoder never changes, so encoding every patch again in every iteration is
wasted work: the cache encodes each slice of nnU-Net's preprocessed data once — the whole slice, resized to the
SAM input as the network's forward resizes a patch, no augmentation — and the decoder then trains on these
embeddings (``autosam.trainers.cached``).

Layout: ``nnUNet_preprocessed/DatasetXXX/autosam_embeddings/<key>/`` holds ``key.json`` (what the
embeddings depend on) and one ``<case>.pt`` per case: the image features of its slices in the dtype the encoder
produced — a list with the embedding (Z, D, S/16, S/16) and, for SAM 2.1, the two finer levels its decoder reads
(``SamSegmenter.encode``) — its label map (Z, H, W) and the slices holding each foreground label. ``<key>`` is
a digest of the base weights (sha256 of the checkpoint; of the encoder's weights without one), backbone,
image size, input channels and their handling, intensity normalisation, precision and the preprocessed data
(identifier, spacing, normalisation schemes, intensity properties), so a change to any of them gets a new
folder and a stale cache is never read. A case file also records its preprocessed file's size and time, so a
case that nnU-Net preprocessed again is encoded again. Every file is written atomically: a build cut short
leaves complete case files (kept) or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from autosam.files import atomic_torch_save, atomic_write_json
from autosam.sam.network import SamSegmenter

log = logging.getLogger(__name__)

FOLDER = "autosam_embeddings"
FORMAT_VERSION = 2  # 2: a list of feature levels per case (1: one embedding tensor)


def _tensor_digest(tensors: Iterable[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def compute_precision(network: SamSegmenter, device: torch.device) -> str:
    """The dtype the network computes in on ``device`` (``SamSegmenter._autocast``'s rule)."""
    return str(network.autocast_dtype(device) or torch.float32).removeprefix("torch.")


def cache_key(network: SamSegmenter, configuration: dict, plans: dict, device: torch.device) -> dict:
    """Everything the cached embeddings depend on. ``configuration``: the resolved nnU-Net configuration
    (``ConfigurationManager.configuration``); ``plans``: the plans dict (intensity properties)."""
    sha256 = network.base_identity.sha256 if network.base_identity is not None else None
    mixer = network.channel_mixer
    return {
        "format_version": FORMAT_VERSION,
        "backbone": network.setup.backbone,
        "image_size": network.image_size,
        # the checkpoint's sha256; without one (from scratch, unknown file) the image side's weights themselves
        "base_sha256": sha256 or "weights:" + _tensor_digest(
            v for k, v in network.sam.state_dict().items() if k.startswith(network.sam.ENCODER_SIDE)),
        "input_channels": network.input_channels,
        "channel_mixer": _tensor_digest(mixer.state_dict().values()) if mixer is not None else None,
        "normalisation": network.normalisation,
        "precision": compute_precision(network, device),
        "data_identifier": configuration["data_identifier"],
        "spacing": configuration["spacing"],
        "normalization_schemes": configuration["normalization_schemes"],
        "use_mask_for_norm": configuration["use_mask_for_norm"],
        "transpose_forward": plans.get("transpose_forward"),
        "intensity_properties": plans.get("foreground_intensity_properties_per_channel"),
    }


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cache_folder(preprocessed_dataset: Path, key: dict) -> Path:
    return Path(preprocessed_dataset) / FOLDER / key_digest(key)


def _signature(preprocessed_folder: Path, case: str) -> list[int]:
    """Size and modification time of the case's properties file, which nnU-Net's preprocessing rewrites with
    every case it writes (in both of its storage formats)."""
    stat = (Path(preprocessed_folder) / f"{case}.pkl").stat()
    return [stat.st_size, stat.st_mtime_ns]


@dataclass
class CacheInfo:
    folder: Path
    built: int  # cases encoded now
    reused: int  # cases found complete and current
    slices: int  # slices encoded now
    seconds: float
    bytes: int  # size of the cases' files


def open_case(folder: Path, case: str) -> dict:
    """A case's cached entry, memory-mapped: slices are read from disk as the sampler asks for them."""
    return torch.load(Path(folder) / f"{case}.pt", map_location="cpu", weights_only=True, mmap=True)


def _current(path: Path, signature: list[int]) -> bool:
    if not path.is_file():
        return False
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["signature"] == signature
    except Exception:  # an unreadable file (another version, damaged disk) is encoded again
        return False


def _foreground_slices(properties: dict) -> dict[int, torch.Tensor]:
    """The slice index of each foreground voxel nnU-Net sampled per label (``class_locations``: c, z, y, x), so
    drawing one of them picks a slice as nnU-Net's loader does when it forces foreground."""
    locations = properties.get("class_locations") or {}
    return {int(k): torch.as_tensor(np.asarray(v)[:, 1], dtype=torch.int32)
            for k, v in locations.items() if isinstance(k, (int, np.integer)) and len(v)}


@torch.no_grad()
def build(network: SamSegmenter, dataset, cases: list[str], folder: Path, device: torch.device, key: dict,
          batch_size: int, report: Callable[[str], None] = log.info) -> CacheInfo:
    """Encode every slice of ``cases`` not yet in ``folder``; ``dataset``: nnU-Net's dataset class of the
    preprocessed folder (``load_case``). Runs the encoder in eval mode, in batches of slices of one case, on
    ``device``, in the network's precision (``key['precision']``)."""
    folder = Path(folder)
    key_file = folder / "key.json"
    if not key_file.is_file():
        atomic_write_json(key, key_file)
    source = Path(dataset.source_folder)
    todo = [c for c in cases if not _current(folder / f"{c}.pt", _signature(source, c))]
    start, slices = time.perf_counter(), 0
    if todo:
        report(f"Embedding cache: encoding {len(todo)} of {len(cases)} cases with the frozen "
               f"{key['backbone']} encoder at {key['image_size']} px ({key['precision']}) into {folder}")
        was_training = network.training
        network.eval()
        try:
            for case in tqdm(todo, desc="embedding cache", unit="case", disable=None):
                signature = _signature(source, case)  # read before the data: a newer file is encoded again later
                data, seg, _, properties = dataset.load_case(case)
                batches = []
                for z0 in range(0, data.shape[1], batch_size):
                    x = torch.from_numpy(np.asarray(data[:, z0:z0 + batch_size], dtype=np.float32))
                    with network._autocast(device):  # the precision training and prediction compute in
                        batches.append([level.cpu() for level in network.encode(x.permute(1, 0, 2, 3).to(device))])
                segmentation = torch.from_numpy(np.asarray(seg[0]).astype(np.int16)).clamp_min_(0)  # -1 -> 0, as nnU-Net's transforms
                atomic_torch_save({"signature": signature, "features": [torch.cat(level) for level in zip(*batches)],
                                   "segmentation": segmentation, "foreground": _foreground_slices(properties)},
                                  folder / f"{case}.pt")
                slices += data.shape[1]
        finally:
            network.train(was_training)
    size = sum((folder / f"{c}.pt").stat().st_size for c in cases)
    return CacheInfo(folder, len(todo), len(cases) - len(todo), slices, time.perf_counter() - start, size)

"""Base checkpoints: the catalogue, locating files, safe loading, verification and size adaptation.

Nothing here downloads: planning, training and prediction only read files. A user passes a file
(``--checkpoint PATH``) or puts the catalogue's file name in a folder (``--checkpoint-dir`` or
``$AUTOSAM_CHECKPOINT_DIR``), by hand or with ``autosam weights download NAME`` (autosam/weights.py). Every
load goes through ``torch.load(weights_only=True)``; known files are checked by size and sha256, and every state
dict is checked key by key and shape by shape against the backbone before it touches the model.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import pickle
import shlex
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from autosam.errors import CheckpointError
from autosam.sam.registry import BACKBONES, PATCH_SIZE, Backbone, ViTConfig, get_backbone

CHECKPOINT_DIR_ENV = "AUTOSAM_CHECKPOINT_DIR"
RANDOM_START = "random weights"  # what 'autosam pretrain' records when no --from was given
_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    filename: str
    backbone: str
    size: int | None  # bytes, when published
    sha256: str | None  # when published
    source: str  # where a user obtains the file: its official address, or where to find it
    normalisation: str = "imagenet"  # "imagenet": SAM's pixel statistics; "minmax": per-image [0, 1]
    modality: str | None = None  # user catalogue: the modality of the images 'autosam pretrain' trained on
    started_from: str | None = None  # user catalogue: the weights it started from (RANDOM_START: none)
    datasets: tuple[str, ...] = ()  # user catalogue: the datasets (or folders) whose images it trained on

    @property
    def official(self) -> bool:
        return CATALOGUE.get(self.name) is self

    @property
    def url(self) -> str | None:
        """The official download address, when the file has one (``autosam weights download`` fetches it)."""
        return self.source if self.source.startswith(("https://", "http://")) else None


CATALOGUE: dict[str, CatalogueEntry] = {
    e.name: e
    for e in (
        CatalogueEntry(
            "sam_vit_b", "sam_vit_b_01ec64.pth", "vit_b", 375_042_383,
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            _SAM_URL + "sam_vit_b_01ec64.pth",
        ),
        CatalogueEntry(
            "sam_vit_l", "sam_vit_l_0b3195.pth", "vit_l", 1_249_524_607,
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            _SAM_URL + "sam_vit_l_0b3195.pth",
        ),
        CatalogueEntry(
            "sam_vit_h", "sam_vit_h_4b8939.pth", "vit_h", 2_564_550_879,
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            _SAM_URL + "sam_vit_h_4b8939.pth",
        ),
        CatalogueEntry(
            "mobile_sam", "mobile_sam.pt", "vit_t", 40_728_226,
            "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        ),
        CatalogueEntry(
            "medsam_vit_b", "medsam_vit_b.pth", "vit_b", None, None,
            "the MedSAM repository (bowang-lab/MedSAM), link in its README",
            normalisation="minmax",
        ),
        # The study's self-supervised (MAE) MRI weights: distributed by the authors, not hashed publicly.
        CatalogueEntry(
            "ssl_mri_vit_b", "ssl_mri_vit_b.pth", "vit_b", None, None,
            "the finetune-SAM repository (mazurowski-lab/finetune-SAM), SSL weights link in its README; "
            "save the ViT-B file under this name",
        ),
    )
}


# The user catalogue: checkpoints 'autosam pretrain' wrote into a folder, described in this file beside them.
USER_CATALOGUE = "autosam_catalogue.json"
USER_CATALOGUE_FORMAT = 1


def user_catalogue(folder: str | os.PathLike) -> dict[str, CatalogueEntry]:
    """The entries of ``folder``'s user catalogue (none when the folder has no catalogue file)."""
    path = Path(folder) / USER_CATALOGUE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format_version") != USER_CATALOGUE_FORMAT:
            raise ValueError(f"format {data.get('format_version')} is not {USER_CATALOGUE_FORMAT}")
        return {name: CatalogueEntry(name=name, **{**fields, "datasets": tuple(fields.get("datasets", ()))})
                for name, fields in data["checkpoints"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a checkpoint catalogue autosam can read ({e}); restore the file, or "
                              "move it away and run 'autosam pretrain' again") from None


def register_user_checkpoint(entry: CatalogueEntry, folder: str | os.PathLike) -> Path:
    """Add ``entry`` to ``folder``'s user catalogue (one writer at a time; written atomically)."""
    from autosam.files import atomic_write_json

    if entry.name in CATALOGUE or entry.filename in {e.filename for e in CATALOGUE.values()}:
        raise CheckpointError(f"{Path(folder) / entry.filename}: '{entry.name}' is an official checkpoint's name; "
                              "choose another output file name")
    path = Path(folder) / USER_CATALOGUE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{USER_CATALOGUE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = {name: e for name, e in user_catalogue(folder).items() if name != entry.name}
        entries[entry.name] = entry
        fields = lambda e: {k: v for k, v in e.__dict__.items() if k != "name"}  # noqa: E731
        atomic_write_json({"format_version": USER_CATALOGUE_FORMAT,
                           "checkpoints": {name: fields(e) for name, e in sorted(entries.items())}}, path)
    return path


def catalogue_entry(name: str, checkpoint_dir: str | os.PathLike | None = None) -> CatalogueEntry | None:
    """An official entry by name, else one of the user catalogue in the checkpoint folder."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    folder = checkpoint_dir or os.environ.get(CHECKPOINT_DIR_ENV)
    return user_catalogue(folder).get(name) if folder else None


def find_checkpoint(name_or_path: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None) -> Path:
    """A catalogue name ('sam_vit_b', or one of the user catalogue in the checkpoint folder) or a file path ->
    an existing file, or a one-line error saying where to get it."""
    path = Path(name_or_path)
    folder = checkpoint_dir or os.environ.get(CHECKPOINT_DIR_ENV)
    entry = CATALOGUE.get(str(name_or_path))
    if entry is None:
        if path.is_file():
            return path
        entry = catalogue_entry(str(name_or_path), folder)
        if entry is None:
            raise CheckpointError(
                f"checkpoint {path}: no such file; pass an existing file or one of: {', '.join(CATALOGUE)}"
                + (f" (or a name in {Path(folder) / USER_CATALOGUE})" if folder else "")
            )
        if not (Path(folder) / entry.filename).is_file():
            raise CheckpointError(
                f"checkpoint {entry.name}: {Path(folder) / entry.filename} is listed in {Path(folder) / USER_CATALOGUE} "
                f"but missing; put the file back or run 'autosam pretrain' again ({entry.source})"
            )
    if folder and (Path(folder) / entry.filename).is_file():
        return Path(folder) / entry.filename
    where = f"in {folder}" if folder else f"(no --checkpoint-dir or ${CHECKPOINT_DIR_ENV})"
    raise CheckpointError(f"checkpoint {entry.filename} not found {where}: {how_to_get(entry, checkpoint_dir)}, "
                          "or train with --from-scratch")


def download_command(name: str, checkpoint_dir: str | os.PathLike | None = None) -> str:
    """The command that fetches a catalogue file into ``checkpoint_dir`` (default: $AUTOSAM_CHECKPOINT_DIR)."""
    return f"autosam weights download {name}" + (f" --checkpoint-dir {shlex.quote(str(checkpoint_dir))}"
                                                  if checkpoint_dir else "")


def how_to_get(entry: CatalogueEntry, checkpoint_dir: str | os.PathLike | None = None) -> str:
    """What a user does to obtain a missing catalogue file, for one-line messages."""
    folder = checkpoint_dir or os.environ.get(CHECKPOINT_DIR_ENV)
    if entry.url is None:
        where = folder or f"a folder, and export {CHECKPOINT_DIR_ENV}=that folder"
        return f"get {entry.filename} from {entry.source}; put it in {where}"
    if folder:
        return f"fetch it with `{download_command(entry.name, checkpoint_dir)}` (from {entry.url})"
    return (f"fetch it with `{download_command(entry.name, 'DIR')}` and `export {CHECKPOINT_DIR_ENV}=DIR` "
            f"(from {entry.url})")


def catalogue_entry_for(path: Path) -> CatalogueEntry | None:
    """The official entry of a file by its name, else the entry of its own folder's user catalogue."""
    official = next((e for e in CATALOGUE.values() if e.filename == path.name), None)
    return official or next((e for e in user_catalogue(path.parent).values() if e.filename == path.name), None)


def sha256_of(path: Path) -> str:
    """The file's sha256, computed once per (file, size, modification time) in a process: prediction checks
    the base before nnU-Net's predictor loads it, and a ViT-H file takes seconds to hash."""
    stat = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, _size: int, _mtime_ns: int, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, size: int | None, sha256: str | None, user: bool = False) -> str:
    """Check size then sha256 (when known); return the file's sha256. ``user``: the file is in a user
    catalogue (written by 'autosam pretrain'), so the fix is to pretrain again, not to download."""
    published = "catalogued" if user else "published"
    fix = "the file changed after 'autosam pretrain' wrote it; run it again" if user else "download it again"
    if size is not None and path.stat().st_size != size:
        raise CheckpointError(
            f"checkpoint {path}: {path.stat().st_size} bytes, expected {size}; the file is truncated or "
            f"not the {published} one, {fix}"
        )
    actual = sha256_of(path)
    if sha256 is not None and actual != sha256:
        raise CheckpointError(
            f"checkpoint {path}: sha256 {actual[:12]}... does not match the {published} {sha256[:12]}...; "
            f"the file is corrupt or a different release, {fix}"
        )
    return actual


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` with every failure turned into a one-line error."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as plain weights ({first_line[:120]}); the file is truncated, "
            "corrupt or not a PyTorch state dict, download it again"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # some releases wrap the state dict
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path}: does not hold a state dict of tensors; pass a SAM weights file")
    return obj


def describe_encoder(state: dict[str, torch.Tensor]) -> str:
    """Human name of the encoder a state dict holds, e.g. 'vit_b (embed dim 768, 12 blocks)'."""
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is not None:
        blocks = {k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")}
        dim = patch.shape[0]
        for b in get_all_vit_backbones():
            if b.encoder.embed_dim == dim and b.encoder.depth == len(blocks):
                return f"{b.name} (embed dim {dim}, {len(blocks)} blocks)"
        return f"a ViT (embed dim {dim}, {len(blocks)} blocks)"
    if any(k.startswith("image_encoder.layers.") for k in state):
        return "a TinyViT (vit_t)"
    return "no SAM image encoder"


def get_all_vit_backbones() -> list[Backbone]:
    return [b for b in BACKBONES.values() if isinstance(b.encoder, ViTConfig)]


def _is_size_dependent(key: str, backbone: Backbone) -> bool:
    """pos_embed and the global blocks' rel-pos tables change with the image size (resized on load)."""
    if key == "image_encoder.pos_embed":
        return True
    if isinstance(backbone.encoder, ViTConfig) and key.endswith((".attn.rel_pos_h", ".attn.rel_pos_w")):
        return int(key.split(".")[2]) in backbone.encoder.global_attn_indexes
    return False


def _is_class_dependent(key: str) -> bool:
    """Decoder head tensors whose first dimension is the number of mask tokens."""
    return key in ("mask_decoder.mask_tokens.weight",) or key.startswith(
        ("mask_decoder.iou_prediction_head.layers.2.", "mask_decoder.output_hypernetworks_mlps.")
    )


def official_view(model: nn.Module) -> dict[str, str]:
    """Official key -> the model's own key, for a SAM that may already carry LoRA layers or adapters."""
    view = {}
    for key in model.state_dict():
        parts = key.split(".")
        if not any(p.startswith(("lora_", "adapter")) for p in parts):
            view[".".join(p for p in parts if p != "base_layer")] = key
    return view


def check_compatible(state: dict[str, torch.Tensor], model: nn.Module, backbone: str, path: Path) -> None:
    """Refuse a state dict that is not a checkpoint of this backbone (keys and shapes)."""
    spec = get_backbone(backbone)
    own = model.state_dict()
    expected = {official: own[key] for official, key in official_view(model).items()}
    missing = [k for k in expected if k not in state and not k.startswith("mask_decoder.output_hypernetworks_mlps.")]
    unexpected = [k for k in state if k not in expected and not _is_class_dependent(k)]
    wrong = [
        k
        for k in state
        if k in expected
        and state[k].shape != expected[k].shape
        and not _is_size_dependent(k, spec)
        and not _is_class_dependent(k)
    ]
    if missing or unexpected or wrong:
        held = describe_encoder(state)
        if not held.startswith(spec.name):
            wanted = spec.checkpoint and CATALOGUE[spec.checkpoint].filename
            raise CheckpointError(
                f"checkpoint {path} holds {held}, not a {spec.name} model: choose the backbone that matches "
                f"the file, or use a {spec.name} checkpoint" + (f" ({wanted})" if wanted else "")
            )
        detail = (
            f"{len(missing)} missing keys (e.g. {missing[0]})" if missing
            else f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected
            else f"{len(wrong)} keys with other shapes (e.g. {wrong[0]})"
        )
        raise CheckpointError(
            f"checkpoint {path}: {detail} for a {spec.name} SAM; pass an official SAM-layout checkpoint "
            "(image_encoder.*, prompt_encoder.*, mask_decoder.* keys)"
        )


def _resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    # (1, H, W, C) -> (1, grid, grid, C)
    resized = F.interpolate(pos.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1).to(pos.dtype)


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    # (L, head_dim) -> (length, head_dim), linear along L as segment-anything's get_rel_pos does
    resized = F.interpolate(table.float().t()[None], size=length, mode="linear", align_corners=False)
    return resized[0].t().to(table.dtype)


def _fit_to_model(state: dict[str, torch.Tensor], model: nn.Module, backbone: Backbone) -> dict[str, torch.Tensor]:
    """Resize size-dependent tensors, copy as many class heads as both sides have; keys become the model's."""
    own, view = model.state_dict(), official_view(model)
    target = {official: own[key] for official, key in view.items()}
    grid = model.image_encoder.img_size // PATCH_SIZE
    fitted = {}
    for key, value in state.items():
        if key not in target:
            continue  # hypernetwork MLPs of classes the model does not have
        want = target[key]
        if value.shape == want.shape:
            fitted[key] = value
        elif key == "image_encoder.pos_embed":
            fitted[key] = _resize_pos_embed(value, grid)
        elif _is_size_dependent(key, backbone):
            fitted[key] = _resize_rel_pos(value, want.shape[0])
        else:  # class-dependent first dimension: keep the pretrained rows, new classes keep their random init
            rows = min(value.shape[0], want.shape[0])
            merged = want.clone()
            merged[:rows] = value[:rows]
            fitted[key] = merged
    return {view[key]: value for key, value in fitted.items()}


@dataclass(frozen=True)
class BaseIdentity:
    """What a fine-tuned model was started from; recorded in plans and small checkpoints."""

    name: str  # catalogue name, file name, or "from-scratch"
    sha256: str | None

    def to_dict(self) -> dict:
        return {"name": self.name, "sha256": self.sha256}


FROM_SCRATCH = BaseIdentity("from-scratch", None)


def check_base(trained_on: str | None, trained_sha256: str | None, base: BaseIdentity, source: str) -> None:
    """Refuse fine-tuned tensors trained on other base weights than ``base`` (when both hashes are known)."""
    if trained_sha256 and base.sha256 and trained_sha256 != base.sha256:
        raise CheckpointError(
            f"{source}: fine-tuned from {trained_on or 'base weights'} (sha256 {trained_sha256[:12]}...), but the "
            f"base weights given are {base.name} (sha256 {base.sha256[:12]}...); put the original base file back, "
            "or plan again with this one and retrain")


def load_base_checkpoint(
    model: nn.Module, backbone: str, path: Path, expected_sha256: str | None = None, verify: bool = True
) -> BaseIdentity:
    """Verify ``path`` and load it into a SAM of ``backbone`` (plain, or with a set-up already applied)."""
    path = Path(path)
    entry = catalogue_entry_for(path)
    if not path.is_file():
        known = entry is not None and entry.official
        raise CheckpointError(f"checkpoint {path}: no such file" + (f"; {how_to_get(entry, path.parent)}" if known
                                                                     else ""))
    size = entry.size if entry else None
    sha = expected_sha256 or (entry.sha256 if entry else None)
    actual_sha = verify_file(path, size, sha, user=bool(entry and not entry.official)) if verify else None
    state = read_state_dict(path)
    check_compatible(state, model, backbone, path)
    model.load_state_dict(_fit_to_model(state, model, get_backbone(backbone)), strict=False)
    return BaseIdentity(entry.name if entry else path.name, actual_sha)

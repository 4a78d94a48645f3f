"""Base checkpoints: the catalogue, locating files, safe loading, verification and size adaptation.

Nothing here downloads: planning, training and prediction only read files. A user passes a file
(``--checkpoint PATH``) or puts the catalogue's file name in a folder (``--checkpoint-dir`` or
``$AUTOSAM_CHECKPOINT_DIR``), by hand or with ``autosam weights download NAME`` (autosam/sam/weights/download.py). Every
load goes through ``torch.load(weights_only=True)``; known files are checked by size and sha256, and every state
dict is checked key by key and shape by shape against the backbone before it touches the model.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from autosam.errors import CheckpointError, did_you_mean
from autosam.files import atomic_write_json
from autosam.paths import CHECKPOINT_DIR_ENV, checkpoint_folder

RANDOM_START = "random weights"  # what 'autosam pretrain' records when no --from was given


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
    # user catalogue, what it saw (autosam/sam/weights/lineage.py; None: catalogued before autosam recorded it):
    labels_used: bool | None = None  # whether its training read label maps
    seen_images: dict[str, list[str]] | None = None  # dataset or folder -> every image's pixel digest
    ancestors: tuple[dict, ...] = ()  # the same record for each checkpoint it descends from, nearest first

    @property
    def official(self) -> bool:
        return CATALOGUE.get(self.name) is self

    @property
    def url(self) -> str | None:
        """The official download address, when the file has one (``autosam weights download`` fetches it)."""
        return self.source if self.source.startswith(("https://", "http://")) else None


# The official checkpoints (name, file, backbone, size and sha256 where published, where to get it), as data.
CATALOGUE: dict[str, CatalogueEntry] = {row["name"]: CatalogueEntry(**row) for row in json.loads(
    (resources.files("autosam.sam.weights") / "official_checkpoints.json").read_text())}


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
        return {name: CatalogueEntry(name=name, **{**fields, "datasets": tuple(fields.get("datasets", ())),
                                                   "ancestors": tuple(fields.get("ancestors", ()))})
                for name, fields in data["checkpoints"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a checkpoint catalogue autosam can read ({e}); restore the file, or "
                              "move it away and run 'autosam pretrain' again") from None


def register_user_checkpoint(entry: CatalogueEntry, folder: str | os.PathLike) -> Path:
    """Add ``entry`` to ``folder``'s user catalogue (one writer at a time; written atomically)."""

    if entry.name in CATALOGUE or entry.filename in {e.filename for e in CATALOGUE.values()}:
        raise CheckpointError(f"{Path(folder) / entry.filename}: '{entry.name}' is an official checkpoint's name; "
                              "choose another output file name")
    path = Path(folder) / USER_CATALOGUE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{USER_CATALOGUE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = {name: e for name, e in user_catalogue(folder).items() if name != entry.name}
        entries[entry.name] = entry
        fields = lambda e: {k: v for k, v in e.__dict__.items() if k != "name"}
        atomic_write_json({"format_version": USER_CATALOGUE_FORMAT,
                           "checkpoints": {name: fields(e) for name, e in sorted(entries.items())}}, path)
    return path


def catalogue_entry(name: str, checkpoint_dir: str | os.PathLike | None = None) -> CatalogueEntry | None:
    """An official entry by name, else one of the user catalogue in the checkpoint folder."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    folder = checkpoint_folder(checkpoint_dir)
    return user_catalogue(folder).get(name) if folder else None


def looks_like_a_file(name: str) -> bool:
    """A ``--checkpoint`` value naming a file rather than a catalogue entry."""
    return bool(Path(name).suffix) or os.sep in name or Path(name).exists()


def check_checkpoint_name(name: str, checkpoint_dir: str | os.PathLike | None = None,
                          flag: str = "--checkpoint") -> None:
    """A catalogue name given on the command line, checked before any work (a file is checked where it is read),
    with the closest name when mistyped."""
    if looks_like_a_file(name) or catalogue_entry(name, checkpoint_dir) is not None:
        return
    folder = checkpoint_folder(checkpoint_dir)
    known = [*CATALOGUE, *(user_catalogue(folder) if folder and folder.is_dir() else {})]
    raise CheckpointError(f"{flag} {name}: not in the catalogue{did_you_mean(name, known)}; 'autosam weights list' "
                          "shows the names, or give a .pth file")


def checkpoint_backbone(name: str, checkpoint_dir: str | os.PathLike | None = None) -> str | None:
    """The backbone of a catalogue name or a catalogued file; None when unknown (an uncatalogued file)."""
    entry = catalogue_entry(name, checkpoint_dir)
    if entry is None and Path(name).is_file():
        entry = catalogue_entry_for(Path(name))
    return entry.backbone if entry else None


def find_checkpoint(name_or_path: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None) -> Path:
    """A catalogue name ('sam_vit_b', or one of the user catalogue in the checkpoint folder) or a file path ->
    an existing file, or a one-line error saying where to get it."""
    path = Path(name_or_path)
    folder = checkpoint_folder(checkpoint_dir)
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
    folder = checkpoint_folder(checkpoint_dir)
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


def recorded_sha256_file(path: Path) -> Path:
    """Where ``autosam weights download`` records the sha256 of a file whose publisher gives none."""
    return Path(path).with_name(Path(path).name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded at the file's first download, when the publisher gives none (else None)."""
    record = recorded_sha256_file(path)
    return record.read_text().split()[0] if record.is_file() else None


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



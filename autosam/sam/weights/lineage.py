"""Which images a base checkpoint's lineage saw, and which of them are images of the dataset about to be
cross-validated.

'autosam pretrain' records in each catalogue entry whether labels were used, the datasets or folders, and the pixel
digest of every image it trained on (``autosam.data.image_digests``: by decoded content, so a renamed or
re-encoded copy keeps its digest), and copies its start's record with the start's own ancestors
(``ancestors``, nearest first): a checkpoint that started from one that saw a dataset has seen it too, wherever
the files have moved since. A lineage whose images were not recorded (a catalogue written before autosam
recorded them, or a start file outside every catalogue) cannot be cleared. Official bases (SAM, MobileSAM,
MedSAM, ...) were trained by their authors on public data not disclosed image by image: what they saw cannot be
checked, and the report says so.

Not detectable here: other scans of the same patients, and copies whose pixel values changed (windowed,
rescaled, resampled, cropped, lossy), e.g. a 2D dataset of 8-bit slices cut from a 3D dataset of the same volumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from autosam.sam.weights.base import FROM_SCRATCH
from autosam.sam.weights.catalogue import CATALOGUE, CatalogueEntry, catalogue_entry_for, user_catalogue

UNDISCLOSED = "trained by its authors on public data that is not disclosed image by image"
NOT_DETECTABLE = (
    "other scans of the same patients, and copies whose pixel values changed (windowed, rescaled, "
    "resampled, cropped, lossy)"
)


def member(entry: CatalogueEntry) -> dict:
    """What a descendant records about ``entry``: its name, file hash and what it saw."""
    if entry.official:
        return {"name": entry.name, "sha256": entry.sha256, "official": True}
    return {
        "name": entry.name,
        "sha256": entry.sha256,
        "official": False,
        "labels_used": entry.labels_used,
        "datasets": list(entry.datasets),
        "seen_images": entry.seen_images,
    }


def ancestry(start: Path, sha256: str | None) -> tuple[dict, ...]:
    """The ``ancestors`` of a checkpoint started from the file ``start`` (hash ``sha256``): the start's record,
    then the start's own ancestors. A file outside every catalogue is recorded as seen-unknown."""
    entry = catalogue_entry_for(Path(start))
    if entry is None:
        return ({"name": Path(start).name, "sha256": sha256, "official": False, "seen_images": None},)
    return (member(entry), *entry.ancestors)


@dataclass(frozen=True)
class Overlap:
    checkpoint: str  # the member of the lineage that trained on them
    source: str  # the dataset or folder it recorded them under
    images: int  # images of the target dataset among them
    labels_used: bool | None


@dataclass
class LineageCheck:
    """What a base's lineage saw of one dataset's images (``check_lineage``)."""

    base: str
    target_images: int
    lineage: list[str] = field(default_factory=list)  # the base, then its ancestors
    overlaps: list[Overlap] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)  # members whose images were not recorded
    official: list[str] = field(default_factory=list)  # members trained on undisclosed data

    @property
    def refused(self) -> bool:
        """Seen, or not provably unseen: never a base chosen or run without the user's explicit word."""
        return bool(self.overlaps or self.unrecorded)

    def problem(self) -> str:
        """The overlap (or the missing record) in words; '' when there is none."""
        parts = []
        for o in self.overlaps:
            how = {True: "with labels", False: "without labels", None: "labels unknown"}[o.labels_used]
            via = "" if o.checkpoint == self.base else f" via {o.checkpoint}"
            parts.append(
                f"{o.images} of the dataset's {self.target_images} images were in its training data "
                f"(as {o.source}{via}, {how})"
            )
        if self.unrecorded:
            parts.append(
                f"the images {', '.join(self.unrecorded)} trained on were not recorded (catalogued before "
                "autosam recorded them, or a file outside every catalogue), so an overlap cannot be ruled out"
            )
        return "; ".join(parts)


def check_lineage(entry: CatalogueEntry | None, name: str, target: dict[str, list[str]]) -> LineageCheck:
    """Which of ``target``'s images (file -> its digests) the base ``name`` (its catalogue ``entry``; None: a file
    in no catalogue) and its ancestors trained on. An image counts as seen when any of its channels was."""
    check = LineageCheck(name, len(target))
    if name == FROM_SCRATCH.name:
        return check
    members = [member(entry), *entry.ancestors] if entry else [{"name": name, "official": False, "seen_images": None}]
    for record in members:
        check.lineage.append(record["name"])
        if record.get("official"):
            check.official.append(record["name"])
        elif record.get("seen_images") is None:
            check.unrecorded.append(record["name"])
        else:
            for source, digests in record["seen_images"].items():
                seen = set(digests)
                images = sum(1 for d in target.values() if seen.intersection(d))
                if images:
                    check.overlaps.append(Overlap(record["name"], source, images, record.get("labels_used")))
    return check


def base_entry(name: str, sha256: str | None, folders: list[str | os.PathLike]) -> CatalogueEntry | None:
    """The catalogue entry of a base a fold recorded (name and sha256): official by name or hash, else the entry
    of one of ``folders``' user catalogues with that hash (by name when no hash was recorded)."""
    official = CATALOGUE.get(name) or next((e for e in CATALOGUE.values() if sha256 and e.sha256 == sha256), None)
    if official is not None:
        return official
    for folder in folders:
        for entry in user_catalogue(folder).values():
            if (entry.sha256 == sha256) if sha256 else (name in (entry.name, entry.filename)):
                return entry
    return None

"""A raw dataset's training cases, and a smaller raw dataset cut from them: some cases, its dataset.json, under a
name (for quick runs on a subset of real data: a smoke test of a pipeline, a benchmark)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder


def case_ids(raw_dataset: Path) -> list[str]:
    """The training cases of a raw dataset, by nnU-Net's own grouping of ``<case>_XXXX`` image files."""
    ending = json.loads((raw_dataset / "dataset.json").read_text())["file_ending"]
    return sorted(get_identifiers_from_splitted_dataset_folder(str(raw_dataset / "imagesTr"), ending))


def copy_subset(source: Path, raw_root: Path, cases: list[str], name: str | None = None) -> Path:
    """A new raw dataset ``raw_root/<name>`` (default: the source's name) holding ``cases`` of ``source``:
    their images and labels, and the source's dataset.json with the new case count."""
    meta = json.loads((source / "dataset.json").read_text())
    ending = meta["file_ending"]
    target = raw_root / (name or source.name)
    for folder in ("imagesTr", "labelsTr"):
        (target / folder).mkdir(parents=True)
    for case in cases:
        for image in sorted((source / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}")):
            shutil.copy(image, target / "imagesTr" / image.name)
        shutil.copy(source / "labelsTr" / f"{case}{ending}", target / "labelsTr" / f"{case}{ending}")
    (target / "dataset.json").write_text(json.dumps({**meta, "numTraining": len(cases)}, indent=2))
    return target

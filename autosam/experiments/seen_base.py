"""'autosam run' refuses a SAM base whose lineage saw images of the dataset it cross-validates.

The bases checked are those the SAM folds recorded in their checkpoints (the base they were actually trained
from, whatever the plan says now), and the plan's base for folds not started yet. Each is looked up in the
catalogue (``autosam.sam.weights.lineage``) and its lineage's recorded pixel digests are compared with those of
the dataset's ``imagesTr`` (``autosam.data.image_digests``, cached in its preprocessed folder). An overlap, or a
lineage that did not record its images, is refused in one line before any training; ``--allow-seen-base`` runs
anyway and the report's headline says so. The headline always names the base and what this check cannot see.
"""

from __future__ import annotations

from pathlib import Path

from autosam.data.image_digests import dataset_digests
from autosam.errors import AutosamError
from autosam.paths import Dataset, checkpoint_folder, latest_checkpoint
from autosam.plans import SamPlan
from autosam.sam.weights.base import FROM_SCRATCH
from autosam.sam.weights.catalogue import CatalogueEntry, catalogue_entry_for
from autosam.sam.weights.lineage import NOT_DETECTABLE, UNDISCLOSED, LineageCheck, base_entry, check_lineage
from autosam.sam.weights.safe_load import load_fold_checkpoint

ALLOW_FLAG = "--allow-seen-base"


def fold_bases(sam_folder: Path, folds: list[int]) -> tuple[dict[tuple[str, str | None], list[int]], list[int]]:
    """((base name, sha256) -> the folds whose checkpoint records it, the folds not started yet)."""
    bases: dict[tuple[str, str | None], list[int]] = {}
    waiting = []
    for fold in folds:
        checkpoint = latest_checkpoint(sam_folder / f"fold_{fold}")
        if checkpoint is None:
            waiting.append(fold)
            continue
        base = load_fold_checkpoint(checkpoint).get("autosam", {}).get("base") or {}
        bases.setdefault((base.get("name", "unrecorded"), base.get("sha256")), []).append(fold)
    return bases, waiting


def _entry(plan: SamPlan, name: str, sha256: str | None) -> CatalogueEntry | None:
    base = plan.base_checkpoint
    if base is not None and base.path and Path(base.path).is_file() and name == base.name:
        return catalogue_entry_for(Path(base.path))
    folders = [Path(base.path).parent] if base is not None and base.path else []
    return base_entry(name, sha256, folders + [f for f in [checkpoint_folder()] if f])


def check_bases(
    dataset: Dataset, plan: SamPlan, sam_folder: Path, folds: list[int]
) -> list[tuple[LineageCheck, list[int]]]:
    """Each base the SAM folds were (or will be) trained from, with what its lineage saw of the dataset."""
    bases, waiting = fold_bases(sam_folder, folds)
    if waiting:
        planned = plan.base_checkpoint
        key = (planned.name, planned.sha256) if planned else (FROM_SCRATCH.name, None)
        bases.setdefault(key, []).extend(waiting)
    entries = {key: _entry(plan, *key) for key in bases}
    needs_images = any(name != FROM_SCRATCH.name and not (e and e.official) for (name, _), e in entries.items())
    target = dataset_digests(dataset.raw, dataset.preprocessed) if needs_images else {}
    return [(check_lineage(entries[key], key[0], target), sorted(f)) for key, f in bases.items()]


def base_lines(checks: list[tuple[LineageCheck, list[int]]]) -> list[str]:
    """The headline's lines on each base: what it is, what its lineage saw, what the check cannot see (a refused
    base reaches the headline only through --allow-seen-base)."""
    lines = []
    for check, folds in checks:
        if not check.lineage:
            continue  # from random weights: the headline already says so
        where = f" (folds {', '.join(map(str, folds))})" if len(checks) > 1 else ""
        official = "; ".join(f"{name}: {UNDISCLOSED}, so what it saw cannot be checked" for name in check.official)
        if check.refused:
            lines.append(
                f"WARNING: run with {ALLOW_FLAG}: the SAM base {check.base}{where}: "
                f"{check.problem()}: SAM may have been trained on validation images that nnU-Net never saw, "
                "so the comparison favours SAM"
            )
        elif len(check.lineage) > len(check.official):  # a lineage 'autosam pretrain' recorded
            lines.append(
                f"SAM base {check.base}{where} (lineage: {' <- '.join(check.lineage)}): none of the dataset's "
                f"{check.target_images} images is among those its lineage was trained on, compared by pixel "
                f"content; not detectable: {NOT_DETECTABLE}" + (f"; {official}" if official else "")
            )
        else:
            lines.append(
                f"SAM base {check.base}{where}: {UNDISCLOSED}: whether it saw these images, or other scans of these "
                "patients, cannot be checked"
            )
    return lines


def refuse_seen_base(dataset: Dataset, plan: SamPlan, sam_folder: Path, folds: list[int], allow: bool) -> list[str]:
    """Refuse (one line) a base whose lineage saw the dataset's images, unless ``allow``; the headline's lines."""
    checks = check_bases(dataset, plan, sam_folder, folds)
    for check, trained in checks:
        if check.refused and not allow:
            started = [f for f in trained if latest_checkpoint(sam_folder / f"fold_{f}") is not None]
            redo = (
                f"move {sam_folder} away (folds {', '.join(map(str, started))} were trained from it) and "
                if started
                else ""
            )
            raise AutosamError(
                f"{dataset.name}: SAM base {check.base} refused: {check.problem()}, so SAM would be validated on "
                f"images it was trained on; {redo}choose another base (autosam run -d {dataset.id} --replan "
                f"--checkpoint NAME, or 'autosam pretrain' without this dataset), or pass {ALLOW_FLAG} to run "
                "anyway (the report's headline then says so)"
            )
    return base_lines(checks)

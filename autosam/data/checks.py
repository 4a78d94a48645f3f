"""Dataset checks before any work: every problem at once, each naming its file and the fix.

Builds on what nnU-Net's integrity check looks at and goes further (geometry, intensities, PNG modes, label
values, fold count). Errors stop a command; warnings are printed and the work goes on. Nothing is modified.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from PIL import Image

from autosam.data.raw import StoredImage, StoredProblem, read_stored
from autosam.data.splits import GROUPS_FILE
from autosam.errors import AutosamError
from autosam.paths import Dataset

NATURAL_ENDINGS = (".png", ".bmp", ".tif", ".tiff")
SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".gipl", ".png", ".bmp", ".tif", ".tiff")
GEOMETRY_TOLERANCE = 1e-3  # relative, as nnU-Net's check
ANISOTROPY_WARNING = 3.0
IMAGE_SAMPLE = 1_000_000  # voxels looked at to tell an image from a label map


@dataclass(frozen=True)
class Finding:
    """A problem and its fix at the files it touches: one file as found, every file with the cause once grouped."""

    severity: str  # "error" or "warning"
    file: str
    message: str  # what is wrong and the fix, in the same words for every file with this cause
    detail: str = ""  # what differs from file to file, e.g. the values found in this one
    more: tuple[tuple[str, str], ...] = ()  # (file, detail) of the other files with this cause

    @property
    def files(self) -> list[tuple[str, str]]:
        return [(self.file, self.detail), *self.more]

    def line(self, every_file: bool = False) -> str:
        """The count of files, two of them (every one with ``every_file``), what is wrong and the fix."""
        files = self.files
        named = ", ".join(f"{f} ({d})" if d else f for f, d in (files if every_file else files[:2]))
        if len(files) > 1:
            named = f"{len(files)} files{', e.g.' if len(files) > 2 and not every_file else ':'} {named}"
        return f"{self.severity}: {named}: {self.message}"

    def __str__(self) -> str:
        return self.line()


def group(findings: list[Finding]) -> list[Finding]:
    """One finding per cause (severity and message) holding every file it touches, in the order found."""
    causes: dict[tuple[str, str], dict[tuple[str, str], None]] = {}  # a dict keeps each file once, in order
    for f in findings:
        causes.setdefault((f.severity, f.message), {}).update(dict.fromkeys(f.files))
    grouped = []
    for (severity, message), files in causes.items():
        (first, detail), *more = files
        grouped.append(Finding(severity, first, message, detail, tuple(more)))
    return grouped


class DatasetInvalid(AutosamError):
    def __init__(self, findings: list[Finding], every_file: bool = False) -> None:
        self.findings = group(findings)
        super().__init__("\n".join(f.line(every_file) for f in self.findings if f.severity == "error"))


def _load_dataset_json(folder: Path, out: list[Finding]) -> dict | None:
    path = folder / "dataset.json"
    if not path.is_file():
        out.append(Finding("error", str(path), "missing; write it as nnU-Net's generate_dataset_json does"))
        return None
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        out.append(Finding("error", str(path), f"is not valid JSON ({e}); fix the syntax"))
        return None
    if not isinstance(meta, dict):
        out.append(Finding("error", str(path), "must be a JSON object with channel_names, labels, numTraining, "
                                               "file_ending"))
        return None
    missing = [k for k in ("labels", "numTraining", "file_ending") if k not in meta]
    if "channel_names" not in meta and "modality" not in meta:
        missing.insert(0, "channel_names")
    if missing:
        out.append(Finding("error", str(path), f"missing field(s) {', '.join(missing)}; add them"))
        return None
    labels = meta["labels"]
    values = [v for v in labels.values()] if isinstance(labels, dict) else []
    quoted = [(k, v) for k, v in labels.items() if isinstance(v, str)] if isinstance(labels, dict) else []
    if quoted and all(v.strip().isdigit() for _, v in quoted):
        (name, value), ids = quoted[0], ", ".join(f'"{v}"' for _, v in quoted)
        out.append(Finding("error", str(path), f"{len(quoted)} label id(s) written as strings ({ids}); write them "
                                               f'as numbers: "{name}": {int(value)}, not "{name}": "{value}"'))
        return None
    if not isinstance(labels, dict) or labels.get("background") != 0:
        out.append(Finding("error", str(path), 'labels must map names to ids with "background": 0'))
        return None
    plain = [v for k, v in labels.items() if k != "ignore" and not isinstance(v, (list, tuple))]
    if any(not isinstance(v, int) or isinstance(v, bool) for v in plain):
        out.append(Finding("error", str(path), f"label ids must be integers, got {plain}"))
        return None
    if len(set(values)) != len(values) and not any(isinstance(v, (list, tuple)) for v in values):
        out.append(Finding("error", str(path), "two labels share an id; give each label its own id"))
        return None
    if sorted(plain) != list(range(len(plain))):
        out.append(Finding("error", str(path), f"label ids {sorted(plain)} must be consecutive from 0; renumber them"))
        return None
    if meta["file_ending"] not in SUPPORTED_ENDINGS:
        hint = " (JPEG is lossy and corrupts label maps: convert to PNG)" if "jp" in meta["file_ending"] else ""
        out.append(Finding("error", str(path), f"file_ending {meta['file_ending']} is not supported{hint}; use "
                                               f"one of {', '.join(SUPPORTED_ENDINGS)}"))
        return None
    if not isinstance(meta["numTraining"], int):
        out.append(Finding("error", str(path), "numTraining must be an integer"))
        return None
    return meta


def _visible(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]


def _jpeg_label(ending: str) -> str:
    return ("label map saved as JPEG, whose lossy compression adds stray label ids along every edge; re-export it "
            f"from the original mask as {ending} (lossless)")


def _cases(folder: Path, meta: dict, out: list[Finding]) -> tuple[dict[str, list[Path]], dict[str, Path]]:
    ending, channels = meta["file_ending"], len(meta.get("channel_names", meta.get("modality", {})))
    images: dict[str, list[Path]] = {}
    for sub in ("imagesTr", "labelsTr"):
        if not (folder / sub).is_dir():
            out.append(Finding("error", str(folder / sub), "missing; put the training images and labels there"))
    if out:
        return {}, {}
    image_files, label_files = _visible(folder / "imagesTr"), _visible(folder / "labelsTr")
    label_names = {p.name for p in label_files}
    swapped = [p for p in image_files
               if p.name.endswith(ending) and f"{p.name[: -len(ending)]}_0000{ending}" in label_names]
    if swapped:  # imagesTr/<case>.png next to labelsTr/<case>_0000.png: the folders were swapped
        out.extend(Finding("error", str(p), "is named as a label and labelsTr holds its <case>_0000 image: imagesTr "
                                            "and labelsTr look swapped; swap the two folders") for p in swapped)
        return {}, {}
    label_stems = {p.name[: -len(ending)] for p in label_files if p.name.endswith(ending)}
    image_names, misnamed = {p.name for p in image_files}, set()
    for path in image_files:
        if not path.name.endswith(ending):
            out.append(Finding("error", str(path), f"does not end in {ending} (dataset.json file_ending); convert it "
                                                   "or move it out: every file must have the same ending"))
            continue
        stem = path.name[: -len(ending)]
        if stem in label_stems and f"{stem}_0000{ending}" not in image_names:
            # hc18_1014.png next to labelsTr/hc18_1014.png: the image of case hc18_1014 without its channel suffix,
            # not channel 1014 of a case hc18
            out.append(Finding("error", str(path), f"is named as its label in labelsTr, without the channel suffix: "
                                                   f"name each image <case>_0000{ending}",
                               f"rename it {stem}_0000{ending}"))
            misnamed.add(stem)
            continue
        if len(stem) < 6 or stem[-5] != "_" or not stem[-4:].isdigit():
            out.append(Finding("error", str(path), f"name must be <case>_<channel 0000>{ending}"))
            continue
        images.setdefault(stem[:-5], []).append(path)
    labels = {}
    for path in label_files:
        if path.name.endswith(ending):
            labels[path.name[: -len(ending)]] = path
            continue
        if path.name.lower().endswith((".jpg", ".jpeg")):
            out.append(Finding("error", str(path), _jpeg_label(ending)))
        else:
            out.append(Finding("error", str(path), f"does not end in {ending}; labels must use the dataset's ending"))
        labels[path.name.rsplit(".", 1)[0].removesuffix(".nii")] = path  # paired, so its image is not reported
    folded: dict[str, list[str]] = {}
    for case in images:
        folded.setdefault(case.lower(), []).append(case)
    for same in (cases for cases in folded.values() if len(cases) > 1):
        out.extend(Finding("error", str(images[case][0]), "case id differs from another only in upper/lower case; "
                                                          "rename one (they collide on some systems)") for case in same)
    held = {p.name[-len(ending) - 4: -len(ending)] for paths in images.values() for p in paths}
    for case, paths in images.items():
        have = {p.name for p in paths}
        for channel in (f"{i:04d}" for i in range(channels)):
            name = f"{case}_{channel}{ending}"
            if name in have:
                continue
            if channel in held:
                fix = f"other cases have their _{channel} file; add this one or remove the case"
            else:
                present = len(held & {f"{i:04d}" for i in range(channels)})
                fix = (f"no case has a _{channel} file; declare {present} channel(s) in channel_names or add the "
                       f"_{channel} files")
            out.append(Finding("error", str(folder / "imagesTr" / name), f"missing: dataset.json declares {channels} "
                                                                         f"channel(s) and {fix}"))
        if case not in labels:
            out.append(Finding("error", str(folder / "imagesTr" / paths[0].name), "has no label file in labelsTr; "
                                                                                  "add it or remove the image"))
    unpaired = False
    for case, path in labels.items():
        if case not in images:
            if case not in misnamed:  # its image is there, misnamed: reported once, above
                out.append(Finding("error", str(path), "has no image in imagesTr; add it or remove the label"))
            unpaired = True
    unpaired = unpaired or any(case not in labels for case in images)
    if not unpaired and len(labels) != meta["numTraining"]:  # an unpaired file already explains a mismatch
        out.append(Finding("error", str(folder / "dataset.json"), f"numTraining is {meta['numTraining']} but "
                                                                 f"labelsTr holds {len(labels)} cases; correct it"))
    return images, labels


def _natural_image(path: Path) -> str | None:
    """The format PIL finds in the file, whatever its name says."""
    try:
        with Image.open(path) as image:
            return image.format
    except Exception:  # noqa: BLE001 - reported as unreadable by the reader below
        return None


PALETTE_IMAGE = ("palette (indexed-colour) PNG, which nnU-Net reads as 3 colour channels; save it as greyscale "
                 "(PIL: image.convert('L'))")
PALETTE_LABEL = ("label map saved as a palette PNG: nnU-Net reads its colours, not its indices; save the indices as "
                 "greyscale (PIL: Image.fromarray(np.array(Image.open(f))).save(f))")


def stored_findings(paths: list[Path], out: list[Finding]) -> dict[Path, StoredImage]:
    """Each file checked as stored (``autosam.data.raw``), before any reader allocates or alters it; the files
    that pass, with what they hold."""
    stored = {}
    for path in paths:
        try:
            stored[path] = read_stored(path)
        except StoredProblem as e:
            out.append(Finding("error", str(path), e.message, e.detail))
    return stored


def image_mode_findings(path: Path, image: StoredImage, channels: int, out: list[Finding]) -> bool:
    """Colour modes nnU-Net's 2D reader gets wrong for an image of ``channels`` channels; whether it passed."""
    if image.mode in ("RGBA", "LA", "PA"):
        out.append(Finding("error", str(path), "has an alpha channel; save it without transparency"))
    elif image.mode == "P" and channels != 3:
        out.append(Finding("error", str(path), PALETTE_IMAGE))
    else:
        return True
    return False


def _few_valued(data: np.ndarray, most: int) -> bool:
    """Whether the image holds at most ``most`` integer values, as a label map does (judged on a sample)."""
    values = np.unique(data.ravel()[:: max(1, data.size // IMAGE_SAMPLE)])
    return len(values) <= most and bool(np.all(values == np.round(values)))


def _check_case(images: list[Path], label: Path, meta: dict, reader, stored: dict[Path, StoredImage],
                out: list[Finding]) -> dict | None:
    ending = meta["file_ending"]
    channels = len(meta.get("channel_names", meta.get("modality", {})))
    if not all(image_mode_findings(p, stored[p], channels, out) for p in images):
        return None
    if stored[label].mode in ("RGBA", "LA", "PA"):
        out.append(Finding("error", str(label), "has an alpha channel; save it without transparency"))
        return None
    if ending in NATURAL_ENDINGS and _natural_image(label) == "JPEG":
        out.append(Finding("error", str(label), _jpeg_label(ending)))
        return None
    if stored[label].mode == "P":
        out.append(Finding("error", str(label), PALETTE_LABEL))
        return None
    if stored[label].channels > 1:
        out.append(Finding("error", str(label), "label map saved as colour; save one channel of integer ids"))
        return None
    try:
        data, image_props = reader.read_images([str(p) for p in sorted(images)])
    except Exception as e:  # noqa: BLE001 - any reader failure means the file is unreadable
        out.append(Finding("error", str(min(images)), "cannot be read: it is corrupt or not an image; "
                                                            "re-export it", type(e).__name__))
        return None
    try:
        seg, seg_props = reader.read_seg(str(label))
    except Exception as e:  # noqa: BLE001
        out.append(Finding("error", str(label), "cannot be read; re-export the label map", type(e).__name__))
        return None
    if data.shape[0] != channels:
        out.append(Finding("error", str(images[0]), f"has other than the {channels} channel(s) dataset.json "
                                                    "declares; fix channel_names or the image (RGB counts 3)",
                           f"{data.shape[0]} channels"))
        return None
    if data.shape[1:] != seg.shape[1:]:
        out.append(Finding("error", str(label), "label shape differs from its image; resample the label onto the "
                                                "image grid", f"{seg.shape[1:]} vs {data.shape[1:]}"))
        return None
    geometry = _geometry_mismatch(image_props, seg_props)
    if geometry:
        out.append(Finding("error", str(label), "geometry differs from its image beyond tolerance; copy the image's "
                                                "geometry into the label (same grid, same world position)", geometry))
        return None
    declared = {v for v in meta["labels"].values() if isinstance(v, int)}
    if meta["labels"].get("ignore") is not None:
        declared.add(meta["labels"]["ignore"])
    found = np.unique(seg)
    integer = bool(np.all(found == np.round(found)))
    undeclared = sorted(set(found.astype(int).tolist()) - declared) if integer else []
    intensities = not integer or (bool(undeclared) and len(found) > len(declared))  # more values than labels
    if intensities and _few_valued(data, len(declared)):
        out.append(Finding("error", str(label), "holds intensities while its image holds a few integer values: "
                                                "imagesTr and labelsTr look swapped; swap the files of the two "
                                                "folders (names stay <case>_0000 in imagesTr, <case> in labelsTr)"))
        return None
    if not integer:
        out.append(Finding("error", str(label), "holds non-integer label values; save integer ids"))
        return None
    if undeclared == [255] and set(found.tolist()) <= {0, 255}:
        out.append(Finding("error", str(label), "holds 255, not declared in dataset.json labels: a mask saved as "
                                                "0/255; save it as 0/1 (divide by 255)"))
        return None
    if undeclared:
        ids = ", ".join(str(v) for v in sorted(declared))
        out.append(Finding("error", str(label), f"holds label ids not declared in dataset.json labels ({ids}); "
                                                "declare them or fix the label map", f"ids {undeclared}"))
        return None
    if float(data.max()) == float(data.min()):
        out.append(Finding("warning", str(images[0]), "is constant (one intensity everywhere)"))
    spacing = [s for s, n in zip(image_props.get("spacing", []), data.shape[1:]) if n > 1]
    if spacing and max(spacing) / min(spacing) > ANISOTROPY_WARNING:
        out.append(Finding("warning", str(images[0]), f"spacing is very anisotropic (over {ANISOTROPY_WARNING:g}:1)",
                           f"spacing {[float(v) for v in image_props['spacing']]}"))
    return {"foreground": bool((seg > 0).any()), "fraction": float((seg > 0).mean())}


def _geometry_mismatch(a: dict, b: dict) -> str | None:
    for key in ("spacing",):
        if key in a and key in b and not np.allclose(a[key], b[key], rtol=GEOMETRY_TOLERANCE):
            return f"{key} {[float(v) for v in b[key]]} vs {[float(v) for v in a[key]]}"
    sa, sb = a.get("sitk_stuff"), b.get("sitk_stuff")
    if sa and sb:
        for key in ("origin", "direction"):
            if not np.allclose(sa[key], sb[key], atol=GEOMETRY_TOLERANCE * max(1.0, np.abs(sa[key]).max())):
                return key
    return None


def mixed_types(paths: list[Path], stored: dict[Path, StoredImage]) -> list[Finding]:
    """A warning at each image stored in another type than most (e.g. uint16 among uint8 PNGs): fine when the
    values mean the same, a sign of two exports when they do not (CT needs Hounsfield units in every case)."""
    types = [stored[p].dtype for p in paths]
    common = max(types, key=types.count) if types else None  # ties: the first found
    return [Finding("warning", str(p), f"stores intensities as another type than most images ({common}); fine if "
                    "the values mean the same, else re-export them alike", t) for p, t in zip(paths, types)
            if t != common]


def _well_formed(images: dict[str, list[Path]], labels: dict[str, Path], meta: dict, out: list[Finding]) -> list[str]:
    """The cases, sorted, with a label and every declared channel, none of whose files has a finding yet."""
    ending, channels = meta["file_ending"], len(meta.get("channel_names", meta.get("modality", {})))
    flagged = {f.file for f in out}
    return [case for case in sorted(labels) if case in images and str(labels[case]) not in flagged
            and not flagged & {str(p) for p in images[case]}
            and {f"{case}_{i:04d}{ending}" for i in range(channels)} <= {p.name for p in images[case]}]


def validate_dataset(folder: Path, num_folds: int | None = None) -> list[Finding]:
    """Every finding for the raw dataset ``folder`` (nnU-Net format); ``num_folds``: the cross-validation
    about to run, which needs at least that many cases."""
    out: list[Finding] = []
    meta = _load_dataset_json(folder, out)
    if meta is None:
        return out  # without the file ending and channels no file can be named or read
    images, labels = _cases(folder, meta, out)
    if not labels:
        if not out:
            out.append(Finding("error", str(folder / "labelsTr"), "holds no label files"))
        return out
    if num_folds and len(labels) < num_folds:
        out.append(Finding("error", str(folder / "labelsTr"), f"{len(labels)} cases cannot fill {num_folds} folds; "
                                                             "add cases (nnU-Net's cross-validation needs 5)"))
    elif len(labels) < 5:
        out.append(Finding("warning", str(folder / "labelsTr"), f"only {len(labels)} cases: too few for 5-fold "
                                                               "cross-validation; train with -f all"))
    # Every independent problem in one pass: a case whose files are misnamed, unpaired or incomplete was reported
    # above and is left out of the content checks, which still read every other case.
    cases = _well_formed(images, labels, meta, out)
    stored = stored_findings([p for c in cases for p in (*sorted(images[c]), labels[c])], out)
    readable = [c for c in cases if all(p in stored for p in (*images[c], labels[c]))]
    if not readable:
        return out
    examples = [images[c][0] for c in readable[:3]]  # one corrupt file must not hide the reader
    for example in examples:
        try:  # nnU-Net prints the traceback of every reader that fails on the example file; keep stderr for us
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                reader = determine_reader_writer_from_dataset_json(meta, str(example))()
            break
        except Exception as e:  # noqa: BLE001
            failure = type(e).__name__
    else:
        return out + [Finding("error", str(examples[0]), "no nnU-Net reader opens it; convert it", failure)]
    stats = {}
    for case in readable:
        result = _check_case(images[case], labels[case], meta, reader, stored, out)
        if result is not None:
            stats[case] = result
    out += mixed_types([p for c in readable for p in images[c]], stored)
    empty = [c for c, s in stats.items() if not s["foreground"]]
    if stats and len(empty) == len(stats):
        out.append(Finding("error", str(folder / "labelsTr"), "every label map is empty; check the export"))
    elif empty:  # one finding per file, grouped into one line (every file with --all)
        out += [Finding("warning", str(labels[c]), "empty label map: fine for a case without the target, else "
                        "re-export the mask") for c in empty]
    out += [Finding("warning", str(labels[c]), "a target under 0.1% of the image (tiny targets: their Dice swings "
                    "with a few pixels)") for c, s in stats.items() if 0 < s["fraction"] < 1e-3]
    return out


# <stem><sep><letters><digits>, e.g. pat01_z05, brats13_p0001_z033, pancreas0001_s1124
SLICE_NAME = re.compile(r"(?P<stem>.*\d.*)(?P<sep>[_-])(?P<prefix>[A-Za-z]*)\d+")


def slices_per_patient(cases: list[str]) -> tuple[dict[str, list[str]], str] | None:
    """Cases grouped by the stem their names share, and a --group-pattern deriving it; None unless every name
    reads as a slice of a patient, with at least two patients and one of them holding two or more slices."""
    matches = [SLICE_NAME.fullmatch(c) for c in cases]
    if not cases or not all(matches):
        return None
    stems: dict[str, list[str]] = {}
    for case, match in zip(cases, matches):
        stems.setdefault(match["stem"], []).append(case)
    if len(stems) < 2 or max(len(v) for v in stems.values()) < 2:
        return None  # one stem is a dataset prefix (BraTS2021_00001), not a patient
    shapes = {(m["sep"], m["prefix"]) for m in matches}
    sep, prefix = next(iter(shapes))
    pattern = f"(.*){re.escape(sep)}{prefix}\\d+" if len(shapes) == 1 else "(.*)[_-][A-Za-z]*\\d+"
    return stems, pattern


def _groups_recorded(dataset: Dataset) -> bool:
    if not os.environ.get("nnUNet_preprocessed"):  # not set: nothing can have been recorded
        return False
    return (dataset.preprocessed / GROUPS_FILE).is_file()


def _grouping_finding(dataset: Dataset) -> Finding | None:
    """Slices of one patient split across folds inflate the statistics; say how to record the patients."""
    folder = dataset.raw
    ending = json.loads((folder / "dataset.json").read_text())["file_ending"]
    cases = sorted(p.name[: -len(ending)] for p in (folder / "labelsTr").iterdir()
                   if p.name.endswith(ending) and not p.name.startswith("."))
    found = slices_per_patient(cases)
    if found is None or _groups_recorded(dataset):
        return None
    stems, pattern = found
    examples = next(v for v in stems.values() if len(v) >= 2)[:2]
    return Finding("warning", str(folder / "imagesTr"), (
        f"{len(cases)} cases look like slices of {len(stems)} patients (e.g. {examples[0]}, {examples[1]}) but no "
        "patient groups are recorded (folds may split a patient, the report counts slices as patients); run "
        f"autosam split -d {dataset.id} --group-pattern '{pattern}'"))


def check_dataset(dataset: Dataset, num_folds: int | None = None, every_file: bool = False) -> list[Finding]:
    """Raise ``DatasetInvalid`` listing every error, one line per cause naming two of its files (every one with
    ``every_file``); return the warnings, one per cause."""
    if not dataset.raw.is_dir():
        raise AutosamError(f"{dataset.raw}: no such folder; check the id and $nnUNet_raw")
    findings = group(validate_dataset(dataset.raw, num_folds))
    if any(f.severity == "error" for f in findings):
        raise DatasetInvalid(findings, every_file)
    grouping = _grouping_finding(dataset)
    return findings + ([grouping] if grouping else [])

"""A folder of images to predict, checked against the model before nnU-Net's predictor sees it.

The same findings as ``autosam validate`` (``autosam.data.checks``), one line per cause with the fix: each file's
name and ending, the channel files of each case against the model's channels, each file as stored (readable,
declared size, finite values: ``autosam.data.raw``), its colour mode and channel count, and the channel files of a
case on one grid. nnU-Net would otherwise fail inside its worker processes (an RGB image for a one-channel model
ends in an ``IndexError`` and "Background workers died"), or predict a ``<case>.png`` under a shortened id.
"""

from __future__ import annotations

import re
from pathlib import Path

from autosam.data.checks import DatasetInvalid, Finding, group, image_mode_findings, mixed_types, stored_findings
from autosam.errors import AutosamError

CHANNEL_NAME = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")


def _channel_files(folder: Path, ending: str, out: list[Finding]) -> dict[str, dict[int, Path]]:
    """case -> channel index -> file, with a finding for every file that is not named <case>_XXXX<ending>."""
    cases: dict[str, dict[int, Path]] = {}
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if path.is_dir():
            continue
        if not path.name.endswith(ending):
            out.append(
                Finding(
                    "error",
                    str(path),
                    f"does not end in {ending}, the model's file ending; convert it or move it out of the input folder",
                )
            )
            continue
        match = CHANNEL_NAME.fullmatch(path.name[: -len(ending)])
        if match is None:
            out.append(
                Finding(
                    "error",
                    str(path),
                    f"name lacks the channel suffix: name it <case>_0000{ending} (one "
                    "file per channel: _0000, _0001, ...)",
                )
            )
            continue
        cases.setdefault(match["case"], {})[int(match["channel"])] = path
    return cases


def _channel_findings(
    case: str,
    files: dict[int, Path],
    counts: dict[Path, int],
    channels: int,
    folder: Path,
    ending: str,
    out: list[Finding],
) -> None:
    """The case's files must be _0000 onwards and hold the model's channels between them (an RGB file holds 3)."""
    held, needed = 0, []
    for index in sorted(files):
        if held >= channels:
            out.append(
                Finding(
                    "error",
                    str(files[index]),
                    f"stray channel file: the model takes {channels} "
                    "channel(s); remove it or move it out of the input folder",
                )
            )
            continue
        needed.append(index)
        held += counts[files[index]]
    gaps = [i for i in range(max(needed, default=-1) + 1) if i not in files]
    if gaps or held < channels:
        missing = gaps or [max(needed, default=-1) + 1]
        out.append(
            Finding(
                "error",
                str(folder / f"{case}_{missing[0]:04d}{ending}"),
                f"missing: the model takes {channels} channel(s); add this file or remove the case",
            )
        )
    elif held > channels:
        path = files[needed[-1]]
        out.append(
            Finding(
                "error",
                str(path),
                f"holds more channels than the model's {channels} (RGB counts 3); "
                "save it as greyscale (PIL: image.convert('L')) or with the model's "
                "channels",
                f"{counts[path]} channels",
            )
        )


def check_input_folder(folder: Path, dataset_json: dict) -> list[Finding]:
    """Raise ``DatasetInvalid`` listing every error of the images in ``folder`` for a model trained on a dataset
    described by ``dataset_json``; return the warnings."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AutosamError(f"{folder}: no such input folder")
    ending = dataset_json["file_ending"]
    channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
    out: list[Finding] = []
    cases = _channel_files(folder, ending, out)
    if not cases and not out:
        raise AutosamError(f"{folder}: no <case>_0000{ending} images to predict")
    paths = [p for files in cases.values() for p in files.values()]
    stored = stored_findings(paths, out)
    passed = [p for p in paths if p in stored and image_mode_findings(p, stored[p], channels, out)]
    counts = {p: stored[p].channels for p in passed}
    for case, files in cases.items():
        if all(p in counts for p in files.values()):
            _channel_findings(case, files, counts, channels, folder, ending, out)
            shapes = {stored[p].shape for p in files.values()}
            if len(shapes) > 1:
                out.append(
                    Finding(
                        "error",
                        str(files[min(files)]),
                        "its channel files differ in shape; resample them onto one grid",
                        " vs ".join(map(str, shapes)),
                    )
                )
    out += mixed_types(passed, stored)
    findings = group(out)
    if any(f.severity == "error" for f in findings):
        raise DatasetInvalid(findings)
    return findings

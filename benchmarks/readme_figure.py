"""Copy the demo report's figures into docs/ for the README, with the headline they illustrate.

    autosam demo --dir autosam_demo && python benchmarks/readme_figure.py autosam_demo
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from autosam.evaluation.report import headline
from autosam.experiments.demo import DEMO_DATASET

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(demo_dir: Path) -> None:
    report = demo_dir / "nnUNet_results" / DEMO_DATASET / "autosam_report"
    DOCS.mkdir(exist_ok=True)
    for name in ("overlays.png", "paired_dice.png"):
        shutil.copy(report / name, DOCS / f"demo_{name}")
    comparison = json.loads((report / "comparison.json").read_text())
    print("\n".join(headline(_with_nan(comparison))))
    print(f"copied figures to {DOCS}")


def _with_nan(value):
    if isinstance(value, dict):
        return {k: _with_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_nan(v) for v in value]
    return float("nan") if value is None else value


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "autosam_demo"))

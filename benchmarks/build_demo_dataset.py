"""Rebuild autosam's embedded demo dataset from the BUSI release in nnU-Net format.

All 100 BUSI cases, downscaled so the longer side is 128 px (images: Lanczos; labels: nearest), written to
autosam/experiments/demo_data/Dataset901_BUSIDemo with dataset.json and the patient-grouped folds.

    python benchmarks/build_demo_dataset.py ../shared/data/Dataset501_BUSI
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from PIL import Image

LONGER_SIDE = 128
TARGET = Path(__file__).resolve().parents[1] / "autosam" / "demo_data" / "Dataset901_BUSIDemo"


def downscale(path: Path, out: Path, resample: int) -> None:
    image = Image.open(path)
    scale = LONGER_SIDE / max(image.size)
    image.resize((round(image.width * scale), round(image.height * scale)), resample).save(out, optimize=True)


def main(source: Path) -> None:
    if TARGET.exists():
        shutil.rmtree(TARGET)
    for folder in ("imagesTr", "labelsTr"):
        (TARGET / folder).mkdir(parents=True)
    for label in sorted((source / "labelsTr").glob("*.png")):
        case = label.stem
        downscale(source / "imagesTr" / f"{case}_0000.png", TARGET / "imagesTr" / f"{case}_0000.png", Image.LANCZOS)
        downscale(label, TARGET / "labelsTr" / label.name, Image.NEAREST)
    meta = json.loads((source / "dataset.json").read_text())
    meta.update({
        "name": "BUSI demo (downscaled)",
        "description": f"Breast ultrasound lesions, all 100 cases of the BUSI subset, longer side {LONGER_SIDE} px",
        "reference": "Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
                     "Data in Brief 28 (2020) 104863",
        "licence": "CC0 1.0",
    })
    (TARGET / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copy(source / "splits_final.json", TARGET / "splits_final.json")
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""SAM-sized patches against nnU-Net's 2d patches: step time and Dice, the same set-up, budget, seed and fold.

Plans the dataset twice in separate folders, once as autosam plans it (2d_sam resampled so a patch is the
SAM input: `planners.sam_planner.sam_sized`) and once with --native-patches (nnU-Net's 2d patch, resized
inside the network), then for each: a full nnU-Net training iteration and the bare step
(`step_overhead.measure`), and a short training of fold 0 validated by nnU-Net (foreground Dice, mean over
the fold's validation cases, at the original resolution).

    python benchmarks/sam_patches.py                     # BUSI (shared data or the bundled subset)
    python benchmarks/sam_patches.py --cases 60 --epochs 20 --iterations 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from common import default_source, planned_subset
from step_overhead import measure

from autosam.cli import main as autosam
from autosam.paths import configure_training_processes, validation_summary
from autosam.plans import read_sam_plan


def run_mode(source: Path, root: Path, native: bool, args: argparse.Namespace) -> dict:
    dataset = planned_subset(source, root, args.cases, args.setup, args.image_size, args.batch_size, "cpu",
                             ("--native-patches",) if native else ())
    configure_training_processes("cpu")
    row = measure(dataset, None, torch.device("cpu"), args.step_iterations, precision=False)
    if autosam(["train", "-d", dataset.name, "-f", "0", "--device", "cpu", "--epochs", str(args.epochs),
                "--iterations", str(args.iterations), "--seed", "0"]):
        raise SystemExit(f"training failed for {dataset}")
    fold = next((root / "nnUNet_results").rglob("fold_0"))
    summary = json.loads(validation_summary(fold).read_text())
    return {**row, "mode": "nnU-Net 2d patch" if native else "SAM-sized patch",
            "patch": "x".join(map(str, read_sam_plan(dataset).configuration.patch_size)),
            "dice": summary["foreground_mean"]["Dice"], "cases": len(summary["metric_per_case"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an nnU-Net raw dataset folder (default: BUSI)")
    parser.add_argument("--setup", default="vit_t_encdec_lora")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--step-iterations", type=int, default=6, help="timed iterations per step measurement")
    args = parser.parse_args()
    source = default_source(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for native in (True, False):
            rows.append(run_mode(source, Path(work) / ("native" if native else "sam"), native, args))
    print(f"\n{source.name}, {args.cases} cases, {args.setup} at {args.image_size} px from random weights, batch "
          f"{args.batch_size}, {args.epochs} x {args.iterations} iterations, fold 0, seed 0, CPU")
    print(f"{'patches':18} {'patch':>9} {'full ms':>8} {'bare ms':>8} {'overhead':>9} {'val Dice':>9} {'cases':>6}")
    for r in rows:
        print(f"{r['mode']:18} {r['patch']:>9} {r['full_ms']:>8.0f} {r['bare_ms']:>8.0f} "
              f"{100 * (r['full_ms'] / r['bare_ms'] - 1):>8.0f}% {r['dice']:>9.3f} {r['cases']:>6}")
    print(f"full iteration, SAM-sized vs 2d patches: {rows[0]['full_ms'] / rows[1]['full_ms']:.2f}x faster")


if __name__ == "__main__":
    main()

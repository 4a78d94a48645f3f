"""What 'autosam pretrain' buys: SAM fine-tuned from a self-supervised start against the same start without it.

For each target dataset: one random-weight ViT-T is written in the official MobileSAM layout (seeded), then
pretrained with 'autosam pretrain' (MAE) on the images of the other shared datasets (labels never read; a set
holding the target's patients is left out: Dataset506 is Dataset503's patients as volumes), and SAM is
fine-tuned on the target twice with autosam's plan-and-preprocess and train (nnU-Net's preprocessing, loop
and validation, the dataset's own splits_final.json), once from the random file and once from the pretrained
one: same set-up, image size, budget, seed and fold, so the only difference is the pretraining. Prints
nnU-Net's validation Dice (foreground mean over the fold's validation cases, at the original resolution).

    python benchmarks/pretraining_gain.py                       # targets 501 and 503, CPU-sized budget
    python benchmarks/pretraining_gain.py --targets 501 --pretrain-iterations 100 --epochs 20

Writes ``benchmarks/results/pretraining_gain_<targets>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from autosam.cli import main as autosam
from autosam.files import atomic_torch_save
from autosam.paths import Dataset
from autosam.pretraining.mae import PretrainOptions, pretrain
from autosam.sam.registry import build_sam
from autosam.trainers.seeding import seed_everything

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SAME_PATIENTS = {"503": {"506"}, "506": {"503"}}  # sets cut from the same patients' scans


def pool_for(target: str, available: list[str]) -> list[str]:
    return [d for d in available if d != target and d not in SAME_PATIENTS.get(target, set())]


def write_random_base(path: Path, seed: int) -> Path:
    """A random-weight ViT-T in the official key layout at its native 1024 px shapes."""
    seed_everything(seed)
    atomic_torch_save(build_sam("vit_t", 1024, 4).state_dict(), path)
    return path


def fine_tune(target: str, base: Path, work: Path, label: str, args: argparse.Namespace) -> dict:
    """Plan with ``base`` as the checkpoint, train fold ``args.fold``; nnU-Net's validation summary."""
    os.environ["nnUNet_results"] = str(work / f"results_{label}")
    started = time.time()
    plan = ["plan-and-preprocess", "-d", target, "--setup", args.setup, "--image-size", str(args.image_size),
            "--batch-size", str(args.batch_size), "--checkpoint", str(base), "--device", "cpu",
            "--seed", str(args.seed)]
    if autosam(plan):
        raise SystemExit(f"planning {target} from {base} failed")
    if autosam(["train", "-d", target, "-f", str(args.fold), "--device", "cpu", "--epochs", str(args.epochs),
                "--iterations", str(args.iterations), "--seed", str(args.seed)]):
        raise SystemExit(f"training {target} from {base} failed")
    fold = next(Path(os.environ["nnUNet_results"]).rglob(f"fold_{args.fold}"))
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    return {"start": label, "dice": summary["foreground_mean"]["Dice"], "cases": len(summary["metric_per_case"]),
            "seconds": round(time.time() - started)}


def run_target(target: str, available: list[str], work: Path, args: argparse.Namespace) -> dict:
    for name in ("nnUNet_preprocessed", "nnUNet_results"):
        (work / name).mkdir(parents=True, exist_ok=True)
    os.environ["nnUNet_preprocessed"] = str(work / "nnUNet_preprocessed")
    weights = work / "weights"
    weights.mkdir(exist_ok=True)
    random_base = write_random_base(weights / "random_vit_t.pth", args.seed)
    pool = pool_for(target, available)
    started = time.time()
    pretrained = pretrain(weights / f"mae_vit_t_not_{target}.pth", PretrainOptions(
        backbone="vit_t", image_size=args.image_size, epochs=args.pretrain_epochs,
        iterations=args.pretrain_iterations, batch_size=args.pretrain_batch, learning_rate=args.pretrain_lr,
        base=str(random_base), seed=args.seed, device="cpu"), datasets=[Dataset.resolve(d) for d in pool])
    pretrain_seconds = round(time.time() - started)
    rows = [fine_tune(target, random_base, work, "random", args),
            fine_tune(target, pretrained.checkpoint, work, "pretrained", args)]
    return {"target": target, "pool": pool, "pretrain_loss": pretrained.losses,
            "pretrain_source": pretrained.entry.source, "pretrain_seconds": pretrain_seconds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED, help="folder of nnU-Net raw datasets (../shared/data)")
    parser.add_argument("--targets", nargs="+", default=["501", "503"])
    parser.add_argument("--setup", default="vit_t_encdec_vanilla",
                        help="fine-tuning set-up; vanilla lets every weight of both starts train (default)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--pretrain-iterations", type=int, default=16, help="MAE steps per pretraining epoch")
    parser.add_argument("--pretrain-batch", type=int, default=8)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ["nnUNet_raw"] = str(args.data)
    handler = logging.StreamHandler()  # autosam's log lines, as the command line prints them
    handler.setFormatter(logging.Formatter("autosam: %(message)s"))
    logging.getLogger("autosam").addHandler(handler)
    logging.getLogger("autosam").setLevel(logging.INFO)
    available = sorted(str(Dataset.resolve(p.name).id) for p in args.data.glob("Dataset*")
                       if (p / "dataset.json").is_file())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets:
            results.append(run_target(target, available, Path(tmp) / target, args))
    out = REPO / "benchmarks" / "results" / f"pretraining_gain_{'_'.join(args.targets)}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"arguments": {k: str(v) for k, v in vars(args).items()}, "results": results},
                              indent=2) + "\n")
    print(f"\n{args.setup} at {args.image_size} px, batch {args.batch_size}, {args.epochs} x {args.iterations} "
          f"iterations, fold {args.fold}, seed {args.seed}, CPU; MAE: {args.pretrain_epochs} x "
          f"{args.pretrain_iterations} steps of batch {args.pretrain_batch}, lr {args.pretrain_lr:g}; both starts "
          "from the same random ViT-T file")
    print(f"{'target':8} {'pretrained on':22} {'MAE loss':>17} {'Dice random':>12} {'Dice MAE':>9} {'gain':>7} "
          f"{'cases':>6}")
    for r in results:
        random_row, mae_row = r["rows"]
        loss = f"{r['pretrain_loss'][0]:.3f}" if len(r["pretrain_loss"]) == 1 else \
            f"{r['pretrain_loss'][0]:.3f}->{r['pretrain_loss'][-1]:.3f}"
        print(f"{r['target']:8} {'+'.join(r['pool']):22} {loss:>17} {random_row['dice']:>12.3f} "
              f"{mae_row['dice']:>9.3f} {mae_row['dice'] - random_row['dice']:>+7.3f} {mae_row['cases']:>6}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()

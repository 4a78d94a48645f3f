"""CPU cost of the set-ups: seconds per image for forward and training step, and saved activations.

For each backbone and image size, the decoder-only and the encoder+decoder LoRA set-ups are timed on this
machine's CPU (random weights, batch 1, median of --repeats after one warm-up), and the bytes autograd saves
for backward are measured on the meta device. Writes benchmarks/results/model_costs.json and prints a table.

    python benchmarks/model_costs.py                       # the full grid (vit_h takes minutes)
    python benchmarks/model_costs.py --backbones vit_t --sizes 256 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from autosam.sam.costs import meta_network
from autosam.sam.memory import saved_activation_bytes
from autosam.sam.model import build_network
from autosam.sam.setups import Setup

DEFAULT_GRID = {"vit_t": (256, 512, 1024), "vit_b": (256, 512), "vit_h": (256, 512)}
NUM_CLASSES = 2


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(setup: Setup, size: int, repeats: int) -> dict:
    network = build_network(setup, size, NUM_CLASSES, 1)
    x = torch.randn(1, 1, size, size)
    y = torch.randint(0, NUM_CLASSES, (1, size, size))

    def forward() -> None:
        with torch.no_grad():
            network.eval()(x)

    def train_step() -> None:
        network.train()
        network.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(network(x), y).backward()

    saved = saved_activation_bytes(meta_network(setup, size, NUM_CLASSES), 1, size, 1)
    return {
        "setup": setup.name,
        "image_size": size,
        "forward_s": round(_median_seconds(forward, repeats), 3),
        "train_step_s": round(_median_seconds(train_step, repeats), 3),
        "saved_activations_mib": round(saved / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(DEFAULT_GRID))
    parser.add_argument("--sizes", nargs="+", type=int, help="image sizes (default: 256 512, and 1024 for vit_t)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "model_costs.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    print(f"{'set-up':<20} {'size':>5} {'fwd s/img':>10} {'train s/img':>12} {'saved act MiB':>14}", flush=True)
    for backbone in args.backbones:
        for size in args.sizes or DEFAULT_GRID.get(backbone, (256, 512)):
            for scope in ("dec", "encdec"):
                row = measure(Setup(backbone, scope, "lora"), size, args.repeats)
                rows.append(row)
                print(f"{row['setup']:<20} {size:>5} {row['forward_s']:>10.3f} {row['train_step_s']:>12.3f} "
                      f"{row['saved_activations_mib']:>14.1f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

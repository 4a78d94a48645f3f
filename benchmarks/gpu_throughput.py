"""SAM training throughput on a GPU: images/s, model FLOP utilisation and CUDA peak memory vs the estimator.

For ViT-B and ViT-H encoder+decoder LoRA at 512 and 1024 px: warm-up steps, then timed AdamW (fused) steps
with nnU-Net's loss under bf16 autocast, random weights (throughput does not depend on them). FLOPs of a
step (forward + backward) are counted once on the meta device; MFU = achieved FLOP/s / the card's dense bf16
peak. Memory: torch.cuda.max_memory_allocated against the estimator's tensor prediction for bf16 autocast
(``precision="bf16"``, the activations under CUDA's autocast rules). Writes benchmarks/results/gpu_throughput.json.

    python benchmarks/gpu_throughput.py [--steps 10] [--batch 4] [--peak-tflops N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from autosam.sam.costs import meta_network
from autosam.sam.memory import GIB, estimate_training_memory, nnunet_loss
from autosam.sam.model import build_network
from autosam.sam.setups import Setup

GRID = [("vit_b_encdec_lora", 512), ("vit_b_encdec_lora", 1024), ("vit_h_encdec_lora", 512),
        ("vit_h_encdec_lora", 1024)]
NUM_CLASSES = 2
# dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by a substring of the device name
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def step_flops(setup: Setup, size: int, batch: int) -> int:
    """FLOPs of one training step (forward, loss, backward) counted on the meta device."""
    network = meta_network(setup, size, NUM_CLASSES)
    x = torch.zeros(batch, 1, size, size, device="meta")
    y = torch.zeros(batch, 1, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        nnunet_loss()(network(x), y).backward()
    return counter.get_total_flops()


def timed_steps(setup: Setup, size: int, batch: int, steps: int, warmup: int = 3) -> tuple[float, int]:
    """(seconds per step, peak bytes allocated) of real bf16 training steps on the GPU."""
    network = build_network(setup, size, NUM_CLASSES, 1)
    network.cuda().train()
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-4, fused=True)
    loss = nnunet_loss()
    x = torch.randn(batch, 1, size, size, device="cuda")
    y = torch.randint(0, NUM_CLASSES, (batch, 1, size, size), device="cuda").float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            value = loss(network(x), y)
        value.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return seconds, torch.cuda.max_memory_allocated()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: from its name)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_throughput.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures a GPU")
    name = torch.cuda.get_device_name()
    peak_tflops = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    print(f"{name}; bf16 peak {peak_tflops} TFLOP/s; batch {args.batch}; {args.steps} timed steps", flush=True)
    print(f"{'set-up':<20} {'size':>5} {'img/s':>7} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9} {'predicted':>10} "
          f"{'ratio':>6}", flush=True)
    rows = []
    for setup_name, size in GRID:
        setup = Setup.parse(setup_name)
        flops = step_flops(setup, size, args.batch)
        try:
            seconds, peak = timed_steps(setup, size, args.batch, args.steps)
        except torch.OutOfMemoryError:
            print(f"{setup_name:<20} {size:>5} out of memory at batch {args.batch}", flush=True)
            torch.cuda.empty_cache()
            continue
        torch.cuda.empty_cache()  # the step's network and optimiser are gone with timed_steps' frame
        predicted = estimate_training_memory(setup, size, args.batch, NUM_CLASSES, 1, device="cpu",
                                             precision="bf16").peak
        achieved = flops / seconds / 1e12
        mfu = achieved / peak_tflops if peak_tflops else None
        rows.append({"setup": setup_name, "image_size": size, "batch": args.batch, "images_per_s": args.batch / seconds,
                     "step_tflop": flops / 1e12, "achieved_tflops": achieved, "mfu": mfu, "peak_allocated": peak,
                     "predicted_tensors": predicted, "ratio": predicted / peak})
        print(f"{setup_name:<20} {size:>5} {args.batch / seconds:>7.1f} {achieved:>8.1f} "
              f"{'-' if mfu is None else f'{100 * mfu:.1f}%':>6} {peak / GIB:>9.2f} {predicted / GIB:>10.2f} "
              f"{predicted / peak:>6.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": name, "peak_tflops": peak_tflops, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Memory estimator vs measurement, for every set-up of ViT-T, ViT-B and SAM 2.1's Hiera-T at 256 and 512 px
(``--quick``: ViT-T and Hiera-T at 256).

Predicted: ``autosam.sam.memory.estimate_training_memory`` (meta-device probe at batch 1, scaled to the batch).
Measured: two real AdamW steps with nnU-Net's loss on this machine's CPU, every tensor tracked by torch's
MemTracker (on a CUDA machine, add --device cuda: then torch.cuda.max_memory_allocated is the reference).
With ``--precision bf16`` both run as the trainer runs bf16 (autocast, frozen weights stored in bf16; on a CPU
that has native bf16, as the planner plans there). Prints the ratio per row and the worst one; writes
benchmarks/results/memory_estimator.json.

    python benchmarks/memory_estimator.py [--quick] [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from autosam.sam.frozen import store_frozen_weights
from autosam.sam.memory import (
    ALLOCATOR_OVERHEAD,
    CUDA_CONTEXT_BYTES,
    estimate_training_memory,
    measured_training_peak,
    nnunet_loss,
)
from autosam.sam.model import build_network
from autosam.sam.setups import all_setups

NUM_CLASSES = 3
BATCH = 2


def measure_cuda(network, batch: int, patch: tuple[int, int]) -> int:
    network.cuda().train()
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-4)
    loss = nnunet_loss()
    x = torch.randn(batch, network.input_channels, *patch, device="cuda")
    y = torch.randint(0, network.num_classes, (batch, 1, *patch), device="cuda").float()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        out = loss(network(x), y)  # in the network's own precision
        out.backward()
        optimizer.step()
    return torch.cuda.max_memory_allocated()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ViT-T and Hiera-T at 256 px only")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory_estimator.json")
    args = parser.parse_args()

    grid = [(s, 256) for s in all_setups(("vit_t", "sam2_t"))]
    if not args.quick:
        grid += [(s, size) for size in (256, 512) for s in all_setups(("vit_b",))] + [
            (s, 512) for s in all_setups(("vit_t", "sam2_t"))]
    rows = []
    print(f"{'set-up':<28} {'size':>5} {'batch':>5} {'predicted MiB':>14} {'measured MiB':>13} {'ratio':>6}",
          flush=True)
    for setup, size in grid:
        network = build_network(setup, size, NUM_CLASSES, 1)
        if args.precision == "bf16":  # as the trainer runs it (sam_trainer.py)
            network.compute_dtype = torch.bfloat16
            store_frozen_weights(network, torch.bfloat16)
        if args.device == "cuda":
            measured = measure_cuda(network, BATCH, (size, size))
        else:
            measured = measured_training_peak(network, BATCH, (size, size))
        # tensors only: the CUDA allocator's counter, like MemTracker, excludes the context and fragmentation
        peak = estimate_training_memory(setup, size, BATCH, NUM_CLASSES, 1, device=args.device,
                                        precision=args.precision).peak
        predicted = (peak - CUDA_CONTEXT_BYTES) / ALLOCATOR_OVERHEAD if args.device == "cuda" else peak
        ratio = predicted / measured
        rows.append({"setup": setup.name, "image_size": size, "batch": BATCH, "predicted": predicted,
                     "measured": measured, "ratio": round(ratio, 3)})
        print(f"{setup.name:<28} {size:>5} {BATCH:>5} {predicted / 2**20:>14.1f} {measured / 2**20:>13.1f} "
              f"{ratio:>6.3f}", flush=True)
    worst = max(rows, key=lambda r: abs(r["ratio"] - 1))
    print(f"worst ratio: {worst['ratio']:.3f} ({worst['setup']} at {worst['image_size']} px); "
          f"range {min(r['ratio'] for r in rows):.3f}-{max(r['ratio'] for r in rows):.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": args.device, "precision": args.precision, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

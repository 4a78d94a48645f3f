"""SAM training throughput on a GPU: images/s, TFLOP/s, model FLOP utilisation and peak memory vs the estimator,
today's path against the fused one in the same process.

For each set-up and size of the grid (default ViT-B and ViT-H encoder+decoder LoRA at 512 and 1024 px) and each
batch (2, 4, 8 and the planner's choice for this card), three variants are built and timed interleaved over
``--rounds`` rounds (CUDA events, ``--steps`` steps per variant and round after warm-up; compile time reported
apart as the first step's time less a steady step's):
  explicit   segment-anything's own attention classes, eager (the path before the fused attention)
  fused      the fused attentions (SDPA with the rel-pos bias as its mask), eager
  compiled   fused, each encoder block torch.compile'd as the trainer does on CUDA (FlexAttention in the
             global blocks)
A step is nnU-Net's: bf16 autocast, the network, nnU-Net's Dice + CE, backward, AdamW (fused). FLOPs of a step
are counted once, on the meta device, on the explicit-attention graph; MFU = achieved FLOP/s / the card's dense
bf16 peak. Peak memory is this variant's step (its weights, gradients and AdamW state plus what the step
allocates) against ``estimate_training_memory(precision="bf16")``. Writes benchmarks/results/gpu_throughput.json
(JSON) and prints the table.

    python benchmarks/gpu_throughput.py                                    # the whole grid
    python benchmarks/gpu_throughput.py --grid vit_b_encdec_lora:1024 vit_h_encdec_lora:1024 --batches 2 plan \\
        --rounds 2 --steps 3                                               # about 8 minutes on an H100
    python benchmarks/gpu_throughput.py --device cpu --grid test_vit_encdec_lora:64 --batches 2 --rounds 1
                                                                           # the code path on a CPU (no MFU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from autosam.planners.choose import MAX_BATCH, MEMORY_HEADROOM, MIN_BATCH
from autosam.sam.adapter import encoder_attention_blocks
from autosam.sam.attention import use_fused_attention
from autosam.sam.costs import meta_network
from autosam.sam.memory import GIB, estimate_training_memory, nnunet_loss
from autosam.sam.model import build_network
from autosam.sam.setups import Setup

GRID = ["vit_b_encdec_lora:512", "vit_b_encdec_lora:1024", "vit_h_encdec_lora:512", "vit_h_encdec_lora:1024"]
VARIANTS = ("explicit", "fused", "compiled")
NUM_CLASSES = 2
# dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by a substring of the device name
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def step_flops(setup: Setup, size: int, batch: int) -> int:
    """FLOPs of one training step (forward, loss, backward) counted on the meta device, explicit attention."""
    network = use_fused_attention(meta_network(setup, size, NUM_CLASSES), fused=False)
    x = torch.zeros(batch, 1, size, size, device="meta")
    y = torch.zeros(batch, 1, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        nnunet_loss()(network(x), y).backward()
    return counter.get_total_flops()


def planner_batch(setup: Setup, size: int, memory_bytes: float) -> int:
    """The planner's rule: the largest batch in MIN_BATCH..MAX_BATCH whose estimate fits the card's budget."""
    batch = MIN_BATCH
    for candidate in range(MIN_BATCH + 1, MAX_BATCH + 1):
        needed = estimate_training_memory(setup, size, candidate, NUM_CLASSES, 1, precision="bf16").peak
        if needed > memory_bytes * MEMORY_HEADROOM:
            break
        batch = candidate
    return batch


class Variant:
    """One network, its optimiser and a batch held on the device; ``run`` times steps."""

    def __init__(self, kind: str, setup: Setup, size: int, batch: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.device = device
        self.network = build_network(setup, size, NUM_CLASSES, 1).to(device).train()
        use_fused_attention(self.network, fused=kind != "explicit")
        if kind == "compiled":
            for block in encoder_attention_blocks(self.network.sam.image_encoder):
                block.compile()
        self.trainable = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=1e-4, fused=device.type == "cuda")
        self.loss = nnunet_loss()
        self.x = torch.randn(batch, 1, size, size, device=device)
        self.y = torch.randint(0, NUM_CLASSES, (batch, 1, size, size), device=device).float()
        self.first_step_s = self._seconds(1)  # compiles, for the compiled variant
        self.warm_step_s = self._seconds(2)
        self.times: list[float] = []
        self.peak = 0

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            value = self.loss(self.network(self.x), self.y)
        value.backward()
        self.optimizer.step()

    def resident_bytes(self) -> int:
        tensors = [*self.network.parameters(), *self.network.buffers()]
        tensors += [p.grad for p in self.trainable if p.grad is not None]
        tensors += [t for state in self.optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _seconds(self, steps: int) -> float:
        if self.device.type != "cuda":
            start = time.perf_counter()
            for _ in range(steps):
                self.step()
            return (time.perf_counter() - start) / steps
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        begin.record()
        for _ in range(steps):
            self.step()
        end.record()
        torch.cuda.synchronize()
        return begin.elapsed_time(end) / 1000 / steps

    def run(self, steps: int) -> None:
        if self.device.type == "cuda":  # this variant's step: what others hold is subtracted
            others = torch.cuda.memory_allocated() - self.resident_bytes()
            torch.cuda.reset_peak_memory_stats()
        self.times.append(self._seconds(steps))
        if self.device.type == "cuda":
            self.peak = max(self.peak, torch.cuda.max_memory_allocated() - others)


def measure_cell(setup: Setup, size: int, batch: int, args: argparse.Namespace, device: torch.device) -> list[dict]:
    flops = step_flops(setup, size, batch)
    predicted = estimate_training_memory(setup, size, batch, NUM_CLASSES, 1, precision="bf16").peak
    variants = {}
    for kind in args.variants:
        try:
            variants[kind] = Variant(kind, setup, size, batch, device)
        except torch.OutOfMemoryError:
            print(f"{setup.name:20} {size:>5} {batch:>5} {kind:9} out of memory", flush=True)
            torch.cuda.empty_cache()
    for _ in range(args.rounds):
        for variant in variants.values():
            variant.run(args.steps)
    rows = []
    base = statistics.median(variants["explicit"].times) if "explicit" in variants else None
    for kind, v in variants.items():
        seconds = statistics.median(v.times)
        achieved = flops / seconds / 1e12
        mfu = achieved / args.peak_tflops if args.peak_tflops else None
        rows.append(
            {
                "setup": setup.name,
                "image_size": size,
                "batch": batch,
                "variant": kind,
                "seconds": seconds,
                "images_per_s": batch / seconds,
                "step_tflop": flops / 1e12,
                "achieved_tflops": achieved,
                "mfu": mfu,
                "compile_s": max(0.0, v.first_step_s - v.warm_step_s),
                "peak_bytes": v.peak or None,
                "predicted_bytes": predicted,
                "estimator_ratio": predicted / v.peak if v.peak else None,
                "speedup_vs_explicit": base / seconds if base else None,
            }
        )
        r = rows[-1]
        print(
            f"{setup.name:20} {size:>5} {batch:>5} {kind:9} {r['images_per_s']:>7.2f} {achieved:>8.1f} "
            f"{'-' if mfu is None else f'{100 * mfu:.1f}%':>6} {r['compile_s']:>8.1f} "
            f"{'-' if not v.peak else f'{v.peak / GIB:.2f}':>9} {predicted / GIB:>9.2f} "
            f"{'-' if not v.peak else f'{predicted / v.peak:.2f}':>6} "
            f"{'-' if not base else f'{base / seconds:.2f}x':>8}",
            flush=True,
        )
    del variants
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", nargs="+", default=GRID, help="set-up:size entries")
    parser.add_argument("--batches", nargs="+", default=["2", "4", "8", "plan"], help="sizes, or 'plan'")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: from its name)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_throughput.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures a GPU (--device cpu runs its code path only)")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    memory = torch.cuda.get_device_properties(0).total_memory if device.type == "cuda" else 0
    args.peak_tflops = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    print(
        f"{name}; bf16 peak {args.peak_tflops} TFLOP/s; {args.rounds} rounds x {args.steps} steps, interleaved",
        flush=True,
    )
    print(
        f"{'set-up':20} {'size':>5} {'batch':>5} {'variant':9} {'img/s':>7} {'TFLOP/s':>8} {'MFU':>6} "
        f"{'compile':>8} {'peak GiB':>9} {'predicted':>9} {'ratio':>6} {'vs expl.':>8}",
        flush=True,
    )
    rows = []
    for entry in args.grid:
        setup_name, size = entry.split(":")
        setup, size = Setup.parse(setup_name), int(size)
        batches = {
            planner_batch(setup, size, memory) if b == "plan" and memory else int(b)
            for b in args.batches
            if b != "plan" or memory
        }
        for batch in sorted(batches):
            rows += measure_cell(setup, size, batch, args, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"device": name, "peak_tflops": args.peak_tflops, "torch": torch.__version__, "rows": rows}, indent=2
        )
    )


if __name__ == "__main__":
    main()

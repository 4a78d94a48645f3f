"""What nnU-Net's loop costs around the SAM step: a full training iteration against the bare model step.

For each set-up, on one dataset planned once: nnU-Net's trainer is built and started as `autosam train`
builds it (its data loader, augmentation and the planned worker count), then, side by side in one run,
  full = next(loader) + train_step   (loading, augmentation, forward, loss, backward, AdamW)
  bare = train_step on one batch held in memory (the same step, nothing loaded)
timed as the median over --iterations after warm-up. `overhead = full / bare - 1` is what loading and
augmentation add to a step; the goal is at most 10 %. With --precision the bare step is also timed without
autocast (fp32) and under bf16 autocast, to show what bf16 gives on this device (the planned precision is
what the full and bare columns run: bf16 where the hardware computes it natively, rule R21, else fp32).

    python benchmarks/step_overhead.py                                  # BUSI (shared data or bundled subset)
    python benchmarks/step_overhead.py --setups vit_t_encdec_lora vit_t_dec_lora --image-size 256 --precision
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from common import measure_setups, started_trainer, subset_arguments

from autosam.paths import Dataset
from autosam.sam.frozen import store_frozen_weights


def _median_ms(step, iterations: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(dataset: Dataset, setup: str, device: torch.device, iterations: int, precision: bool) -> dict:
    trainer = started_trainer(dataset, setup, device)
    loader = trainer.dataloader_train
    held = next(loader)
    row = {
        "setup": setup,
        "batch": trainer.configuration_manager.batch_size,
        "patch": "x".join(map(str, trainer.configuration_manager.patch_size)),
        "workers": int(os.environ.get("nnUNet_n_proc_DA", "0")),
        "full_ms": _median_ms(lambda: trainer.train_step(next(loader)), iterations),
        "bare_ms": _median_ms(lambda: trainer.train_step(held), iterations),
    }
    if precision:  # the bare step without autocast, then under bf16 autocast, whatever the plan says
        network = trainer._sam_network()
        planned = network.precision
        network.precision = "fp32"
        network.float()  # the frozen weights a bf16 trainer stored in bf16, back in fp32
        row["bare_fp32_ms"] = _median_ms(lambda: trainer.train_step(held), iterations)
        network.compute_dtype = torch.bfloat16
        store_frozen_weights(network, torch.bfloat16)  # as the trainer stores them under bf16
        row["bare_bf16_ms"] = _median_ms(lambda: trainer.train_step(held), iterations)
        network.compute_dtype, network.precision = None, planned
    if hasattr(loader, "_finish"):  # stop augmentation workers (the fold folder is temporary: nothing to save)
        loader._finish()
    return row


def main() -> None:
    parser = subset_arguments(__doc__, ["vit_t_dec_lora", "vit_t_encdec_lora", "vit_t_encdec_vanilla"])
    parser.add_argument("--precision", action="store_true", help="also time the bare step under bf16 autocast")
    args = parser.parse_args()
    source, device, rows = measure_setups(args, lambda d, s, dev: measure(d, s, dev, args.iterations, args.precision))

    print(f"\n{source.name}, {args.cases} cases, SAM input {args.image_size} px, device {device}, "
          f"{torch.get_num_threads()} threads")
    header = f"{'set-up':24} {'batch':>5} {'patch':>9} {'workers':>7} {'full ms':>9} {'bare ms':>9} {'overhead':>9}"
    print(header + (f" {'fp32 ms':>8} {'bf16 ms':>8} {'bf16 speed-up':>13}" if args.precision else ""))
    for r in rows:
        line = (f"{r['setup']:24} {r['batch']:>5} {r['patch']:>9} {r['workers']:>7} {r['full_ms']:>9.0f} "
                f"{r['bare_ms']:>9.0f} {100 * (r['full_ms'] / r['bare_ms'] - 1):>8.0f}%")
        if args.precision:
            line += (f" {r['bare_fp32_ms']:>8.0f} {r['bare_bf16_ms']:>8.0f} "
                     f"{r['bare_fp32_ms'] / r['bare_bf16_ms']:>12.2f}x")
        print(line)


if __name__ == "__main__":
    main()

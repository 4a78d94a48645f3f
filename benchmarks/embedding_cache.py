"""Decoder-only training with and without the embedding cache, side by side in one run.

For each set-up, on one dataset planned once (random weights, ``--from-scratch``: time does not depend on them),
two of nnU-Net's trainers are built and started as ``autosam train`` builds them: one on the normal path (the
plan's ``embedding_cache`` turned off: nnU-Net's loader and augmentation, the whole network per patch) and one
on cached embeddings (the cache is built from nothing in its start: the one-off cost). Then
  step = next(loader) + train_step      (loading or sampling, forward, loss, backward, AdamW)
timed as the median over --iterations after warm-up, alternating the two trainers so a busy machine slows both
alike. ``speed-up = normal / cached``; ``build`` is the cache's one-off time for the fold's training slices and
``break-even`` the iterations after which it has paid for itself. Writes benchmarks/results/embedding_cache.json.

    python benchmarks/embedding_cache.py                       # vit_t and vit_b decoder-only LoRA at 256 px
    python benchmarks/embedding_cache.py --setups vit_b_dec_vanilla --image-size 512 --device cuda
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import torch
from common import measure_setups, started_trainer, subset_arguments

from autosam.files import atomic_write_json
from autosam.paths import Dataset
from autosam.trainers.embedding_cache import FOLDER


def _started_trainer(dataset: Dataset, setup: str, device: torch.device, cached: bool):
    start = time.perf_counter()
    trainer = started_trainer(dataset, setup, device, embedding_cache=cached)
    return trainer, time.perf_counter() - start


def measure(dataset: Dataset, setup: str, device: torch.device, iterations: int, warmup: int = 2) -> dict:
    cache = dataset.preprocessed / FOLDER
    shutil.rmtree(cache, ignore_errors=True)  # the build is timed from nothing
    normal, normal_start = _started_trainer(dataset, setup, device, cached=False)
    cached, cached_start = _started_trainer(dataset, setup, device, cached=True)
    info = cached.embedding_cache_info
    times: dict[str, list[float]] = {"normal": [], "cached": []}
    for i in range(warmup + iterations):
        for name, trainer in (("normal", normal), ("cached", cached)):
            start = time.perf_counter()
            trainer.train_step(next(trainer.dataloader_train))
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    for trainer in (normal, cached):
        if hasattr(trainer.dataloader_train, "_finish"):
            trainer.dataloader_train._finish()
    normal_ms, cached_ms = (1000 * statistics.median(times[k]) for k in ("normal", "cached"))
    return {
        "setup": setup, "batch": cached.batch_size, "normal_ms": normal_ms, "cached_ms": cached_ms,
        "speed_up": normal_ms / cached_ms, "build_s": info.seconds, "slices": info.slices,
        "build_ms_per_slice": 1000 * info.seconds / max(1, info.slices), "cache_mib": info.bytes / 2**20,
        "break_even_iterations": info.seconds / max(1e-9, (normal_ms - cached_ms) / 1000),
        "start_s": {"normal": normal_start, "cached": cached_start},
    }


def main() -> None:
    parser = subset_arguments(__doc__, ["vit_t_dec_lora", "vit_b_dec_lora"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "embedding_cache.json")
    args = parser.parse_args()
    source, device, rows = measure_setups(args, lambda d, s, dev: measure(d, s, dev, args.iterations))

    result = {"dataset": source.name, "cases": args.cases, "image_size": args.image_size, "device": str(device),
              "threads": torch.get_num_threads(), "iterations": args.iterations, "rows": rows}
    atomic_write_json(result, args.out)
    print(f"\n{source.name}, {args.cases} cases (fold 0 trains on {rows[0]['slices']} slices), SAM input "
          f"{args.image_size} px, device {device}, {torch.get_num_threads()} threads; median of {args.iterations} "
          "steps")
    print(f"{'set-up':18} {'batch':>5} {'normal ms':>10} {'cached ms':>10} {'speed-up':>9} {'build s':>8} "
          f"{'ms/slice':>9} {'MiB':>6} {'break-even':>10}")
    for r in rows:
        print(f"{r['setup']:18} {r['batch']:>5} {r['normal_ms']:>10.0f} {r['cached_ms']:>10.1f} "
              f"{r['speed_up']:>8.1f}x {r['build_s']:>8.1f} {r['build_ms_per_slice']:>9.0f} {r['cache_mib']:>6.1f} "
              f"{r['break_even_iterations']:>7.0f} it")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

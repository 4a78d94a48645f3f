"""One seed for a training: Python, numpy and torch (weights, LoRA/adapter/class-token initialisation,
augmentation) and nnU-Net's augmentation workers.

Runs are bit-identical when augmentation runs in the main process (``nnUNet_n_proc_DA=0``, autosam's default
on machines of up to 4 cores) on a CPU; a fold checkpoint carries the generators' states, so a run killed and
continued ends with the same weights as one that never stopped. With several workers nnU-Net takes batches
from whichever worker is ready first, and CUDA kernels are not all deterministic, so there runs agree only
statistically; a continued run restarts its workers with seeds of its own (derived from the epoch), so it
does not replay the first epochs' augmentations.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device, CUDA included


def seed_data_loaders(trainer, seed: int) -> None:
    """nnU-Net starts its augmentation workers with ``seeds=None`` (fresh entropy each run) and takes a first
    batch from them before returning the loaders; give each worker a seed derived from the run's and restart
    the workers with it. Under DDP every rank starts from the same seed (the same network), then ranks other
    than 0 draw their batches from streams of their own (else every rank would train on the same patches)."""
    build = trainer.get_dataloaders
    rank = trainer.local_rank

    def seeded():
        if rank:  # the network is built by now; main-process augmentation draws from the global generators
            seed_everything(seed + 10_000_000 * rank + 100_000 * trainer.current_epoch)
        loaders = build()
        for offset, loader in enumerate(loaders, start=1):
            if getattr(loader, "seeds", None) is not None:  # multi-process augmenters only
                first = seed + 1000 * offset + 100_000 * trainer.current_epoch + 10_000_000 * rank
                loader.seeds = [first + worker for worker in range(len(loader.seeds))]
                loader.restart()
        return loaders

    trainer.get_dataloaders = seeded


def rng_state() -> dict:
    """The generators' states as plain lists and tensors (a checkpoint entry that loads weights-only)."""
    version, keys, gauss = random.getstate()
    name, mt, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(keys), gauss],
        "numpy": [name, mt.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, mt, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(mt, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])

"""One seed for a training: Python, numpy and torch (weights, LoRA/adapter/class-token initialisation,
augmentation) and nnU-Net's augmentation workers.

Runs are bit-identical when augmentation runs in the main process (``nnUNet_n_proc_DA=0``, autosam's default
on machines of up to 4 cores) on a CPU. With several workers nnU-Net takes batches from whichever worker is
ready first, and CUDA kernels are not all deterministic, so there runs agree only statistically.
"""

from __future__ import annotations

import random

import numpy as np
import torch

DEFAULT_SEED = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device, CUDA included


def seed_data_loaders(trainer, seed: int) -> None:
    """nnU-Net starts its augmentation workers with ``seeds=None`` (fresh entropy each run) and takes a first
    batch from them before returning the loaders; give each worker a seed derived from the run's and restart
    the workers with it."""
    build = trainer.get_dataloaders

    def seeded():
        loaders = build()
        for offset, loader in enumerate(loaders, start=1):
            if getattr(loader, "seeds", None) is not None:  # multi-process augmenters only
                loader.seeds = [seed + 1000 * offset + worker for worker in range(len(loader.seeds))]
                loader.restart()
        return loaders

    trainer.get_dataloaders = seeded

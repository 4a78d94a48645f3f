"""The machine a plan is made for: a GPU's memory, a memory budget given by flag, or the CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from autosam.errors import AutosamError


@dataclass(frozen=True)
class Hardware:
    device: str  # "cuda" or "cpu"
    memory_gb: float
    description: str


def detect_hardware(gpu_memory_gb: float | None = None, device: str | None = None) -> Hardware:
    """``--gpu-memory GB`` plans for a GPU you are not on; ``--device cpu`` for the CPU; else this machine."""
    if gpu_memory_gb is not None and device == "cpu":
        raise AutosamError("--gpu-memory and --device cpu contradict each other: give one of them")
    if gpu_memory_gb is not None:
        if gpu_memory_gb <= 0:
            raise AutosamError(f"--gpu-memory {gpu_memory_gb}: give the GPU's memory in GB, e.g. 24")
        return Hardware("cuda", float(gpu_memory_gb), f"a GPU with {gpu_memory_gb:g} GB (--gpu-memory)")

    if device != "cpu" and torch.cuda.is_available():  # device: None (this machine), cuda or cuda:N
        index = int(device.partition(":")[2] or 0) if device else 0
        props = torch.cuda.get_device_properties(index)
        return Hardware("cuda", props.total_memory / 2**30, f"{props.name} ({props.total_memory / 2**30:.0f} GB)")
    if device is not None and device.startswith("cuda"):
        raise AutosamError(f"--device {device}: no CUDA GPU is visible; plan for one with --gpu-memory GB")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return Hardware("cpu", memory, f"CPU, {os.cpu_count()} cores, {memory:.0f} GB RAM")

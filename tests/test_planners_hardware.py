"""The machine a plan is for: a GPU named by its memory, this machine, or a contradiction refused in one line."""

from __future__ import annotations

import pytest
import torch

from autosam.errors import AutosamError
from autosam.planners.hardware import detect_hardware


def test_a_gpu_by_memory_this_cpu_and_contradictions() -> None:
    assert detect_hardware(24) == detect_hardware(24.0, "cuda")
    gpu = detect_hardware(24)
    assert (gpu.device, gpu.memory_gb) == ("cuda", 24.0) and "24 GB" in gpu.description
    cpu = detect_hardware(device="cpu")
    assert cpu.device == "cpu" and cpu.memory_gb > 0
    with pytest.raises(AutosamError, match="--gpu-memory and --device cpu contradict each other"):
        detect_hardware(24, "cpu")
    with pytest.raises(AutosamError, match="--gpu-memory 0: give the GPU's memory in GB"):
        detect_hardware(0)
    if not torch.cuda.is_available():
        with pytest.raises(AutosamError, match="--device cuda: no CUDA GPU is visible"):
            detect_hardware(device="cuda")

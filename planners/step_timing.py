"""Seconds per training step and per validation iteration of the networks a run will train, timed on the device:
the real network (SAM's planned set-up, nnU-Net's planned network) built with random weights, one warm-up and two
timed training steps (forward, backward, optimiser; the faster counts) and one timed validation forward at the
planned input.

Timing the networks themselves keeps the job table's clock calibrated when step costs change (new attention, new
backbones, new baselines) without a table of factors. The cost is bounded: the timed batch is the largest that the
matrix-multiply clock (``step_cost.measured_gflops_per_second``) puts under ``TIMING_BUDGET_S`` per step (three
steps and a forward are run), and the
time scales to the planned batch by counted FLOPs; a network whose single-image step is over the budget is not
timed, and its FLOPs over the matrix-multiply rate stand in. Not timed: data loading and augmentation (background
workers), torch.compile (SAM's encoder blocks on CUDA), fold set-up and the final validation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch

from autosam.planners.step_cost import (
    forward_gflops,
    iteration_gflops,
    measured_gflops_per_second,
    nnunet_forward_gflops,
)
from autosam.sam.model import build_network
from autosam.sam.setups import Setup

TIMING_BUDGET_S = 1.0  # the most one timed training step may take, by the matrix-multiply clock


@dataclass(frozen=True)
class StepTime:
    train_seconds: float  # one training step of the planned batch
    val_seconds: float  # one validation iteration (forward only) of the planned batch
    basis: str  # what the seconds rest on, for the job table


def timing_batch(step_gflops_per_image: float, batch: int, gflops_per_second: float, budget_s: float) -> int | None:
    """The largest batch up to ``batch`` whose training step the clock puts within ``budget_s``; None: not even
    one image."""
    fits = int(budget_s * gflops_per_second / step_gflops_per_image) if step_gflops_per_image > 0 else batch
    return min(batch, fits) or None


def _device_reachable(device: str) -> bool:
    return not device.startswith("cuda") or torch.cuda.is_available()


def _timed(device: str, step: Callable[[], None], validate: Callable[[], None]) -> tuple[float, float]:
    """(seconds of ``step``, the faster of two, of ``validate``) after one warm-up step: a moment's contention
    from another process should not set the clock of a whole run."""

    def clock(work: Callable[[], None]) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        work()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    step()
    return min(clock(step), clock(step)), clock(validate)


def _estimate(
    train_gflops: float,
    val_gflops: float,
    batch: int,
    device: str,
    budget_s: float,
    measure: Callable[[int], tuple[float, float]],
) -> StepTime:
    """``train_gflops``/``val_gflops``: one image's; ``measure(b)``: the timed seconds at batch b."""
    if not _device_reachable(device):
        return StepTime(float("nan"), float("nan"), f"not timed: no {device} on this machine")
    rate = measured_gflops_per_second(device)
    timed = timing_batch(train_gflops, batch, rate, budget_s)
    if timed is None:
        return StepTime(
            train_gflops * batch / rate,
            val_gflops * batch / rate,
            f"FLOPs at the {rate:.0f} GFLOP/s matmul rate (a step is over the {budget_s:g} s timing cap)",
        )
    train, val = measure(timed)
    scale = batch / timed  # FLOPs grow with the batch
    basis = "timed" if timed == batch else f"timed at batch {timed}, x{scale:g} by FLOPs"
    return StepTime(train * scale, val * scale, basis)


def sam_step_time(
    setup: Setup,
    image_size: int,
    num_classes: int,
    batch: int,
    device: str,
    embedding_cache: bool = True,
    gradient_checkpointing: bool = False,
    precision: str = "bf16",
    budget_s: float = TIMING_BUDGET_S,
) -> StepTime:
    """SAM's training step as the trainer runs it (on cached embeddings for decoder-only set-ups with the cache)
    and its validation forward, at ``image_size`` px."""
    encoder, decoder = forward_gflops(setup.backbone, image_size, num_classes)
    return _estimate(
        iteration_gflops(setup, image_size, num_classes, embedding_cache),
        encoder + decoder,
        batch,
        device,
        budget_s,
        lambda b: _time_sam(
            setup, image_size, num_classes, b, device, embedding_cache, gradient_checkpointing, precision
        ),
    )


@cache
def _time_sam(
    setup: Setup,
    image_size: int,
    num_classes: int,
    batch: int,
    device: str,
    embedding_cache: bool,
    gradient_checkpointing: bool,
    precision: str,
) -> tuple[float, float]:
    network = build_network(setup, image_size, num_classes, 1, gradient_checkpointing=gradient_checkpointing)
    network.precision = precision
    network.to(device).train()
    optimiser = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad])
    x = torch.randn(batch, 1, image_size, image_size, device=device)
    if embedding_cache and not setup.trains_encoder:  # the cached step: the decoder alone, on embeddings
        with torch.no_grad(), network._autocast(x.device):
            embeddings = network.encode(x)

        def loss() -> torch.Tensor:  # one decoder call per slice, as trainers/cached.py has it
            with network._autocast(x.device):
                return sum(network.decode(e[None], (image_size, image_size)).float().mean() for e in embeddings)
    else:

        def loss() -> torch.Tensor:
            return network(x).float().mean()

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss().backward()
        optimiser.step()

    def validate() -> None:
        with torch.no_grad():
            network(x)

    return _timed(device, step, validate)


def nnunet_step_time(
    configuration: dict,
    input_channels: int,
    num_classes: int,
    batch: int,
    device: str,
    budget_s: float = TIMING_BUDGET_S,
) -> StepTime:
    """nnU-Net's planned network (a resolved configuration of its plans) with deep supervision, SGD as its trainer
    has it, at its patch size."""
    forward = nnunet_forward_gflops(configuration, input_channels, num_classes)
    described = _described(configuration)
    return _estimate(
        3 * forward,
        forward,
        batch,
        device,
        budget_s,
        lambda b: _time_nnunet(described, input_channels, num_classes, b, device),
    )


def _described(configuration: dict) -> str:
    import json

    return json.dumps(
        {"architecture": configuration["architecture"], "patch_size": configuration["patch_size"]}, sort_keys=True
    )


@cache
def _time_nnunet(described: str, input_channels: int, num_classes: int, batch: int, device: str) -> tuple[float, float]:
    import json

    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    configuration = json.loads(described)
    architecture = configuration["architecture"]
    network = get_network_from_plans(
        architecture["network_class_name"],
        architecture["arch_kwargs"],
        architecture["_kw_requires_import"],
        input_channels,
        num_classes,
        allow_init=True,
        deep_supervision=True,
    ).to(device)
    optimiser = torch.optim.SGD(network.parameters(), 0.01, momentum=0.99, nesterov=True)
    x = torch.randn(batch, input_channels, *configuration["patch_size"], device=device)
    autocast = torch.autocast("cuda") if device.startswith("cuda") else torch.autocast("cpu", enabled=False)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with autocast:
            loss = sum(output.float().mean() for output in network(x))
        loss.backward()
        optimiser.step()

    def validate() -> None:
        with torch.no_grad(), autocast:
            network(x)

    return _timed(device, step, validate)

"""Seconds per training step and per validation iteration of the networks a run will train, timed on the device:
the real network (SAM's planned set-up, nnU-Net's planned network) built with random weights, one warm-up
training step (forward, backward, optimiser) of one image, two timed steps at the timed batch (the faster counts,
so a moment's contention from another process does not set the clock of a whole run) and one timed validation
forward; when the one-image step alone is over the budget, it is timed once more at one image instead.

Timing the networks themselves keeps the job table's clock calibrated when step costs change (new attention, new
backbones, new baselines) without a table of factors. The cost is bounded: the timed batch is the largest, up to
the planned one, that the one-image warm-up puts within ``TIMING_BUDGET_S`` per step, and the seconds scale to
the planned batch by counted FLOPs (linear in the batch); a network whose one-image step the matrix-multiply
clock (``step_cost.measured_gflops_per_second``) puts over ``UNTIMED_S`` is not built at all, and its FLOPs at
that rate stand in. Not timed: data loading and augmentation (background workers), torch.compile (SAM's encoder
blocks on CUDA), fold set-up and the final validation.
"""

from __future__ import annotations

import contextlib
import json
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

TIMING_BUDGET_S = 2.0  # the most one timed training step should take
UNTIMED_S = 30.0  # a one-image step the matrix-multiply clock puts over this is not timed

Work = Callable[[], None]
Measured = tuple[float, float, int]  # seconds of a training step and of a validation forward, at this batch


@dataclass(frozen=True)
class StepTime:
    train_seconds: float  # one training step of the planned batch
    val_seconds: float  # one validation iteration (forward only) of the planned batch
    basis: str  # what the seconds rest on, for the job table


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _clock(device: str, work: Work) -> float:
    _sync(device)
    started = time.perf_counter()
    work()
    _sync(device)
    return time.perf_counter() - started


def _timed(device: str, at_batch: Callable[[int], tuple[Work, Work]], batch: int, budget_s: float) -> Measured:
    """``at_batch(b)``: the training step and the validation forward at batch b. A one-image step already over
    the budget is timed once more at one image (the faster of the two counts), not at a larger batch."""
    step, validate = at_batch(1)
    one_image = _clock(device, step)  # the warm-up, and what sizes the timed batch
    if one_image > budget_s:
        return min(one_image, _clock(device, step)), _clock(device, validate), 1
    timed = max(1, min(batch, int(budget_s / one_image)))
    step, validate = at_batch(timed)
    return min(_clock(device, step), _clock(device, step)), _clock(device, validate), timed


def scaled_step_time(
    train_gflops: float,
    val_gflops: float,
    batch: int,
    device: str,
    measure: Callable[[], Measured],
    untimed_s: float = UNTIMED_S,
) -> StepTime:
    """The seconds of a step of ``batch`` images: ``measure()``'s, scaled from its batch by FLOPs, or (a network
    too large to time, or no such device here) the FLOPs at the matrix-multiply rate. ``train_gflops`` and
    ``val_gflops``: one image's."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return StepTime(float("nan"), float("nan"), f"not timed: no {device} on this machine")
    rate = measured_gflops_per_second(device)
    if train_gflops / rate > untimed_s:
        return StepTime(
            train_gflops * batch / rate,
            val_gflops * batch / rate,
            f"not timed (one image's step over {untimed_s:g} s): FLOPs at the {rate:.0f} GFLOP/s matmul rate",
        )
    train, val, timed = measure()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the timed network's blocks back to the GPU before a trainer plans on them
    scale = batch / timed
    basis = "timed" if timed == batch else f"timed at batch {timed}, x{scale:.3g} by FLOPs"
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
    untimed_s: float = UNTIMED_S,
) -> StepTime:
    """SAM's training step as the trainer runs it (on cached embeddings for decoder-only set-ups with the cache)
    and its validation forward, at ``image_size`` px."""
    encoder, decoder = forward_gflops(setup.backbone, image_size, num_classes)
    network = (setup, image_size, num_classes, device, embedding_cache, gradient_checkpointing, precision)
    return scaled_step_time(
        iteration_gflops(setup, image_size, num_classes, embedding_cache),
        encoder + decoder,
        batch,
        device,
        lambda: _time_sam(*network, batch, budget_s),
        untimed_s,
    )


@cache
def _time_sam(
    setup: Setup,
    image_size: int,
    num_classes: int,
    device: str,
    embedding_cache: bool,
    gradient_checkpointing: bool,
    precision: str,
    batch: int,
    budget_s: float,
) -> Measured:
    network = build_network(setup, image_size, num_classes, 1, gradient_checkpointing=gradient_checkpointing)
    network.precision = precision
    network.to(device).train()
    optimiser = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad])
    cached = embedding_cache and not setup.trains_encoder  # the cached step: the decoder alone, on embeddings

    def at_batch(b: int) -> tuple[Work, Work]:
        x = torch.randn(b, 1, image_size, image_size, device=device)
        if cached:
            with torch.no_grad(), network._autocast(x.device):
                embeddings = network.encode(x)

        def loss() -> torch.Tensor:
            if not cached:
                return network(x).float().mean()
            with network._autocast(x.device):  # one decoder call for the batch, as trainers/cached.py has it
                return network.decode(embeddings, (image_size, image_size)).float().mean()

        def step() -> None:
            optimiser.zero_grad(set_to_none=True)
            loss().backward()
            optimiser.step()

        def validate() -> None:
            with torch.no_grad():
                network(x)

        return step, validate

    return _timed(device, at_batch, batch, budget_s)


def nnunet_step_time(
    configuration: dict,
    input_channels: int,
    num_classes: int,
    batch: int,
    device: str,
    budget_s: float = TIMING_BUDGET_S,
    untimed_s: float = UNTIMED_S,
) -> StepTime:
    """nnU-Net's planned network (a resolved configuration of its plans) with deep supervision, SGD as its trainer
    has it, at its patch size."""
    forward = nnunet_forward_gflops(configuration, input_channels, num_classes)
    described = json.dumps(
        {"architecture": configuration["architecture"], "patch_size": list(configuration["patch_size"])}, sort_keys=True
    )
    return scaled_step_time(
        3 * forward,
        forward,
        batch,
        device,
        lambda: _time_nnunet(described, input_channels, num_classes, device, batch, budget_s),
        untimed_s,
    )


@cache
def _time_nnunet(
    described: str, input_channels: int, num_classes: int, device: str, batch: int, budget_s: float
) -> Measured:
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
    # nnU-Net's trainer: fp16 autocast on CUDA, none on a CPU
    autocast = (lambda: torch.autocast("cuda")) if device.startswith("cuda") else contextlib.nullcontext

    def at_batch(b: int) -> tuple[Work, Work]:
        x = torch.randn(b, input_channels, *configuration["patch_size"], device=device)

        def step() -> None:
            optimiser.zero_grad(set_to_none=True)
            with autocast():
                loss = sum(output.float().mean() for output in network(x))
            loss.backward()
            optimiser.step()

        def validate() -> None:
            with torch.no_grad(), autocast():
                network(x)

        return step, validate

    return _timed(device, at_batch, batch, budget_s)

"""The learning-rate schedule: linear warm-up, polynomial decay, and the same curve after a restart."""

from __future__ import annotations

import pytest
import torch

from autosam.trainers.schedule import WarmupPolySchedule


def _schedule(**overrides) -> tuple[WarmupPolySchedule, torch.optim.Optimizer]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    settings = {"base_lr": 1e-3, "warmup_iterations": 4, "total_iterations": 20, "iterations_per_epoch": 5}
    return WarmupPolySchedule(optimizer, **{**settings, **overrides}), optimizer


def test_warm_up_rises_linearly_then_decays_to_zero() -> None:
    schedule, optimizer = _schedule()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 4)  # set at once, whatever the optimiser had
    rates = [schedule.lr_at(i) for i in range(21)]
    assert rates[:4] == pytest.approx([1e-3 * (i + 1) / 4 for i in range(4)])
    assert rates[4] == pytest.approx(1e-3) and all(a > b for a, b in zip(rates[4:20], rates[5:21]))
    assert rates[20] == 0.0 and rates[12] == pytest.approx(1e-3 * 0.5 ** 0.9)


def test_a_restart_at_an_epoch_boundary_continues_on_the_same_curve() -> None:
    running, optimizer = _schedule()
    for _ in range(10):
        running.advance()
    resumed, resumed_optimizer = _schedule()
    resumed.step(2)  # nnU-Net's epoch start after loading a checkpoint of epoch 2
    assert resumed.iteration == running.iteration == 10
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == running.lr_at(10)


def test_no_warm_up_and_a_total_shorter_than_it_still_give_a_rate() -> None:
    assert _schedule(warmup_iterations=0)[0].lr_at(0) == pytest.approx(1e-3)
    assert _schedule(total_iterations=0)[0].lr_at(50) == 0.0

"""Linear warm-up then polynomial decay, stepped per iteration (the study's recipe)."""

from __future__ import annotations

import torch


class WarmupPolySchedule:
    """nnU-Net calls ``step(epoch)`` at each epoch start; the trainer calls ``advance()`` after every iteration.

    ``step(epoch)`` re-synchronises to the epoch boundary, so a resumed run continues on the same curve.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup_iterations: int,
                 total_iterations: int, iterations_per_epoch: int, exponent: float = 0.9) -> None:
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.warmup = max(0, warmup_iterations)
        self.total = max(1, total_iterations)
        self.iterations_per_epoch = iterations_per_epoch
        self.exponent = exponent
        self.iteration = 0
        self._apply()

    def lr_at(self, iteration: int) -> float:
        if iteration < self.warmup:
            return self.base_lr * (iteration + 1) / self.warmup
        progress = min(1.0, (iteration - self.warmup) / max(1, self.total - self.warmup))
        return self.base_lr * (1 - progress) ** self.exponent

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.iteration)

    def step(self, epoch: int) -> None:
        self.iteration = epoch * self.iterations_per_epoch
        self._apply()

    def advance(self) -> None:
        self.iteration += 1
        self._apply()

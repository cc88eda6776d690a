"""Learning-rate schedule: piecewise constant by epoch with a short linear warm-up.

Paper section 4.2: SGD, lr 0.01 multiplied by 0.1 every 30 epochs. Training from scratch
with a two-stage detector diverges easily in the first iterations (large RPN / box losses on
random features), so the first ``warmup_iters`` iterations ramp the rate linearly from
``warmup_factor * lr`` to ``lr`` (as in Detectron / torchvision's detection references).

``schedule="cosine"`` replaces the steps by a half-cosine decay from ``lr`` to 0 over
``total_iters`` (after the same warm-up), a common choice for short from-scratch runs.

The scheduler is stepped once per *iteration*; its epoch is ``iteration // iters_per_epoch``.
Its ``state_dict`` holds only numbers, so it survives ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler


def lr_factor(
    iteration: int,
    iters_per_epoch: int,
    step_epochs: int,
    gamma: float,
    warmup_iters: int,
    warmup_factor: float = 0.001,
    schedule: str = "step",
    total_iters: int = 0,
) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based, counted over all epochs)."""
    if schedule == "cosine":
        span = max(1, total_iters - warmup_iters)
        done = min(1.0, max(0, iteration - warmup_iters) / span)
        factor = 0.5 * (1.0 + math.cos(math.pi * done))
    elif schedule == "step":
        epoch = iteration // max(1, iters_per_epoch)
        factor = gamma ** (epoch // max(1, step_epochs))
    else:
        raise ValueError(f"learning-rate schedule must be 'step' or 'cosine', got {schedule!r}")
    if warmup_iters > 0 and iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1.0 - alpha) + alpha
    return factor


class WarmupStepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_epochs)`` (or cosine), linearly warmed up; step per iteration."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        iters_per_epoch: int,
        step_epochs: int,
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        schedule: str = "step",
        total_iters: int = 0,
    ) -> None:
        if iters_per_epoch < 1:
            raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
        self.iters_per_epoch = int(iters_per_epoch)
        self.step_epochs = int(step_epochs)
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.schedule = str(schedule)
        self.total_iters = int(total_iters)
        lr_factor(0, self.iters_per_epoch, self.step_epochs, self.gamma, 0, 1.0, self.schedule)  # validates
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        f = lr_factor(
            self.last_epoch, self.iters_per_epoch, self.step_epochs, self.gamma, self.warmup_iters, self.warmup_factor,
            getattr(self, "schedule", "step"), getattr(self, "total_iters", 0),
        )
        return [float(base) * f for base in self.base_lrs]

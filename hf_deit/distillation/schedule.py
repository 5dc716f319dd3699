"""The paper's learning-rate schedule as a torch LambdaLR that the Trainer steps once per optimizer step.

The official code (main.py:355, 432) builds timm's CosineLRScheduler(t_initial=epochs, warmup_t=warmup_epochs,
warmup_lr_init=warmup_lr, lr_min=min_lr, t_in_epochs=True, cycle_limit=1) and calls `step(epoch)` once at the END of
each epoch; the scheduler's constructor sets warmup_lr first. So epoch k trains at L(max(k - 1, 0)) where

    L(t) = warmup_lr + t * (lr - warmup_lr) / warmup_epochs                       t < warmup_epochs
    L(t) = min_lr + (lr - min_lr) * (1 + cos(pi * t / epochs)) / 2                 otherwise (t < epochs)

(the cosine runs over all epochs from t = 0, warmup included: timm's warmup_prefix=False). Epochs 0 and 1 both
train at warmup_lr, the last at L(epochs - 2): the one-epoch lag is the official curve, kept on purpose.

  * granularity "epoch" (default): exactly that, constant within each epoch.
  * granularity "step": L(t) at t = optimizer step / steps per epoch, without the lag, as timm's own training
    script steps it (`step_update`); smoother, and never more than one epoch's worth of schedule off the official.
docs/recipe.md shows both against the official curve (docs/recipe_lr.png).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

SCHEDULE_GRANULARITIES = ("epoch", "step")


def deit_lr(t: float, lr: float, epochs: float, warmup_epochs: float, warmup_lr: float, min_lr: float) -> float:
    """timm's CosineLRScheduler (one cycle, warmup inside the cycle) at time `t` in epochs."""
    if t < warmup_epochs:
        return warmup_lr + t * (lr - warmup_lr) / warmup_epochs
    if t >= epochs:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t / epochs))


class DeiTSchedule:
    """`step -> lr factor` for LambdaLR (a class, not a closure, so that the scheduler pickles)."""

    def __init__(
        self, lr: float, steps_per_epoch: float, epochs: float, warmup_epochs: float, warmup_lr: float,
        min_lr: float, granularity: str = "epoch",
    ) -> None:
        if granularity not in SCHEDULE_GRANULARITIES:
            raise ValueError(f"granularity={granularity!r}: use one of {SCHEDULE_GRANULARITIES}.")
        self.lr, self.steps_per_epoch, self.epochs = lr, steps_per_epoch, epochs
        self.warmup_epochs, self.warmup_lr, self.min_lr = warmup_epochs, warmup_lr, min_lr
        self.granularity = granularity

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based)."""
        if self.granularity == "step":
            t = step / self.steps_per_epoch
        else:
            t = max(step // self.steps_per_epoch - 1, 0)  # epoch k trains at L(k - 1): see the module docstring
        return deit_lr(t, self.lr, self.epochs, self.warmup_epochs, self.warmup_lr, self.min_lr)

    def __call__(self, step: int) -> float:
        return self.lr_at(step) / self.lr


def deit_scheduler(optimizer: torch.optim.Optimizer, schedule: DeiTSchedule) -> LambdaLR:
    """LambdaLR multiplies each group's initial lr by `schedule(step) = L / lr`: all groups start at `lr` (AdamW's
    decay and no-decay groups), so each follows L exactly."""
    return LambdaLR(optimizer, schedule)




def build_scheduler(args: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: float | None, num_training_steps: int):
    """The run's scheduler: the paper's (`--lr_schedule epoch|step`) or transformers' `get_scheduler(
    --lr_scheduler_type)` (`--lr_schedule transformers`), both with --warmup_epochs of warmup (--warmup_steps,
    transformers' field, replaces it when set). `steps_per_epoch`: the Trainer's count; None for a stream of unknown
    size, whose epochs are then max_steps / num_train_epochs steps."""
    steps_per_epoch = steps_per_epoch or num_training_steps / max(args.num_train_epochs, 1e-9)
    warmup_epochs = args.warmup_epochs
    if args.warmup_steps > 0:
        warmup_epochs = args.get_warmup_steps(num_training_steps) / steps_per_epoch
    if args.lr_schedule == "transformers":
        from transformers.optimization import get_scheduler

        return get_scheduler(
            args.lr_scheduler_type, optimizer=optimizer,
            num_warmup_steps=min(num_training_steps, round(warmup_epochs * steps_per_epoch)),
            num_training_steps=num_training_steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs,
        )
    schedule = DeiTSchedule(
        args.learning_rate, steps_per_epoch, num_training_steps / steps_per_epoch, warmup_epochs, args.warmup_lr,
        args.min_lr, args.lr_schedule,
    )
    return deit_scheduler(optimizer, schedule)


__all__ = ["DeiTSchedule", "SCHEDULE_GRANULARITIES", "build_scheduler", "deit_lr", "deit_scheduler"]

"""Batch mixing in the training step: Mixup/CutMix (timm's `Mixup`) with label smoothing -> soft targets.

    mixup = build_mixup(args, num_classes, label_smoothing)          # None when it would mix nothing
    pixel_values, targets = mix_batch(mixup, pixel_values, labels, num_classes, label_smoothing)

DeiT's recipe: Mixup alpha 0.8, CutMix alpha 1.0, switch probability 0.5, label smoothing 0.1 give soft targets,
FloatTensor [B, num_classes] whose rows sum to 1. With both alphas 0 but smoothing on, the targets are the
label-smoothed one-hot rows (timm's convention: smoothing/C on every class, 1 - smoothing + smoothing/C on the true
one). Evaluation batches keep integer labels.

Mixing happens in the training step (DistillationTrainer, examples/train_teacher.py), not in the data pipeline: its
randomness (numpy's global RNG, which timm's Mixup draws from) then stays in step with the checkpoints, which hold
that RNG; a collator runs ahead of the step (prefetching) or in worker processes. timm's Mixup needs an even batch
(it pairs each image with the batch flipped): an odd batch mixes its even part and gives the leftover image its
smoothed one-hot target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target


@dataclass
class MixupArguments:
    """Batch mixing (timm's Mixup/CutMix), applied in the training step (`mix_batch`)."""

    mixup: float = field(default=0.8, metadata={"help": "Mixup alpha (0 disables)."})
    cutmix: float = field(default=1.0, metadata={"help": "CutMix alpha (0 disables)."})
    mixup_prob: float = field(default=1.0, metadata={"help": "Probability of mixing a batch."})
    mixup_switch_prob: float = field(default=0.5, metadata={"help": "Probability of CutMix instead of Mixup when both are on."})
    mixup_mode: str = field(default="batch", metadata={"help": "Mixup granularity: 'batch', 'pair' or 'elem'."})

    def __post_init__(self) -> None:
        self.check_mixup()

    def check_mixup(self) -> None:
        """Refuse out-of-range Mixup settings (also called by DeiTTrainingArguments.__post_init__)."""
        if self.mixup_mode not in ("batch", "pair", "elem"):
            raise ValueError(f"mixup_mode must be 'batch', 'pair' or 'elem', got {self.mixup_mode!r}")
        for name in ("mixup_prob", "mixup_switch_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError("mixup and cutmix alphas must be >= 0")


class LambdaRecordingMixup(Mixup):
    """timm's Mixup that also keeps the coefficient of its last call (`last_lam`), for mixing a cached teacher's
    logits as the images were mixed. timm's `Mixup.__call__` returns only the targets, so the coefficient is taken
    where timm computes it: its `_mix_elem` / `_mix_pair` / `_mix_batch` (private to timm; pinned by
    tests/test_trainer_hooks.py, listed in docs/architecture.md)."""

    last_lam: float | torch.Tensor = 1.0

    def _mix_elem(self, x):
        self.last_lam = super()._mix_elem(x)
        return self.last_lam

    def _mix_pair(self, x):
        self.last_lam = super()._mix_pair(x)
        return self.last_lam

    def _mix_batch(self, x):
        self.last_lam = float(super()._mix_batch(x))
        return self.last_lam


def build_mixup(
    args: MixupArguments, num_classes: int, label_smoothing: float = 0.0, record_lambda: bool = False
) -> Mixup | None:
    """timm's Mixup from `args` (Mixup/CutMix alphas, probabilities, mode), or None when it would mix nothing;
    `record_lambda`: a LambdaRecordingMixup (a cached teacher mixes its logits with the images' coefficient)."""
    if args.mixup_prob <= 0 or (args.mixup <= 0 and args.cutmix <= 0):
        return None
    return (LambdaRecordingMixup if record_lambda else Mixup)(
        mixup_alpha=args.mixup,
        cutmix_alpha=args.cutmix,
        prob=args.mixup_prob,
        switch_prob=args.mixup_switch_prob,
        mode=args.mixup_mode,
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )


def mix_batch(
    mixup: Mixup | None, pixel_values: torch.Tensor, labels: torch.Tensor, num_classes: int, label_smoothing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets (batch, num_classes) for integer `labels`, mixing `pixel_values` in place when `mixup` is given.

    timm's Mixup needs an even batch: the even part is mixed, a leftover last image keeps its smoothed one-hot row.
    """
    targets = mixup_target(labels, num_classes, lam=1.0, smoothing=label_smoothing)
    even = len(labels) - len(labels) % 2
    if mixup is not None and even >= 2:
        # pixel_values[:even] is a view: Mixup's in-place mixing updates the caller's tensor.
        _, targets[:even] = mixup(pixel_values[:even], labels[:even])
    return pixel_values, targets


__all__ = ["LambdaRecordingMixup", "MixupArguments", "build_mixup", "mix_batch"]

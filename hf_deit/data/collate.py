"""Batching: stack pixel tensors, drop broken examples, and make Mixup/CutMix/label-smoothing soft targets.

Training batches (DeiT's recipe): timm's `Mixup` (Mixup alpha 0.8, CutMix alpha 1.0, switch probability 0.5,
label smoothing 0.1) gives `labels` as soft targets, FloatTensor [B, num_classes] whose rows sum to 1. With both
alphas 0 but smoothing on, the targets are the label-smoothed one-hot rows (timm's convention: smoothing/C on
every class, 1 - smoothing + smoothing/C on the true one). Evaluation batches keep integer labels.

timm's Mixup needs an even batch (it pairs each image with the batch flipped): an odd batch (the last one, or one
that lost a broken image) mixes its even part and gives the leftover image its smoothed one-hot target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from torch.utils.data import default_collate

if TYPE_CHECKING:
    from .arguments import DataArguments


def timm_mixup(
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    mixup_prob: float = 1.0,
    switch_prob: float = 0.5,
    mode: str = "batch",
    label_smoothing: float = 0.0,
) -> Mixup | None:
    """timm's Mixup, or None when it would mix nothing (no alpha set, or probability 0)."""
    if mixup_prob <= 0 or (mixup_alpha <= 0 and cutmix_alpha <= 0):
        return None
    return Mixup(
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        prob=mixup_prob,
        switch_prob=switch_prob,
        mode=mode,
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )


def _mixup_kwargs(data_args: "DataArguments") -> dict[str, Any]:
    return dict(
        mixup_alpha=data_args.mixup,
        cutmix_alpha=data_args.cutmix,
        mixup_prob=data_args.mixup_prob,
        switch_prob=data_args.mixup_switch_prob,
        mode=data_args.mixup_mode,
        label_smoothing=data_args.label_smoothing,
    )


def build_mixup(data_args: "DataArguments", num_classes: int) -> Mixup | None:
    """timm's Mixup from the data arguments, or None when neither Mixup nor CutMix is on."""
    return timm_mixup(num_classes, **_mixup_kwargs(data_args))


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


# Per-example keys a cached teacher needs (hf_deit.distillation.teacher_cache), stacked into the batch when every example has them.
PASSTHROUGH_KEYS = {"example_key": torch.long, "crop_box": torch.float32, "crop_flip": torch.bool}


def _passthrough(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([torch.as_tensor(e[key], dtype=dtype) for e in examples])
            for key, dtype in PASSTHROUGH_KEYS.items() if all(key in e for e in examples)}


class DeiTCollator:
    """`examples` ({"pixel_values": Tensor[3,H,W] or None, "labels": int, ...}) -> {"pixel_values", "labels"}.

    Examples whose `pixel_values` is None (a broken image, already counted by the decoder) are dropped.
    "example_key", "crop_box" and "crop_flip" (for a cached teacher) are stacked when present; other keys (e.g. a
    dataset's key column) are ignored.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        label_smoothing: float = 0.0,
    ) -> None:
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.mixup = timm_mixup(num_classes, mixup_alpha, cutmix_alpha, mixup_prob, switch_prob, mode, label_smoothing)
        self.soft_targets = self.mixup is not None or label_smoothing > 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        kept = [example for example in examples if example["pixel_values"] is not None]
        if not kept:
            raise RuntimeError(
                f"every image in a batch of {len(examples)} was broken; see the 'skipped broken image' warnings"
            )
        # default_collate stacks straight into shared memory inside a DataLoader worker, so the batch (20 MB of
        # float32 at 32 x 224 px) reaches the main process without a second copy; plain torch.stack does not.
        pixel_values = default_collate([example["pixel_values"] for example in kept])
        labels = torch.tensor([int(example["labels"]) for example in kept], dtype=torch.long)
        extra = _passthrough(kept)
        if not self.soft_targets:
            return {"pixel_values": pixel_values, "labels": labels, **extra}
        pixel_values, targets = mix_batch(self.mixup, pixel_values, labels, self.num_classes, self.label_smoothing)
        return {"pixel_values": pixel_values, "labels": targets, **extra}


def build_collator(data_args: DataArguments, num_classes: int, train: bool) -> DeiTCollator:
    """The training collator (Mixup/CutMix/smoothing from `data_args`) or the evaluation one (integer labels)."""
    if not train:
        return DeiTCollator(num_classes)
    if data_args.uint8_batches:
        raise ValueError(
            "uint8_batches: the collator cannot mix uint8 images; build it with train=False and finish + mix each "
            "batch on the device (DistillationTrainer does: hf_deit.data.device_finish, then Mixup/CutMix)."
        )
    return DeiTCollator(num_classes, **_mixup_kwargs(data_args))

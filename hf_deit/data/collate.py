"""Batching: `DeiTCollator` stacks pixel tensors and integer labels and drops broken examples; `build_mixup` +
`mix_batch` make the Mixup/CutMix/label-smoothing soft targets inside a training step.

Training batches (DeiT's recipe): timm's `Mixup` (Mixup alpha 0.8, CutMix alpha 1.0, switch probability 0.5,
label smoothing 0.1) gives soft targets, FloatTensor [B, num_classes] whose rows sum to 1. With both alphas 0 but
smoothing on, the targets are the label-smoothed one-hot rows (timm's convention: smoothing/C on every class,
1 - smoothing + smoothing/C on the true one). Evaluation batches keep integer labels.

timm's Mixup needs an even batch (it pairs each image with the batch flipped): an odd batch (the last one, or one
that lost a broken image) mixes its even part and gives the leftover image its smoothed one-hot target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from torch.utils.data import default_collate

from .device_decode import ENCODED_IMAGE, ENCODED_IMAGES, EncodedBatch

if TYPE_CHECKING:
    from .arguments import MixupArguments


def build_mixup(args: "MixupArguments", num_classes: int, label_smoothing: float = 0.0) -> Mixup | None:
    """timm's Mixup from `args` (Mixup/CutMix alphas, probabilities, mode), or None when it would mix nothing."""
    if args.mixup_prob <= 0 or (args.mixup <= 0 and args.cutmix <= 0):
        return None
    return Mixup(
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


# Per-example keys a cached teacher needs (hf_deit.distillation.teacher_cache), stacked into the batch when every example has them.
PASSTHROUGH_KEYS = {"example_key": torch.long, "example_content": torch.long, "crop_box": torch.float32,
                    "crop_flip": torch.bool}


def _passthrough(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([torch.as_tensor(e[key], dtype=dtype) for e in examples])
            for key, dtype in PASSTHROUGH_KEYS.items() if all(key in e for e in examples)}


class DeiTCollator:
    """`examples` ({"pixel_values": Tensor[3,H,W] or None, "labels": int, ...}) -> {"pixel_values", "labels"}.

    Stacks only: Mixup/CutMix and label smoothing are applied in the training step (`mix_batch`), where their
    randomness stays in step with the checkpoints. Examples whose `pixel_values` is None (a broken image, already
    counted by the decoder) are dropped. "example_key", "example_content", "crop_box" and "crop_flip" (for a cached
    teacher) are stacked when present; other keys (e.g. a dataset's key column) are ignored. Examples still encoded
    (--device_augment: "encoded_image") become an `EncodedBatch` under "encoded_images", for the training step.
    """

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        image_key = ENCODED_IMAGE if ENCODED_IMAGE in examples[0] else "pixel_values"
        kept = [example for example in examples if example[image_key] is not None]
        if not kept:
            raise RuntimeError(
                f"every image in a batch of {len(examples)} was broken; see the 'skipped broken image' warnings"
            )
        labels = torch.tensor([int(example["labels"]) for example in kept], dtype=torch.long)
        if image_key == ENCODED_IMAGE:  # --device_augment: decoded and augmented in the training step
            encoded = EncodedBatch.from_images([example[ENCODED_IMAGE] for example in kept])
            return {ENCODED_IMAGES: encoded, "labels": labels, **_passthrough(kept)}
        # default_collate stacks straight into shared memory inside a DataLoader worker, so the batch (20 MB of
        # float32 at 32 x 224 px) reaches the main process without a second copy; plain torch.stack does not.
        pixel_values = default_collate([example["pixel_values"] for example in kept])
        return {"pixel_values": pixel_values, "labels": labels, **_passthrough(kept)}

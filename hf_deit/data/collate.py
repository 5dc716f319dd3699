"""Batching: `DeiTCollator` stacks pixel tensors and integer labels and drops broken examples. Mixup/CutMix and
label smoothing are not the data's: the training step applies them (hf_deit.distillation.mixing), where their
randomness stays in step with the checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import default_collate

from .device_decode import ENCODED_IMAGE, ENCODED_IMAGES, EncodedBatch


# Per-example keys a cached teacher needs (hf_deit.distillation.teacher_cache), stacked into the batch when every example has them.
PASSTHROUGH_KEYS = {"example_key": torch.long, "example_content": torch.long, "crop_box": torch.float32,
                    "crop_flip": torch.bool}


def _passthrough(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([torch.as_tensor(e[key], dtype=dtype) for e in examples])
            for key, dtype in PASSTHROUGH_KEYS.items() if all(key in e for e in examples)}


class DeiTCollator:
    """`examples` ({"pixel_values": Tensor[3,H,W] or None, "labels": int, ...}) -> {"pixel_values", "labels"}.

    Stacks only: Mixup/CutMix and label smoothing are applied in the training step (hf_deit.distillation.mixing), where their
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
        # as_tensor + stack, not int(): labels that are tensors (a dataset in torch format) are not read one by one
        labels = torch.stack([torch.as_tensor(example["labels"], dtype=torch.long) for example in kept])
        if image_key == ENCODED_IMAGE:  # --device_augment: decoded and augmented in the training step
            encoded = EncodedBatch.from_images([example[ENCODED_IMAGE] for example in kept])
            return {ENCODED_IMAGES: encoded, "labels": labels, **_passthrough(kept)}
        # default_collate stacks straight into shared memory inside a DataLoader worker, so the batch (20 MB of
        # float32 at 32 x 224 px) reaches the main process without a second copy; plain torch.stack does not.
        pixel_values = default_collate([example["pixel_values"] for example in kept])
        return {"pixel_values": pixel_values, "labels": labels, **_passthrough(kept)}

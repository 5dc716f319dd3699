# Copyright 2026 The hf_deit Authors. All rights reserved.
# Licensed under the Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).
"""Evaluation preprocessing for `pipeline("image-classification")` and `AutoImageProcessor`.

DeiT evaluates with: resize the short side to `image_size / crop_pct` (bicubic), center-crop `image_size`,
scale to [0, 1] and normalise with the ImageNet mean/std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), which
is what every released DeiT checkpoint was trained with.

`size` is the model's input size ({"shortest_edge": image_size}) and `crop_pct` says how much larger the resize is,
because that is what scripts written for any transformers image classifier read: run_image_classification.py (and
most notebooks) take `size["shortest_edge"]` (or height/width) as the size to train and evaluate at. A `size` of
{"shortest_edge": 256} would have them feed 256 px to a 224 px model, which the model refuses. transformers' own
DeiT processor puts the resize in `size`; its PoolFormer processors implement exactly our meaning (resize to
int(size / crop_pct), crop `crop_size`), so we subclass those, and a saved `preprocessor_config.json` names
"PoolFormerImageProcessor": where hf_deit is not installed (a folder loaded with `trust_remote_code=True`),
transformers then preprocesses with the same numbers, with no remote code and no trust prompt for it.

The one change: images are converted to RGB by hf_deit's decoder (`image_decoding`), the one training uses, so a
16-bit PNG is scaled to 8 bits instead of being clipped to white, and CMYK/palette/alpha images convert alike.
"""

from __future__ import annotations

from typing import Any

from PIL import Image
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.poolformer.image_processing_pil_poolformer import PoolFormerImageProcessorPil
from transformers.models.poolformer.image_processing_poolformer import PoolFormerImageProcessor

from .configuration_deit import DeiTConfig
from .image_decoding import load_image, to_rgb

# The transformers class a saved preprocessor_config.json names: it computes what ours does (see the docstring).
SAVED_AS = "PoolFormerImageProcessor"


class _TrainingDecoderMixin:
    """Paths and URLs are decoded, and PIL images converted to RGB, by hf_deit's decoder."""

    def fetch_images(self, image_url_or_urls):
        if isinstance(image_url_or_urls, str):
            return load_image(image_url_or_urls)
        return super().fetch_images(image_url_or_urls)

    def process_image(self, image, *args, **kwargs):
        if isinstance(image, Image.Image):
            image = to_rgb(image)
        return super().process_image(image, *args, **kwargs)


class _SavedAsPoolFormer:
    """Ours where hf_deit is imported (`image_processor_for`), transformers' PoolFormer processor elsewhere.

    `crop_pct` defaults to None (no extra resize): a folder saved before `size` meant the model's input size says
    {"shortest_edge": 256} with no crop_pct, and still preprocesses as it did."""

    crop_pct = None

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["image_processor_type"] = SAVED_AS
        return output


class DeiTImageProcessor(_TrainingDecoderMixin, _SavedAsPoolFormer, PoolFormerImageProcessor):
    """DeiT's evaluation preprocessing (torchvision backend) with hf_deit's image decoder."""


class DeiTImageProcessorPil(_TrainingDecoderMixin, _SavedAsPoolFormer, PoolFormerImageProcessorPil):
    """DeiT's evaluation preprocessing (Pillow backend) with hf_deit's image decoder."""


def image_processor_for(config: DeiTConfig, backend: str = "torchvision") -> DeiTImageProcessor:
    """The evaluation image processor matching `config`: `size` and `crop_size` are the model's input size, the
    resize before the crop is `eval_resize_size(image_size, crop_pct)` (PoolFormer's int(size / crop_pct), the same
    truncation as timm's eval transform: 224 / 0.875 = 256; 32 / 0.875 = 36; 384 / 1.0 = 384)."""
    cls = {"torchvision": DeiTImageProcessor, "pil": DeiTImageProcessorPil}[backend]
    return cls(
        size={"shortest_edge": config.image_size},
        crop_size={"height": config.image_size, "width": config.image_size},
        crop_pct=config.crop_pct,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    )


__all__ = [
    "DeiTImageProcessor",
    "DeiTImageProcessorPil",
    "image_processor_for",
]

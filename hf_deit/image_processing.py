# Copyright 2026 The hf_deit Authors. All rights reserved.
# Licensed under the Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).
"""Evaluation preprocessing for `pipeline("image-classification")` and `AutoImageProcessor`.

DeiT evaluates with: resize the short side to `image_size / crop_pct` (bicubic), center-crop `image_size`,
scale to [0, 1] and normalise with the ImageNet mean/std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), which
is what every released DeiT checkpoint was trained with. transformers' own `DeiTImageProcessor` does exactly
these steps, so we reuse it and only set its sizes and statistics from our config. (Its class defaults use the
0.5/0.5 "standard" statistics and a square 256x256 resize; a saved `preprocessor_config.json` records ours.)
"""

from __future__ import annotations

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.deit.image_processing_deit import DeiTImageProcessor
from transformers.models.deit.image_processing_pil_deit import DeiTImageProcessorPil

from .configuration_deit import DeiTConfig


def image_processor_for(config: DeiTConfig, backend: str = "torchvision") -> DeiTImageProcessor:
    """The evaluation image processor matching `config` (resolution and crop_pct)."""
    cls = {"torchvision": DeiTImageProcessor, "pil": DeiTImageProcessorPil}[backend]
    # int() truncates like timm's eval transform (224 / 0.875 = 256; 384 / 1.0 = 384).
    resize_to = int(config.image_size / config.crop_pct)
    return cls(
        size={"shortest_edge": resize_to},
        crop_size={"height": config.image_size, "width": config.image_size},
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    )


__all__ = ["DeiTImageProcessor", "DeiTImageProcessorPil", "image_processor_for"]

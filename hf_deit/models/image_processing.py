# Copyright 2026 The hf_deit Authors. All rights reserved.
# Licensed under the Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).
"""Evaluation preprocessing for `pipeline("image-classification")` and `AutoImageProcessor`.

DeiT evaluates with: resize the short side to `image_size / crop_pct` (bicubic), center-crop `image_size`,
scale to [0, 1] and normalise with the ImageNet mean/std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), which
is what every released DeiT checkpoint was trained with. transformers' own `DeiTImageProcessor` does exactly
these steps, so we subclass it and only set its sizes and statistics from our config. (Its class defaults use the
0.5/0.5 "standard" statistics and a square 256x256 resize; a saved `preprocessor_config.json` records ours.)

The one change: images are converted to RGB by hf_deit's decoder (`image_decoding`), the one training uses, so a
16-bit PNG is scaled to 8 bits instead of being clipped to white, and CMYK/palette/alpha images convert alike.
"""

from __future__ import annotations

from PIL import Image
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.deit.image_processing_deit import DeiTImageProcessor as _TorchvisionDeiTImageProcessor
from transformers.models.deit.image_processing_pil_deit import DeiTImageProcessorPil as _PilDeiTImageProcessor

from .configuration_deit import DeiTConfig
from .image_decoding import load_image, to_rgb


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


# Same names as transformers' classes on purpose: a saved preprocessor_config.json says "DeiTImageProcessor", which
# loads these where hf_deit is imported (AutoImageProcessor looks up registered classes first) and transformers' own
# class elsewhere (e.g. with trust_remote_code and no hf_deit), with no remote code and no trust prompt for it.
class DeiTImageProcessor(_TrainingDecoderMixin, _TorchvisionDeiTImageProcessor):
    """transformers' DeiTImageProcessor (torchvision backend) with hf_deit's image decoder."""


class DeiTImageProcessorPil(_TrainingDecoderMixin, _PilDeiTImageProcessor):
    """transformers' DeiTImageProcessorPil (Pillow backend) with hf_deit's image decoder."""


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


__all__ = [
    "DeiTImageProcessor",
    "DeiTImageProcessorPil",
    "image_processor_for",
]

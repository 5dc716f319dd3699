"""`DeiTImageClassificationPipeline`: transformers' image-classification pipeline with hf_deit's image decoder.

    classifier = pipeline("image-classification", model="./deit-tiny", pipeline_class=DeiTImageClassificationPipeline)

transformers' pipeline opens files with its own `load_image`, which converts with Pillow's `convert("RGB")` before
the image processor runs: a 16-bit PNG becomes pure white there. This subclass decodes paths, URLs, bytes and PIL
images with `hf_deit.models.image_decoding.load_image`, the decoder the training data goes through, so inference sees the
pixels training saw. `hf-deit predict` uses it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from transformers import ImageClassificationPipeline

from .sources import is_timm_folder, require_source
from .models.image_decoding import load_image


class DeiTImageClassificationPipeline(ImageClassificationPipeline):
    def preprocess(self, image, timeout=None):
        if not isinstance(image, (np.ndarray, torch.Tensor)):
            image = load_image(image)
        return super().preprocess(image, timeout=timeout)  # an RGB PIL image passes transformers' load_image as is


class TimmFolderClassifier:
    """Classify images with a timm folder, through timm's own loader and eval transform (its pretrained_cfg).

    transformers' `TimmWrapper` cannot load folders whose config.json repeats `num_classes` inside `model_args`, which
    timm >= 1.0.20's `save_for_hf` writes; timm itself can. Same call and output as the image-classification pipeline.
    """

    def __init__(self, path: str, device: str | None = None) -> None:
        import timm
        import timm.data

        self.device = torch.device(device or "cpu")
        self.model = timm.create_model(f"local-dir:{path}", pretrained=True).eval().to(self.device)
        self.transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=self.model))
        with open(os.path.join(path, "config.json")) as f:
            names = json.load(f).get("label_names") or self.model.pretrained_cfg.get("label_names")
        self.labels = list(names) if names else [f"LABEL_{i}" for i in range(self.model.num_classes)]

    @torch.no_grad()
    def __call__(self, images, top_k: int = 5, **kwargs):
        single = not isinstance(images, (list, tuple))
        batch = torch.stack([self.transform(load_image(image)) for image in ([images] if single else images)])
        probs = self.model(batch.to(self.device)).float().softmax(-1)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        results = [
            [{"score": float(s), "label": self.labels[i]} for s, i in zip(scores, indices.tolist())]
            for scores, indices in zip(top.values, top.indices)
        ]
        return results[0] if single else results


def image_classifier(model: str, device: str | None = None):
    """What `hf-deit predict` runs: `DeiTImageClassificationPipeline` for transformers/hf_deit models (a folder or
    a Hub id), `TimmFolderClassifier` for timm folders. Both decode images with hf_deit's decoder."""
    source = require_source(model, "model folder")  # a missing local folder is said so, not sent to the Hub
    if source.local and is_timm_folder(source.location):
        return TimmFolderClassifier(source.location, device)
    from transformers import pipeline

    import hf_deit  # noqa: F401  (registers the Auto classes)

    return pipeline(
        "image-classification", model=source.location, device=device, pipeline_class=DeiTImageClassificationPipeline
    )


__all__ = ["DeiTImageClassificationPipeline", "TimmFolderClassifier", "image_classifier"]

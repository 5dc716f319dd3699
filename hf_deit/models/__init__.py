"""The model: config, modeling and image processing. These files travel with every saved model folder as remote
code (`trust_remote_code=True`), so they import torch, transformers, Pillow and numpy only, and each other."""

from .configuration_deit import PRESETS, DeiTConfig
from .image_decoding import load_image
from .image_processing import DeiTImageProcessor, DeiTImageProcessorPil, image_processor_for
from .modeling_deit import DeiTForImageClassification, DeiTImageClassificationOutput, DeiTModel, DeiTPreTrainedModel

__all__ = [
    "PRESETS",
    "DeiTConfig",
    "load_image",
    "DeiTImageProcessor",
    "DeiTImageProcessorPil",
    "image_processor_for",
    "DeiTForImageClassification",
    "DeiTImageClassificationOutput",
    "DeiTModel",
    "DeiTPreTrainedModel",
]

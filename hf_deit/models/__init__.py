"""The model: config, modeling, image processing and the image decoder. They import torch, transformers, Pillow and
numpy only, and each other. configuration_deit.py and modeling_deit.py travel with every saved model folder as remote
code (`trust_remote_code=True`); the image processor is saved as transformers' PoolFormerImageProcessor settings, which
transformers reads without our code (image_processing.py), and the decoder stays with hf_deit."""

from .configuration_deit import PRESETS, DeiTConfig, eval_resize_size
from .image_decoding import load_image
from .image_processing import DeiTImageProcessor, DeiTImageProcessorPil, image_processor_for
from .modeling_deit import DeiTForImageClassification, DeiTImageClassificationOutput, DeiTModel, DeiTPreTrainedModel

__all__ = [
    "PRESETS",
    "DeiTConfig",
    "eval_resize_size",
    "load_image",
    "DeiTImageProcessor",
    "DeiTImageProcessorPil",
    "image_processor_for",
    "DeiTForImageClassification",
    "DeiTImageClassificationOutput",
    "DeiTModel",
    "DeiTPreTrainedModel",
]

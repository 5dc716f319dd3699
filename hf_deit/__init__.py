"""hf_deit: DeiT and distillation through attention for the Hugging Face ecosystem.

`import hf_deit` registers the model with transformers' Auto classes (model_type "hf_deit"), so
`AutoModelForImageClassification.from_pretrained(dir)` and `pipeline("image-classification", model=dir)` work.
Training-side names (trainer, data, losses) load lazily on first use so that inference stays a light import.
"""

from importlib import import_module
from typing import Any

from .configuration_deit import PRESETS, DeiTConfig
from .image_decoding import load_image
from .image_processing import (
    DeiTImageProcessor,
    DeiTImageProcessorPil,
    image_processor_for,
)
from .modeling_deit import (
    DeiTForImageClassification,
    DeiTImageClassificationOutput,
    DeiTModel,
    DeiTPreTrainedModel,
)

__version__ = "0.1.0"


def _register_auto_classes() -> None:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

    AutoConfig.register(DeiTConfig.model_type, DeiTConfig, exist_ok=True)
    AutoModel.register(DeiTConfig, DeiTModel, exist_ok=True)
    AutoModelForImageClassification.register(DeiTConfig, DeiTForImageClassification, exist_ok=True)
    # Saved directories also carry the code (auto_map + configuration/modeling files), so they load with
    # trust_remote_code=True where hf_deit is not installed.
    DeiTConfig.register_for_auto_class()
    DeiTModel.register_for_auto_class("AutoModel")
    DeiTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
    AutoImageProcessor.register(
        DeiTConfig,
        image_processor_classes={"torchvision": DeiTImageProcessor, "pil": DeiTImageProcessorPil},
        exist_ok=True,
    )


_register_auto_classes()

# name -> submodule, imported on first attribute access.
_LAZY = {
    "from_timm": "convert",
    "from_official": "convert",
    "from_transformers": "convert",
    "to_timm": "convert",
    "to_transformers": "convert",
    "DataArguments": "data",
    "load_image_dataset": "data",
    "build_datasets": "data",
    "build_collator": "data",
    "shard_dataset": "data",
    "DistillationLoss": "losses",
    "load_teacher": "teacher",
    "FrozenTeacher": "teacher",
    "TeacherMismatchError": "teacher",
    "CachedTeacher": "teacher_cache",
    "StaleTeacherCacheError": "teacher_cache",
    "cache_teacher": "teacher_cache",
    "analyze_model": "analysis",
    "compute_topk_metrics": "metrics",
    "load_accuracy_metric": "metrics",
    "DeiTImageClassificationPipeline": "inference",
    "build_model_card": "model_card",
    "model_card_from_trainer": "model_card",
    "push_model_to_hub": "model_card",
    "DeiTTrainingArguments": "training_args",
    "DistillationTrainer": "trainer",
    "prepare_student": "trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'hf_deit' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "DeiTConfig",
    "DeiTImageProcessor",
    "DeiTImageProcessorPil",
    "DeiTImageClassificationPipeline",
    "image_processor_for",
    "load_image",
    "DeiTModel",
    "DeiTPreTrainedModel",
    "DeiTForImageClassification",
    "DeiTImageClassificationOutput",
    *_LAZY,
]

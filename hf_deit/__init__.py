"""hf_deit: DeiT and distillation through attention for the Hugging Face ecosystem.

`import hf_deit` registers the model with transformers' Auto classes (model_type "hf_deit"), so
`AutoModelForImageClassification.from_pretrained(dir)` and `pipeline("image-classification", model=dir)` work.
Training-side names (trainer, data, losses) load lazily on first use so that inference stays a light import.
"""

from importlib import import_module
from typing import Any

from .models.configuration_deit import PRESETS, DeiTConfig
from .models.image_decoding import load_image
from .models.image_processing import (
    DeiTImageProcessor,
    DeiTImageProcessorPil,
    image_processor_for,
)
from .models.modeling_deit import (
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
    "from_timm": "hub.convert",
    "from_official": "hub.convert",
    "from_transformers": "hub.convert",
    "to_timm": "hub.convert",
    "to_transformers": "hub.convert",
    "DataArguments": "data",
    "load_image_dataset": "data",
    "build_datasets": "data",
    "DeiTCollator": "data",
    "shard_dataset": "data",
    "DistillationLoss": "distillation.losses",
    "load_teacher": "distillation.teacher",
    "FrozenTeacher": "distillation.teacher",
    "TeacherMismatchError": "distillation.teacher",
    "CachedTeacher": "distillation.teacher_cache",
    "StaleTeacherCacheError": "distillation.teacher_cache",
    "cache_teacher": "distillation.teacher_cache",
    "analyze_model": "analysis",
    "compute_topk_metrics": "distillation.metrics",
    "load_accuracy_metric": "distillation.metrics",
    "DeiTImageClassificationPipeline": "inference",
    "build_model_card": "hub.model_card",
    "model_card_from_trainer": "distillation.card_facts",
    "push_model_to_hub": "hub.model_card",
    "DeiTTrainingArguments": "distillation.arguments",
    "StudentArguments": "distillation.arguments",
    "build_student": "distillation.student",
    "DistillationTrainer": "distillation.trainer",
    "prepare_student": "distillation.student",
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

"""The teacher a DistillationTrainer distils from, resolved once at start: a live frozen teacher or a cache.

    teacher, source = resolve_teacher(teacher, args, model, processor, train_dataset)

`teacher` is what the user passed to the trainer (None, a name or path, an nn.Module, a FrozenTeacher or a
CachedTeacher); None means `--teacher_cache` if set, else `--teacher_name_or_path`. `source` is what was really
loaded, for the model card (the arguments name the default teacher even when a module is passed). Every check runs
here, before any step: the class count (TeacherMismatchError), the cache against the student and every training row
(StaleTeacherCacheError), a teacher named beside a cache against the one the cache was made by.
"""

from __future__ import annotations

import logging
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from .arguments import DeiTTrainingArguments
from .fast_paths import prepare_teacher
from .teacher import FrozenTeacher, load_teacher
from .teacher_cache import CachedTeacher, StaleTeacherCacheError, check_cache_teacher

logger = logging.getLogger(__name__)


def resolve_teacher(
    teacher: nn.Module | str | None, args: DeiTTrainingArguments, model: nn.Module, processor: Any,
    train_dataset: Any,
) -> tuple[FrozenTeacher | CachedTeacher | None, str | None]:
    """(teacher, what it was loaded from); (None, None) without distillation. See the module docstring."""
    if args.distillation_type == "none":
        if teacher is not None:
            logger.warning("distillation_type='none': the teacher passed to DistillationTrainer is not used.")
        return None, None
    if isinstance(teacher, CachedTeacher) or (teacher is None and args.teacher_cache):
        cache = _load_cache(teacher, args, model.config.num_labels, train_dataset)
        # The teacher the cache was made from (the card names it; the cache file's path is the training machine's).
        return cache.to(args.device), cache.info.teacher
    spec = teacher if teacher is not None else args.teacher_name_or_path
    if spec is None:
        raise ValueError(
            f"distillation_type={args.distillation_type!r} needs a teacher: pass teacher= to DistillationTrainer or "
            "--teacher_name_or_path, or use --distillation_type none."
        )
    source = spec if isinstance(spec, str) else (
        getattr(getattr(spec, "config", None), "_name_or_path", None) or type(spec).__name__
    )
    frozen = load_teacher(
        spec,
        num_labels=model.config.num_labels,
        device=args.device,
        checkpoint_path=args.teacher_checkpoint_path,
        student_mean=getattr(processor, "image_mean", None) or IMAGENET_DEFAULT_MEAN,
        student_std=getattr(processor, "image_std", None) or IMAGENET_DEFAULT_STD,
        # finetune recipe: the teacher sees the student's crops at the student's resolution (the paper's 384)
        input_size=model.config.image_size if args.teacher_at_student_resolution else None,
    )
    return prepare_teacher(
        frozen,
        channels_last=args.teacher_channels_last,
        # --torch_compile compiles the teacher with the student (accelerate's prepare_model): not twice
        compile=args.teacher_torch_compile and not args.torch_compile,
        compile_backend=args.torch_compile_backend,
        compile_mode=args.torch_compile_mode,
    ), source


def _load_cache(cache: CachedTeacher | None, args: DeiTTrainingArguments, num_labels: int, train_dataset: Any):
    """The cached teacher, checked against the student's classes and every training row before any step."""
    if cache is None:
        cache = CachedTeacher.load(args.teacher_cache, num_labels=num_labels)
        if args.teacher_name_or_path:  # named beside the cache: it must be the teacher the cache was made by
            check_cache_teacher(cache.info, args.teacher_cache, args.teacher_name_or_path, args.teacher_checkpoint_path)
    elif cache.num_labels != num_labels:
        raise StaleTeacherCacheError(f"The teacher cache predicts {cache.num_labels} classes but the student has {num_labels}.")
    if train_dataset is not None and args.teacher_cache:  # a cache built in memory has no row keys
        cache.check_dataset(train_dataset, args.teacher_cache)
    return cache


__all__ = ["resolve_teacher"]

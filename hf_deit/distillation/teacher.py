"""The distillation teacher: loaded from a timm name / Hub id / local checkpoint, a transformers model directory, or
any `nn.Module`; frozen, in eval mode, and fed inputs in its own normalisation and size.

The student's batch arrives normalised with the student's statistics (ImageNet mean/std for DeiT) at the student's
resolution. `FrozenTeacher.forward` undoes that normalisation, applies the teacher's own (timm `pretrained_cfg`, or a
transformers image processor's image_mean/std) and resizes bicubically when the teacher expects another size.
So the teacher sees exactly the (augmented, mixed) pixels the student sees, never a second decode.

The teacher is deliberately *not* part of the student or of the Trainer's model: it is never wrapped in DDP, never
saved in checkpoints and never seen by the optimizer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ..sources import HUB_PREFIX, is_timm_folder, locate

logger = logging.getLogger(__name__)

DEFAULT_TEACHER = "timm/regnety_160.deit_in1k"  # the paper's RegNetY-16GF teacher (82.9% top-1)


class TeacherMismatchError(ValueError):
    """The teacher cannot teach this student (different classes)."""


# Why not timm's `timm.task.distillation.DistillationTeacher` (timm >= 1.0.20): it covers only part of this API.
# It builds teachers from timm names only (no transformers models or folders; a checkpoint file goes through timm's
# pretrained-weights overlay, not a strict load); takes mean/std only from a timm pretrained_cfg (ImageNet otherwise,
# no override for other modules); never resizes to the teacher's input size; returns the raw model output (a
# transformers ModelOutput, not logits); checks no class count; and leaves freezing and eval pinning to timm's
# LogitDistillationTask, which we do not use (the Trainer is our loop). Its one shareable piece, `normalize_input`,
# is the affine map of `adapt_inputs` below, with the student's statistics passed on every call.
class FrozenTeacher(nn.Module):
    """A frozen teacher that adapts the student's batch to its own input statistics and size.

    Args:
        model: the classifier; its output is a logits tensor or has a `.logits` field.
        mean, std: the teacher's input normalisation (RGB, on [0, 1] pixels).
        input_size: (height, width) the teacher expects, or None to keep the student's size.
        student_mean, student_std: the statistics the student's batch is normalised with.
        interpolation: resize mode when sizes differ ("bicubic", like the pretrained configs of DeiT's teachers).
        num_labels: classes the teacher predicts, when known without a forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        input_size: tuple[int, int] | None = None,
        student_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        student_std: Sequence[float] = IMAGENET_DEFAULT_STD,
        interpolation: str = "bicubic",
        num_labels: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.input_size = tuple(input_size) if input_size is not None else None
        self.interpolation = interpolation if interpolation in ("bicubic", "bilinear", "nearest") else "bicubic"
        self._num_labels = num_labels
        # torch.channels_last when the network runs NHWC (fast_paths.prepare_teacher); inputs follow it.
        self.memory_format = torch.contiguous_format
        # Renormalisation as one affine map: x_t = (x_s * std_s + mean_s - mean_t) / std_t = x_s * scale + shift.
        # Skipped (not applied as a no-op) when the statistics are equal, so the teacher gets the exact same tensor.
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        mean_s, std_s = torch.tensor(student_mean, dtype=torch.float32), torch.tensor(student_std, dtype=torch.float32)
        self.renormalise = not (torch.equal(mean_t, mean_s) and torch.equal(std_t, std_s))
        # (3,) -> (1, 3, 1, 1) to broadcast over (batch, channels, H, W); buffers follow .to(device).
        self.register_buffer("scale", (std_s / std_t).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean_s - mean_t) / std_t).view(1, -1, 1, 1), persistent=False)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.freeze()

    def freeze(self) -> FrozenTeacher:
        self.model.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        # A teacher stays in eval mode (BatchNorm running stats, no dropout) whatever its caller asks.
        return super().train(False)

    def adapt_inputs(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The student's normalised batch -> the teacher's normalisation and size."""
        x = pixel_values
        if self.renormalise:
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            # antialias only matters when downsizing; align_corners=False like timm and torchvision's Resize.
            antialias = self.interpolation in ("bicubic", "bilinear")
            # float32: antialiased bicubic is not implemented for bf16/fp16 on every device.
            x = F.interpolate(
                x.float(), size=self.input_size, mode=self.interpolation, align_corners=False, antialias=antialias
            ).to(x.dtype)
        return x

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        outputs = self.model(self.adapt_inputs(pixel_values).contiguous(memory_format=self.memory_format))
        return outputs if isinstance(outputs, torch.Tensor) else outputs.logits

    @property
    def num_labels(self) -> int:
        """Classes the teacher predicts (one tiny forward pass when the model does not say)."""
        if self._num_labels is None:
            param = next(self.model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            side = self.input_size or (224, 224)
            self._num_labels = int(self(torch.zeros(1, 3, *side, device=device)).shape[-1])
        return self._num_labels


def _timm_teacher(model: nn.Module, **kwargs) -> FrozenTeacher:
    from timm.data import resolve_model_data_config

    config = resolve_model_data_config(model)
    size = tuple(config["input_size"][-2:])
    return FrozenTeacher(
        model,
        mean=kwargs.pop("mean", None) or config["mean"],
        std=kwargs.pop("std", None) or config["std"],
        input_size=kwargs.pop("input_size", None) or size,
        interpolation=kwargs.pop("interpolation", None) or config.get("interpolation", "bicubic"),
        num_labels=getattr(model, "num_classes", None),
        **kwargs,
    )


def _processor_size(processor) -> tuple[int, int] | None:
    """The (height, width) a transformers image processor feeds its model."""
    for name in ("crop_size", "size"):
        size = getattr(processor, name, None)
        if size is None:
            continue
        size = dict(size) if not isinstance(size, int) else {"height": size, "width": size}
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if name == "size" and "shortest_edge" in size and not getattr(processor, "do_center_crop", False):
            continue
    return None


def _transformers_teacher(model: nn.Module, processor=None, **kwargs) -> FrozenTeacher:
    if processor is not None:
        mean = kwargs.pop("mean", None) or processor.image_mean
        std = kwargs.pop("std", None) or processor.image_std
        size = kwargs.pop("input_size", None) or _processor_size(processor)
    else:
        logger.warning(
            "No image processor found for the transformers teacher %s: assuming it was trained with the student's "
            "normalisation and size. Pass mean=/std=/input_size= to load_teacher if it was not.",
            type(model).__name__,
        )
        mean, std, size = kwargs.pop("mean", None), kwargs.pop("std", None), kwargs.pop("input_size", None)
    extra = {"mean": mean, "std": std} if mean is not None else {}
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    return FrozenTeacher(model, input_size=size, num_labels=num_labels, **extra, **kwargs)


def load_teacher(
    spec: str | nn.Module,
    num_labels: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    pretrained: bool = True,
    checkpoint_path: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | tuple[int, int] | None = None,
    student_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    student_std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> FrozenTeacher:
    """A frozen, eval-mode teacher that accepts the student's normalised batch.

    `spec`:
      * a timm name (`"regnety_160.deit_in1k"`) or timm Hub id (`"timm/regnety_160.deit_in1k"`, `"hf-hub:..."`);
        with `checkpoint_path`, the name gives the architecture and the weights come from that file;
      * a local directory: a timm one (config.json with "architecture") or a transformers one (config.json with
        "model_type", e.g. a model trained by examples/train_teacher.py; its preprocessor_config.json gives the
        normalisation and size);
      * another Hub id (`"org/name"`): a transformers image classifier;
      * an `nn.Module` (a `FrozenTeacher` is returned as is, moved). timm modules bring their pretrained_cfg;
        for others pass `mean`/`std`/`input_size` if they differ from the student's.
    `num_labels`: the student's classes. A teacher predicting another number raises `TeacherMismatchError` here,
        before any training step. A timm name with `pretrained=False` is built with this many classes.
    `device`, `dtype`: where and in which dtype the teacher's weights live (DistillationTrainer leaves dtype None
        and runs the teacher under the training autocast instead).
    `mean`, `std`, `input_size`: override what the teacher's config says.
    """
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    overrides = {"mean": mean, "std": std, "input_size": input_size}
    student_stats = {"student_mean": student_mean, "student_std": student_std}

    if isinstance(spec, FrozenTeacher):
        teacher = spec
    elif isinstance(spec, nn.Module):
        teacher = _teacher_from_module(spec, overrides, student_stats)
    elif isinstance(spec, str):
        teacher = _load_from_string(spec, num_labels, pretrained, checkpoint_path, overrides, student_stats)
    else:
        raise TypeError(f"teacher must be a name, a path or an nn.Module, got {type(spec).__name__}.")

    if device is not None or dtype is not None:
        teacher.to(device=device, dtype=dtype)
    teacher.freeze()
    if num_labels is not None and teacher.num_labels != num_labels:
        raise TeacherMismatchError(
            f"The teacher predicts {teacher.num_labels} classes but the student has {num_labels}. Distillation needs "
            "a teacher trained on the student's label set: fine-tune one first (examples/train_teacher.py), pass "
            "another --teacher_name_or_path, or train without a teacher (--distillation_type none)."
        )
    return teacher


def _teacher_from_module(module: nn.Module, overrides: dict, student_stats: dict) -> FrozenTeacher:
    """timm modules bring their pretrained_cfg; any other module gets the student's statistics and size unless
    `overrides` (mean / std / input_size) say otherwise."""
    if hasattr(module, "pretrained_cfg"):
        return _timm_teacher(module, **overrides, **student_stats)
    return FrozenTeacher(
        module,
        mean=overrides["mean"] or student_stats["student_mean"],
        std=overrides["std"] or student_stats["student_std"],
        input_size=overrides["input_size"],
        num_labels=getattr(getattr(module, "config", None), "num_labels", None),
        **student_stats,
    )


def check_teacher_source(spec: str) -> None:
    """Cheap checks that `spec` can name a teacher, before anything is downloaded or loaded: a path that does not
    exist, or a bare name that is not a timm model, fail here with a message about the teacher."""
    source = locate(spec)
    if source.exists and not os.path.isdir(source.location):
        raise ValueError(
            f"teacher {spec} is a file, not a model folder: for a weights file pass the timm architecture name as "
            "--teacher_name_or_path and the file as --teacher_checkpoint_path."
        )
    if source.exists:
        return
    if source.local:
        raise FileNotFoundError(
            f"teacher path {spec} does not exist: give --teacher_name_or_path an existing folder (e.g. the output_dir "
            "of examples/train_teacher.py), a timm name or a Hub id."
        )
    if "/" not in spec and not spec.startswith(HUB_PREFIX):
        import timm

        if not timm.is_model(spec):
            raise ValueError(
                f"Unknown teacher {spec!r}: not a local folder and not a timm model name (timm.list_models('*regnet*') "
                "lists names; the paper's teacher is timm/regnety_160.deit_in1k). Fix --teacher_name_or_path."
            )


def _load_from_string(
    spec: str, num_labels: int | None, pretrained: bool, checkpoint_path: str | None, overrides: dict, student_stats: dict
) -> FrozenTeacher:
    import timm

    check_teacher_source(spec)
    source = locate(spec)
    if source.local:
        if is_timm_folder(source.location):
            model = timm.create_model(f"local-dir:{source.location}", pretrained=True)
            return _timm_teacher(model, **overrides, **student_stats)
        return _load_transformers(source.location, overrides, student_stats)
    is_timm = spec.startswith(("timm/", HUB_PREFIX)) or "/" not in spec
    if is_timm:
        name = spec if not spec.startswith("timm/") else f"hf-hub:{spec}"
        kwargs = {}
        if (checkpoint_path is not None or not pretrained) and num_labels is not None:
            kwargs["num_classes"] = num_labels  # a fine-tuned checkpoint / a fresh head has the student's classes
        try:
            model = timm.create_model(name, pretrained=pretrained and checkpoint_path is None, **kwargs)
            if checkpoint_path is not None:
                # timm's loader reads .pth / .safetensors, unwraps "state_dict"/"model" keys; strict: a wrong
                # architecture must fail here, not train against a half-loaded teacher.
                timm.models.load_checkpoint(model, checkpoint_path, strict=True)
        except OSError as error:  # not cached offline, or not found
            raise OSError(
                f"Could not load the timm teacher {spec!r} ({error}). Offline, the weights must already be in the "
                "Hugging Face cache (run once online, or `huggingface-cli download` them), or pass a local "
                "checkpoint with checkpoint_path= / a local directory."
            ) from error
        return _timm_teacher(model, **overrides, **student_stats)
    return _load_transformers(spec, overrides, student_stats)


def _load_transformers(path: str, overrides: dict, student_stats: dict) -> FrozenTeacher:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    try:
        model = AutoModelForImageClassification.from_pretrained(path)
    except (OSError, ValueError) as error:  # ValueError: huggingface_hub's "Repo id must be in the form ..."
        raise OSError(
            f"Could not load the teacher {path!r}: not a local folder, and not loadable as a Hub image classifier "
            f"({error}). Fix --teacher_name_or_path (offline, a Hub teacher must already be in the cache)."
        ) from error
    try:
        processor = AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError):
        processor = None
    return _transformers_teacher(model, processor, **overrides, **student_stats)


__all__ = ["DEFAULT_TEACHER", "FrozenTeacher", "TeacherMismatchError", "check_teacher_source", "load_teacher"]

"""The arguments of a distillation run, one owner per setting (as TRL's trainers):

  * `DeiTTrainingArguments`: `transformers.TrainingArguments` with DeiT's recipe as defaults plus everything
    `DistillationTrainer` reads: distillation loss and teacher, speed knobs, EMA, lr rule and warmup, Mixup/CutMix
    (inherited from `hf_deit.data.MixupArguments`) and label smoothing (transformers' `label_smoothing_factor`,
    default 0.1, also spelled `--label_smoothing`).
  * `StudentArguments`: the student's architecture (preset, overrides, drop path) or a checkpoint to fine-tune.
  * `hf_deit.data.DataArguments` (not here): how images are loaded and augmented, evaluation preprocessing
    included, and repeated augmentation (which for a stream is part of the dataset).

The three are parsed together by `HfArgumentParser` (no field names clash). Defaults follow the paper's recipe
(Table 9 / its main.py): AdamW (0.9, 0.999, eps 1e-8), lr = 5e-4 x global_batch / 512, weight decay 0.05 (not on
norms, biases, position embeddings, tokens), cosine schedule with 5 warmup epochs, 300 epochs, drop path 0.1, no
gradient clipping, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, hard distillation with alpha 0.5 from a
RegNetY-16GF teacher.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..data.arguments import MixupArguments
from ..models.configuration_deit import FUSIONS, PRESETS
from .fast_paths import SDPA_BACKENDS
from .losses import DISTILLATION_TYPES
from .teacher import DEFAULT_TEACHER

logger = logging.getLogger(__name__)

# The paper's lr rule: lr = base_lr * global_batch / LR_REFERENCE_BATCH.
LR_REFERENCE_BATCH = 512


@dataclass
class StudentArguments:
    """The student: a DeiT preset (with overrides) trained from scratch, or a checkpoint to fine-tune.
    `hf_deit.build_student(student_args, data_args, labels)` builds it."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Fine-tune this hf_deit checkpoint (folder or Hub id) instead of training --student_preset from "
            "scratch; heads are re-initialised for a new label set, position embeddings resized to --image_size."
        },
    )
    student_preset: str = field(
        default="deit_tiny_distilled_patch16_224",
        metadata={
            "help": "DeiT architecture to build the student from (a timm DeiT name, see hf_deit.PRESETS). DeiT-Ti "
            "distilled is the default because it trains on one node in reasonable time; the paper's headline model "
            "is deit_base_distilled_patch16_224.",
            "choices": sorted(PRESETS),
        },
    )
    drop_path_rate: float = field(
        default=0.1, metadata={"help": "Stochastic depth rate of the student (the paper: 0.1, also when fine-tuning)."}
    )
    patch_size: int | None = field(default=None, metadata={"help": "Patch side (e.g. 4 for 32 px CIFAR images)."})
    hidden_size: int | None = field(default=None, metadata={"help": "Override the preset's width (small runs)."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Override the preset's depth."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Override the preset's heads."})
    fusion: str | None = field(
        default=None,
        metadata={"help": "How the two heads combine at inference (default: the preset's, mean).", "choices": FUSIONS},
    )

    def __post_init__(self) -> None:
        if self.student_preset not in PRESETS:
            raise ValueError(f"student_preset={self.student_preset!r} is unknown; use one of {sorted(PRESETS)}.")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={self.drop_path_rate} must be in [0, 1).")

    def overrides(self) -> dict:
        """The architecture fields given (not None), as DeiTConfig keyword arguments."""
        names = ("patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "fusion")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass
class DeiTTrainingArguments(TrainingArguments, MixupArguments):
    # --- distillation
    distillation_type: str = field(
        default="hard",
        metadata={
            "help": "Distillation loss on the distillation head: 'hard' (CE against the teacher's argmax; the "
            "paper's best), 'soft' (KL at temperature tau, times tau^2, averaged per sample) or 'none' (no teacher).",
            "choices": list(DISTILLATION_TYPES),
        },
    )
    distillation_alpha: float = field(
        default=0.5, metadata={"help": "Weight of the distillation loss: total = (1 - alpha) * base + alpha * distill."}
    )
    distillation_tau: float = field(default=1.0, metadata={"help": "Softmax temperature of soft distillation."})
    teacher_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "The teacher: a timm name or Hub id (default: the paper's RegNetY-16GF, timm/regnety_160.deit_in1k), "
            "a local timm or transformers model directory, or another Hub id of a transformers image classifier. "
            "Ignored when distillation_type is 'none' or a teacher module is passed to DistillationTrainer. With "
            "--teacher_cache no teacher is needed; one named beside it must be the teacher the cache was made by."
        },
    )
    teacher_checkpoint_path: str | None = field(
        default=None,
        metadata={"help": "Local weights file for a timm teacher named by teacher_name_or_path (architecture name)."},
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={
            "help": "A teacher cache made by `hf-deit cache-teacher` (parquet): distil from the teacher's stored dense "
            "label maps pooled over each crop instead of running the teacher (docs/method.md). The training data "
            "must be the rows it was made from (map-style or streamed), with the same bytes; a cache made from other "
            "images, for other classes, in an older format or by another teacher than --teacher_name_or_path (when "
            "given) is refused, saying what differs."
        },
    )
    # --- speed (hf_deit.distillation.fast_paths; the default keeps the paper's fp32 numerics)
    teacher_torch_compile: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the teacher with --torch_compile_backend/--torch_compile_mode (inductor by default); "
            "--torch_compile compiles only the student. Same logits up to fp32 rounding order."
        },
    )
    teacher_channels_last: bool = field(
        default=False,
        metadata={
            "help": "Run a CNN teacher in channels_last (NHWC) memory format, the fast layout for cuDNN's bf16/fp16 "
            "convolutions. Same logits up to fp32 rounding order; no effect on transformer teachers."
        },
    )
    teacher_inference_mode: bool = field(
        default=True,
        metadata={
            "help": "Run the teacher under torch.inference_mode (else torch.no_grad): no autograd bookkeeping at all. "
            "Identical logits."
        },
    )
    sdpa_backend: str | None = field(
        default=None,
        metadata={
            "help": "Pin the student's attention kernel: 'flash', 'efficient', 'cudnn' or 'math' (default: torch "
            "chooses). Flash needs bf16/fp16 on CUDA; all give the same attention up to rounding.",
            "choices": list(SDPA_BACKENDS),
        },
    )
    model_ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "Keep an exponential moving average of the student's weights (timm ModelEmaV3) with this decay, "
            "e.g. 0.99996 as the paper's code; evaluated alongside the model (eval_ema_* metrics). Off when unset or 0."
        },
    )
    # --- learning rate rule and schedule
    base_learning_rate: float = field(
        default=5e-4, metadata={"help": f"Learning rate per {LR_REFERENCE_BATCH} images (used when scale_lr is on)."}
    )
    scale_lr: bool = field(
        default=True,
        metadata={
            "help": f"Set learning_rate = base_learning_rate x global_batch / {LR_REFERENCE_BATCH}, where global_batch "
            "= per_device_train_batch_size x world_size x gradient_accumulation_steps (the paper's rule). Turn off "
            "(--scale_lr False) to use --learning_rate as given."
        },
    )
    warmup_epochs: float = field(
        default=5.0,
        metadata={
            "help": "Linear warmup length in epochs, converted to optimizer steps when training starts (for a "
            "streaming dataset without a length: max_steps x warmup_epochs / num_train_epochs). Ignored when "
            "--warmup_steps is set (> 0)."
        },
    )
    # --- TrainingArguments defaults changed to the paper's recipe
    label_smoothing_factor: float = field(
        default=0.1,
        metadata={
            "help": "Label smoothing of the base (class-token) loss, folded into the Mixup/CutMix soft targets "
            "(the paper: 0.1).",
            "aliases": ["--label_smoothing"],
        },
    )
    num_train_epochs: float = field(default=300.0, metadata={"help": "Training epochs (the paper: 300)."})
    weight_decay: float = field(
        default=0.05,
        metadata={"help": "AdamW weight decay; not applied to norms, biases, position embeddings and tokens."},
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning rate schedule after warmup."})
    max_grad_norm: float = field(
        default=0.0,
        metadata={"help": "Gradient clipping norm; 0 (the paper's setting) disables clipping."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Keep dataset columns the model's forward does not take: hf_deit's on-the-fly transforms need "
            "the raw 'image' column, which the Trainer would otherwise drop."
        },
    )

    def __post_init__(self) -> None:
        if self.distillation_type not in DISTILLATION_TYPES:
            raise ValueError(f"distillation_type={self.distillation_type!r}: use one of {DISTILLATION_TYPES}.")
        if not 0.0 <= self.distillation_alpha <= 1.0:
            raise ValueError(f"distillation_alpha={self.distillation_alpha} must be in [0, 1].")
        if self.distillation_tau <= 0:
            raise ValueError(f"distillation_tau={self.distillation_tau} must be > 0.")
        if not 0.0 <= self.label_smoothing_factor < 1.0:
            raise ValueError(f"label_smoothing_factor={self.label_smoothing_factor} must be in [0, 1).")
        self.check_mixup()
        if self.model_ema_decay is not None and not 0.0 <= self.model_ema_decay < 1.0:
            raise ValueError(f"model_ema_decay={self.model_ema_decay} must be in [0, 1) (0 or unset = no EMA).")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be >= 0.")
        if self.base_learning_rate <= 0:
            raise ValueError(f"base_learning_rate={self.base_learning_rate} must be > 0.")
        if self.sdpa_backend is not None and self.sdpa_backend not in SDPA_BACKENDS:
            raise ValueError(f"sdpa_backend={self.sdpa_backend!r}: use one of {sorted(SDPA_BACKENDS)} or leave it unset.")
        if self.teacher_name_or_path is None and not self.teacher_cache:
            self.teacher_name_or_path = DEFAULT_TEACHER  # a cache needs no teacher (one named beside it is checked)
        if self.distillation_type != "none" and not (self.teacher_name_or_path or self.teacher_cache):
            logger.info("No teacher_name_or_path: DistillationTrainer must then be given a teacher module.")
        # TrainingArguments.__post_init__ sets up the devices (and the process group under torchrun/accelerate),
        # so the world size is known only after it: the lr rule comes last.
        super().__post_init__()
        if self.scale_lr:
            self.learning_rate = self.base_learning_rate * self.global_train_batch_size / LR_REFERENCE_BATCH
        self._check_trains()
        self._check_launch()

    def _check_trains(self) -> None:
        """Refuse a run that would save an untrained model (and a model card for it) and exit 0."""
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"max_steps={self.max_steps} trains nothing: give a positive number of optimizer steps, or leave "
                "--max_steps unset (-1) to train for --num_train_epochs."
            )
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ValueError(
                f"num_train_epochs={self.num_train_epochs} trains nothing: give a positive number of epochs (the "
                "paper: 300), or a positive --max_steps."
            )
        if self.learning_rate <= 0:
            raise ValueError(
                f"learning_rate={self.learning_rate} trains nothing: give a positive --learning_rate, or drop "
                "--scale_lr False to use base_learning_rate x global_batch / 512."
            )

    def _check_launch(self) -> None:
        """A multi-process launch that the Trainer sees as one process trains N independent copies into one
        output_dir (transformers 5.23 on a machine without GPU, unless told to use the CPU)."""
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1 and self.world_size == 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()  # so that every process exits with the error instead of waiting
            raise ValueError(
                f"Launched as {launched} processes (WORLD_SIZE={launched}) but the Trainer sees one: each process "
                "would train its own copy and all would write to the same output_dir. On a machine without GPU add "
                "--use_cpu --ddp_backend gloo; with GPUs, check that accelerate/torchrun sees them."
            )

    @property
    def global_train_batch_size(self) -> int:
        """Images per optimizer step over all processes."""
        return self.per_device_train_batch_size * max(1, self.world_size) * self.gradient_accumulation_steps

    @property
    def use_model_ema(self) -> bool:
        return bool(self.model_ema_decay)


__all__ = ["DeiTTrainingArguments", "StudentArguments", "LR_REFERENCE_BATCH"]

"""The arguments of a distillation run, one owner per setting (as TRL's trainers):

  * `DeiTTrainingArguments`: `transformers.TrainingArguments` with DeiT's recipe as defaults plus everything
    `DistillationTrainer` reads: distillation loss and teacher, speed knobs, EMA, lr rule and warmup, Mixup/CutMix
    (inherited from `hf_deit.distillation.mixing.MixupArguments`) and label smoothing (transformers' `label_smoothing_factor`,
    default 0.1, also spelled `--label_smoothing`).
  * `StudentArguments`: the student's architecture (preset, overrides, drop path) or a checkpoint to fine-tune.
  * `hf_deit.data.DataArguments` (not here): how images are loaded and augmented, evaluation preprocessing
    included, and repeated augmentation (which for a stream is part of the dataset).

The three are parsed together by `HfArgumentParser` (no field names clash). Defaults are the official code's
(facebookresearch/deit); docs/recipe.md's table, generated from hf_deit/distillation/recipe_table.py, gives each
value with the file and line it comes from and the reason for every deliberate difference. Fields that depend on
each other or on the machine (batch, lr, precision, workers, and those of `--recipe`) default to None and are
resolved once in `DeiTTrainingArguments.__post_init__` by hf_deit.distillation.recipe, which notes how each was
derived (`recipe_notes`; examples/distill.py prints them).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .mixing import MixupArguments
from ..models.configuration_deit import FUSIONS, PRESETS
from .fast_paths import SDPA_BACKENDS
from .losses import DISTILLATION_TYPES, KL_REDUCTIONS
from .recipe import (
    AUTO_MAX_PER_DEVICE_BATCH,
    LR_REFERENCE_BATCH,
    PRECISIONS,
    RECIPES,
    RESOLVED_FIELDS,
    Environment,
    RecipeError,
    resolve,
)
from .teacher import DEFAULT_TEACHER

logger = logging.getLogger(__name__)

# What a world size other than the launcher's changes (resolved again once transformers has set up the devices).
BATCH_FIELDS = ("global_batch_size", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate")


def global_batch(args: TrainingArguments) -> int:
    """Images per optimizer step over all processes (and DataParallel devices) for any TrainingArguments."""
    devices = max(1, args.world_size) * (max(1, args.n_gpu) if args.world_size <= 1 else 1)
    return args.per_device_train_batch_size * devices * args.gradient_accumulation_steps


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
    distillation_kl_reduction: str = field(
        default="numel",
        metadata={
            "help": "How soft distillation averages its summed KL: 'numel' divides by batch x classes as the "
            "paper's code (losses.py), 'batchmean' by the batch only (the KL's definition; classes x stronger, "
            "1000x on ImageNet). Both times tau^2.",
            "choices": list(KL_REDUCTIONS),
        },
    )
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
            "help": "torch.compile only the teacher, with --torch_compile_backend/--torch_compile_mode (inductor by "
            "default). --torch_compile (or a backend or mode, which turn it on) compiles the student and the teacher "
            "(accelerate prepares both). Same logits up to fp32 rounding order."
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
    # --- the recipe: every field below left at None takes its value from --recipe (hf_deit.distillation.recipe)
    recipe: str = field(
        default="pretrain",
        metadata={
            "help": "The paper's recipe the unset fields below follow: 'pretrain' (main.py's defaults, global batch "
            "1024, 300 epochs) or 'finetune' (its 384 fine-tuning: 30 epochs, batch 512, lr 5e-6, min lr 5e-6, "
            "weight decay 1e-8, the teacher at the student's resolution; with --model_name_or_path). "
            "`hf-deit recipe` prints what a run resolves to.",
            "choices": sorted(RECIPES),
        },
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Images per optimizer step over all processes (the recipe: 1024; or per-device batch x "
            "processes x accumulation when --per_device_train_batch_size is given without it). The per-device "
            f"batch (at most {AUTO_MAX_PER_DEVICE_BATCH}) and gradient accumulation not given are derived from it and "
            "the number of processes."
        },
    )
    per_device_train_batch_size: int | None = field(
        default=None, metadata={"help": "Batch per device (default: derived from --global_batch_size)."}
    )
    gradient_accumulation_steps: int | None = field(
        default=None, metadata={"help": "Gradient accumulation steps (default: derived from --global_batch_size)."}
    )
    base_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": f"The paper's lr rule: learning_rate = base_learning_rate x global batch / {LR_REFERENCE_BATCH} "
            "(the recipe: 5e-4; finetune 5e-6). Not with --learning_rate."
        },
    )
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "Peak learning rate used as given (default: from --base_learning_rate and the global batch)."},
    )
    num_train_epochs: float | None = field(
        default=None, metadata={"help": "Training epochs, each the paper's sampler's epoch (the recipe: 300; finetune 30)."}
    )
    weight_decay: float | None = field(
        default=None,
        metadata={
            "help": "AdamW weight decay (the recipe: 0.05; finetune 1e-8); not on 1-D parameters (norms, biases), "
            "the position embeddings and the cls token, as the paper's code (the distillation token is decayed)."
        },
    )
    lr_schedule: str = field(
        default="epoch",
        metadata={
            "help": "'epoch': the paper's cosine (timm CosineLRScheduler, warmup from --warmup_lr, floor --min_lr) "
            "stepped once per epoch as its main.py does; 'step': the same curve per optimizer step; 'transformers': "
            "--lr_scheduler_type with --warmup_steps (transformers' schedulers).",
            "choices": ["epoch", "step", "transformers"],
        },
    )
    warmup_epochs: float | None = field(
        default=None, metadata={"help": "Linear warmup epochs of the paper's schedule (the recipe: 5)."}
    )
    warmup_lr: float | None = field(default=None, metadata={"help": "Learning rate warmup starts from (the recipe: 1e-6)."})
    min_lr: float | None = field(
        default=None, metadata={"help": "Floor of the cosine (the recipe: 1e-5; finetune 5e-6)."}
    )
    model_ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "Exponential moving average of the student's weights (timm ModelEmaV3), updated after every "
            "step (the recipe: 0.99996, as the paper's code; 0 turns it off). The saved model is the non-EMA one, "
            "as the paper reports; the EMA weights are saved beside it (model_ema.safetensors) and evaluated as "
            "eval_ema_*."
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "'auto': bf16 autocast on a GPU that supports it, else fp16 with a loss scaler (the paper's "
            "code), fp32 on a CPU; or 'fp32', 'bf16', 'fp16'. --bf16/--fp16 (transformers) override it.",
            "choices": list(PRECISIONS),
        },
    )
    teacher_at_student_resolution: bool | None = field(
        default=None,
        metadata={
            "help": "Feed the teacher the student's crops at the student's resolution instead of resizing them to "
            "the teacher's own input size (the recipe: off; finetune: on, as the paper fine-tunes at 384 with a "
            "teacher at the target resolution)."
        },
    )
    # --- the output folder (hf_deit.distillation.run_folder; transformers 5 dropped this flag of transformers 4)
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start afresh in an --output_dir that holds another run's outputs, deleting them first: its "
            "checkpoint-* folders (complete or not), trainer_state.json, training_args.bin, the model's weights, "
            "config.json, preprocessor_config.json and code files, *_results.json, README.md, training_curves.png "
            "and its run record (_hf_deit_run.json). Other files are kept. Without it such a folder is refused "
            "unless --resume_from_checkpoint continues its run."
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
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "DataLoader worker processes (default: the paper's 10 per process, at most the CPU cores per "
            "process, on a GPU machine; 0 without a GPU)."
        },
    )
    save_strategy: str = field(
        default="epoch", metadata={"help": "When to write a checkpoint (the paper: after every epoch)."}
    )
    save_total_limit: int | None = field(
        default=None, metadata={"help": "Checkpoints kept on disk, the newest (the recipe: 2; 0 keeps every one)."}
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "transformers' filter of non-finite step losses from the logged mean; it reads every step's loss "
            "on the host (2 syncs per step). Off: DistillationTrainer watches non-finite losses and teacher logits on "
            "the device and stops the run at the next log, naming the step (hf_deit.distillation.monitor)."
        },
    )
    eval_strategy: str = field(
        default="epoch",
        metadata={"help": "When to evaluate (the paper: after every epoch; off when no evaluation data is given)."},
    )
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "transformers' schedule, used with --lr_schedule transformers only."}
    )
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
        self._check_distillation()
        self.check_mixup()
        # The recipe first: transformers' own __post_init__ reads the precision and worker fields.
        self.recipe_given = {name: getattr(self, name) for name in RESOLVED_FIELDS if getattr(self, name) is not None}
        if self.bf16 or self.fp16:
            self.precision = "bf16" if self.bf16 else "fp16"
        self.recipe_precision = self.precision  # as asked ("auto" unless given), for resolving on another machine
        self._apply_recipe(Environment.detect(self.use_cpu))
        # TrainingArguments.__post_init__ sets up the devices (and the process group under torchrun/accelerate).
        try:
            super().__post_init__()
        except ValueError as error:
            if "process group has not been initialized" not in str(error) or "WORLD_SIZE" in os.environ:
                raise
            # --ddp_backend makes accelerate ask torch for the process group, which only a launcher creates. Its
            # half-set state would make the next arguments built in this process skip device set-up: cleared.
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)
            raise ValueError(
                f"--ddp_backend {self.ddp_backend} needs a process group, which a launcher creates, but this process "
                "was not started by one (no WORLD_SIZE): start it with `torchrun --nproc_per_node N ...` or "
                "`accelerate launch --num_processes N ...` (on a machine without GPU also --use_cpu), or leave "
                "--ddp_backend out to train in one process."
            ) from error
        devices = max(1, self.world_size) * max(1, self.n_gpu if self.world_size <= 1 else 1)
        if devices != self.recipe_environment.world_size:  # e.g. DataParallel over several GPUs in one process
            self._apply_recipe(Environment(**{**vars(self.recipe_environment), "world_size": devices}), batch_only=True)
        self._check_trains()

    def _apply_recipe(self, env: Environment, batch_only: bool = False) -> None:
        """Fill every field left at None from `--recipe` for this machine (hf_deit.distillation.recipe.resolve)."""
        try:
            resolution = resolve(self.recipe_given, self.recipe, env, self.recipe_precision)
        except RecipeError as error:
            raise ValueError(str(error)) from None
        self.recipe_environment, self.recipe_notes = env, resolution.notes
        for name, value in resolution.values.items():
            if name == "precision":
                if not batch_only:
                    self.precision, self.bf16, self.fp16 = value, value == "bf16", value == "fp16"
            elif not batch_only or name in BATCH_FIELDS:
                setattr(self, name, value)
        for name, note in resolution.notes.items():
            logger.info("%s = %s (%s)", name, resolution.values.get(name), note)

    def _check_distillation(self) -> None:
        if self.distillation_type not in DISTILLATION_TYPES:
            raise ValueError(f"distillation_type={self.distillation_type!r}: use one of {DISTILLATION_TYPES}.")
        if not 0.0 <= self.distillation_alpha <= 1.0:
            raise ValueError(f"distillation_alpha={self.distillation_alpha} must be in [0, 1].")
        if self.distillation_tau <= 0:
            raise ValueError(f"distillation_tau={self.distillation_tau} must be > 0.")
        if self.distillation_kl_reduction not in KL_REDUCTIONS:
            raise ValueError(f"distillation_kl_reduction={self.distillation_kl_reduction!r}: use one of {KL_REDUCTIONS}.")
        if not 0.0 <= self.label_smoothing_factor < 1.0:
            raise ValueError(f"label_smoothing_factor={self.label_smoothing_factor} must be in [0, 1).")
        if self.model_ema_decay is not None and not 0.0 <= self.model_ema_decay < 1.0:
            raise ValueError(f"model_ema_decay={self.model_ema_decay} must be in [0, 1) (0 = no EMA).")
        for name in ("warmup_epochs", "warmup_lr", "min_lr"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0.")
        if self.base_learning_rate is not None and self.base_learning_rate <= 0:
            raise ValueError(f"base_learning_rate={self.base_learning_rate} must be > 0.")
        if self.sdpa_backend is not None and self.sdpa_backend not in SDPA_BACKENDS:
            raise ValueError(f"sdpa_backend={self.sdpa_backend!r}: use one of {sorted(SDPA_BACKENDS)} or leave it unset.")
        if self.teacher_name_or_path is None and not self.teacher_cache:
            self.teacher_name_or_path = DEFAULT_TEACHER  # a cache needs no teacher (one named beside it is checked)
        if self.distillation_type != "none" and not (self.teacher_name_or_path or self.teacher_cache):
            logger.info("No teacher_name_or_path: DistillationTrainer must then be given a teacher module.")

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
                f"learning_rate={self.learning_rate} trains nothing: give a positive --learning_rate, or leave it "
                "unset to use base_learning_rate x global_batch / 512."
            )

    @property
    def global_train_batch_size(self) -> int:
        """Images per optimizer step over all processes."""
        return global_batch(self)

    @property
    def use_model_ema(self) -> bool:
        return bool(self.model_ema_decay)


__all__ = ["DeiTTrainingArguments", "StudentArguments", "LR_REFERENCE_BATCH", "global_batch"]

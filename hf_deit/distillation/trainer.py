"""DistillationTrainer: transformers' Trainer for DeiT. It routes; `DistillationLoss` computes.

    trainer = DistillationTrainer(model=build_student(student_args, data_args, labels),
                                  args=DeiTTrainingArguments(output_dir="out", teacher_name_or_path="resnet50"),
                                  data_args=data_args, train_dataset=train, eval_dataset=val)
    trainer.train(); trainer.evaluate()   # -> eval_loss, eval_{fused,cls,distillation}_top{1,5}

What it adds to the Trainer, each in one method below:
  * compute_loss: Mixup/CutMix + label smoothing (from args), student forward, frozen teacher forward (same batch,
    own normalisation, training autocast), DistillationLoss; NaN/inf stops the run naming the step and the parts;
    parts are logged (`log`).
  * the teacher (`self.teacher`) is held outside the model: never DDP-wrapped, saved or optimised.
  * optimizer groups: no weight decay on norms, biases, position embeddings and tokens; warmup in epochs.
  * the paper's epoch (hf_deit.data.epoch): repeated augmentation (timm RepeatAugSampler) for map-style data, in a
    global order that accelerate's own batch sharding hands out rank by rank (hf_deit.data.RepeatAugBatchOrder); a
    stream of known size cut into epochs of the same length (hf_deit.data.EpochLoader).
  * per-head top-1/top-5 evaluation, optional EMA weights (timm ModelEmaV3) evaluated alongside.
  * exact resume for streaming data past the first pass (the Trainer alone restarts the stream), EMA weights and
    finite-weight checks around checkpoints (callbacks), checkpoint keys checked before loading (train).
  * an output folder that is this run's (hf_deit.distillation.run_folder, from train): locked, another run's outputs
    refused, checkpoints marked complete with the run id, write errors that name the file.

Private Trainer methods still overridden (each says which transformers behaviour it replaces;
tests/test_trainer_hooks.py fails when transformers changes them): `_get_dataloader` (seeded augmentation of
map-style training data) and `_init_training_state` (where a stream's resumed pass starts).
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Callable

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.optimization import get_scheduler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy, has_length

from ..data.arguments import DataArguments
from ..data.collate import DeiTCollator, build_mixup, mix_batch
from ..data.device_augment import ENCODED_IMAGES, build_device_augment
from ..data.device_finish import build_device_finish
from ..data.epoch import EpochLoader, batches_per_epoch, stream_size
from ..models.configuration_deit import DeiTConfig
from ..models.image_processing import image_processor_for
from ..models.modeling_deit import DeiTForImageClassification
from .arguments import DeiTTrainingArguments
from . import run_folder
from .checkpoints import (
    EMA_WEIGHTS_NAME, STREAM_STATE_NAME, check_checkpoint, check_checkpoint_keys, read_stream_state,
)
from .fast_paths import prepare_teacher, run_teacher, sdpa_context
from .losses import DistillationLoss
from .recipe import NO_WEIGHT_DECAY
from .schedule import DeiTSchedule, deit_scheduler
from .metrics import compute_topk_metrics, topk_predictions
from .storage import parameter_bytes, write_errors_named
from .student import prepare_student
from .teacher import FrozenTeacher, load_teacher
from .teacher_cache import CachedTeacher, LambdaRecordingMixup, MixRecord, StaleTeacherCacheError, check_cache_teacher

logger = logging.getLogger(__name__)



class _EmaCallback(TrainerCallback):
    """Updates the EMA weights after every optimizer step (timm's ModelEmaV3, step-aware)."""

    def __init__(self, trainer: DistillationTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.model_ema.update(self.trainer.model, step=state.global_step)


class _CheckpointCallback(TrainerCallback):
    """Around each checkpoint: the weights are checked finite before transformers writes it (a NaN checkpoint would
    also become the one `True` resumes from), and the EMA weights and a stream's position are written into it. The
    position (which pass over the data, how many of its batches) is tracked from epoch to epoch here."""

    def __init__(self, trainer: DistillationTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        if trainer._first_epoch is not None:  # where _init_training_state said this run starts (or resumes)
            (trainer._epoch, trainer._batches_in_epoch), trainer._first_epoch = trainer._first_epoch, None
        else:
            trainer._epoch, trainer._batches_in_epoch = trainer._epoch + 1, 0

    def on_step_end(self, args, state, control, **kwargs):
        # Runs after DefaultFlowCallback decided on saving, before the Trainer saves.
        if control.should_save:
            self.trainer.check_finite_weights(f"checkpoint-{state.global_step} was")

    on_epoch_end = on_step_end  # save_strategy="epoch" decides here

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            self.trainer.save_extra_state(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))


def _checked_arguments(model: nn.Module | None, args: TrainingArguments | None, eval_dataset) -> DeiTTrainingArguments:
    """The trainer's arguments (DeiT's defaults when None), refused when they or the model cannot be trained here."""
    if args is None:
        args = DeiTTrainingArguments(output_dir="tmp_trainer")
    if not isinstance(args, DeiTTrainingArguments):
        raise TypeError(
            f"DistillationTrainer needs DeiTTrainingArguments, got {type(args).__name__}: build the arguments with "
            "hf_deit.DeiTTrainingArguments (it adds the distillation fields and DeiT's defaults)."
        )
    if model is None:
        raise ValueError("DistillationTrainer needs a model: e.g. build_student(student_args, data_args, labels).")
    if getattr(model.config, "problem_type", None) in ("regression", "multi_label_classification"):
        raise ValueError(
            f"DistillationTrainer trains single-label classifiers; this model has problem_type="
            f"{model.config.problem_type!r}. Train it with transformers.Trainer: the model's own loss follows "
            "problem_type (docs/method.md)."
        )
    if args.ddp_find_unused_parameters is None and isinstance(model, DeiTForImageClassification):
        # Every parameter of a DeiT student takes part in every loss (both heads; drop path scales branches
        # instead of skipping them), so DDP need not search for unused ones: with the Trainer's default (search)
        # every rank warns that it found none, and pays a graph traversal each step.
        args.ddp_find_unused_parameters = False
    if eval_dataset is None and args.eval_strategy != IntervalStrategy.NO:
        # The recipe evaluates after every epoch; without evaluation data there is nothing to evaluate.
        logger.info("No eval_dataset: eval_strategy %s -> no.", args.eval_strategy)
        args.eval_strategy, args.do_eval = IntervalStrategy.NO, False
    return args


def _stream_epoch_batches(dataset: Any, args: TrainingArguments, data_args: DataArguments | None) -> int | None:
    """Batches per process in an epoch of a training stream of known size (hf_deit.data.stream_size): the paper's
    epoch (hf_deit.data.batches_per_epoch). None for map-style data and for streams of unknown size."""
    if not isinstance(dataset, torch.utils.data.IterableDataset) or stream_size(dataset) is None:
        return None
    size, repeats = stream_size(dataset), data_args.repeated_aug if data_args is not None else 1
    batches = batches_per_epoch(size, args.world_size, args.train_batch_size, repeats)
    if batches < 1:
        raise ValueError(
            f"An epoch of the {size}-example training stream gives each of the {args.world_size} process(es) fewer "
            f"samples than one batch of {args.train_batch_size}: lower the per-device batch size."
        )
    return batches


def _stream_max_steps(dataset: Any, args: TrainingArguments, data_args: DataArguments | None) -> None:
    """--num_train_epochs on a stream of known size: resolved into --max_steps here, with the Trainer's own formula,
    because transformers refuses a train_dataset without __len__ and no max_steps before it sees the loader."""
    if not isinstance(dataset, torch.utils.data.IterableDataset) or args.max_steps > 0:
        return
    batches = _stream_epoch_batches(dataset, args, data_args)
    if batches is None:
        raise ValueError(
            "The training stream's size is unknown, so it has no epoch to count --num_train_epochs in: pass "
            "--train_dataset_size N (its number of examples; an epoch is then the paper's, docs/data.md) or --max_steps."
        )
    accumulation = args.gradient_accumulation_steps
    steps_per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    args.max_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
    logger.info(
        "Training stream of %d examples: %d steps per epoch on each of %d process(es); --num_train_epochs %s is "
        "--max_steps %d.",
        stream_size(dataset), steps_per_epoch, args.world_size, args.num_train_epochs, args.max_steps,
    )


def _check_preprocessing(config: Any, data_args: DataArguments) -> None:
    """The image processor saved with the model is built from its config; warn when that config would preprocess
    otherwise than the evaluation transform of `data_args` (which owns it; `build_student` copies it over)."""
    ours = (getattr(config, "image_size", None), getattr(config, "crop_pct", None))
    theirs = (data_args.image_size, data_args.eval_crop_pct)
    if isinstance(config, DeiTConfig) and ours != theirs:
        logger.warning(
            "The student's config has image_size, crop_pct = %s but the data arguments evaluate at %s: the saved "
            "image processor will preprocess otherwise than evaluation did. Build the student with "
            "hf_deit.build_student(student_args, data_args, labels).", ours, theirs,
        )


class DistillationTrainer(Trainer):
    """`transformers.Trainer` that distils a DeiT student from a frozen teacher (Touvron et al. 2021).

    Args (besides the Trainer's):
        teacher: None (load `args.teacher_cache` if set, else `args.teacher_name_or_path`), an `nn.Module`, a
            `FrozenTeacher` from `load_teacher`, or a `CachedTeacher` (hf_deit.distillation.teacher_cache: the teacher's stored
            dense label maps, pooled over each crop). Unused with `args.distillation_type == "none"`.
        data_args: `hf_deit.data.DataArguments`; gives repeated augmentation, the device-side finishing of uint8
            batches and, unless a collator is passed, `DeiTCollator` (stacks; Mixup/CutMix and label smoothing
            come from `args` and are applied in the training step).

    `processing_class` defaults to the student's image processor (so saved directories work with `pipeline`),
    `compute_metrics` to per-head top-1/top-5 and `preprocess_logits_for_metrics` to a per-batch top-5 reduction.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: DeiTTrainingArguments | None = None,
        teacher: nn.Module | str | None = None,
        data_args: DataArguments | None = None,
        data_collator: Callable | None = None,
        processing_class: Any = None,
        compute_metrics: Callable | None = None,
        preprocess_logits_for_metrics: Callable | None = None,
        **kwargs: Any,
    ) -> None:
        args = _checked_arguments(model, args, kwargs.get("eval_dataset"))
        _stream_max_steps(kwargs.get("train_dataset"), args, data_args)
        if data_args is not None:
            data_collator = data_collator or DeiTCollator()
            _check_preprocessing(model.config, data_args)
        if processing_class is None and isinstance(model.config, DeiTConfig):
            processing_class = image_processor_for(model.config)
        if compute_metrics is None:
            compute_metrics = compute_topk_metrics
            preprocess_logits_for_metrics = preprocess_logits_for_metrics or topk_predictions
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            **kwargs,
        )
        # The model's forward takes **kwargs, which would make the Trainer believe our loss is already normalised
        # over the accumulated batch; it is a per-batch mean, so the Trainer must divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self.data_args = data_args
        self.loss_fn = DistillationLoss(
            args.distillation_type, args.distillation_alpha, args.distillation_tau, args.label_smoothing_factor,
            kl_reduction=args.distillation_kl_reduction,
        )
        self.teacher_source: str | None = None  # what the teacher was loaded from, for the model card
        self.teacher = self._resolve_teacher(teacher)
        self.mixup = build_mixup(args, model.config.num_labels, args.label_smoothing_factor)
        if isinstance(self.teacher, CachedTeacher) and self.mixup is not None:
            self.mixup = LambdaRecordingMixup.wrap(self.mixup)  # cached logits are mixed with the images' lambda
        self.device_finish = build_device_finish(data_args)  # used on uint8 batches only (--uint8_batches)
        self.device_augment = build_device_augment(data_args)  # used on encoded batches only (--device_augment)
        self.model_ema = None
        if args.use_model_ema:
            from timm.utils import ModelEmaV3

            self.model_ema = ModelEmaV3(self.model, decay=args.model_ema_decay)
            self.add_callback(_EmaCallback(self))
        self.add_callback(_CheckpointCallback(self))
        self._loss_sums, self._loss_batches = {}, 0  # loss parts summed on the device until the next log
        self._epoch = 0  # the Trainer's epoch (= pass over a stream) and batches consumed in it, for resume
        self._batches_in_epoch = 0
        self._first_epoch: tuple[int, int] | None = None  # (epoch, batches) the next train() starts at
        self._steps_per_epoch: int | None = None
        self._built_lr_scheduler = False
        self.run_claim: run_folder.RunClaim | None = None  # this run's hold on output_dir, while train() runs

    # --- set-up -------------------------------------------------------------------------------------------------
    def _resolve_teacher(self, teacher: nn.Module | str | None) -> FrozenTeacher | CachedTeacher | None:
        if self.args.distillation_type == "none":
            if teacher is not None:
                logger.warning("distillation_type='none': the teacher passed to DistillationTrainer is not used.")
            return None
        if isinstance(teacher, CachedTeacher) or (teacher is None and self.args.teacher_cache):
            return self._load_teacher_cache(teacher)
        spec = teacher if teacher is not None else self.args.teacher_name_or_path
        # What was really loaded, for the model card: the args name the default teacher even when a module is passed.
        self.teacher_source = spec if isinstance(spec, str) else getattr(
            getattr(spec, "config", None), "_name_or_path", None
        ) or type(spec).__name__
        if spec is None:
            raise ValueError(
                f"distillation_type={self.args.distillation_type!r} needs a teacher: pass teacher= to "
                "DistillationTrainer or --teacher_name_or_path, or use --distillation_type none."
            )
        processor = self.processing_class
        # Checked here, before any step: load_teacher raises TeacherMismatchError on a class-count mismatch.
        teacher = load_teacher(
            spec,
            num_labels=self.model.config.num_labels,
            device=self.args.device,
            checkpoint_path=self.args.teacher_checkpoint_path,
            student_mean=getattr(processor, "image_mean", None) or IMAGENET_DEFAULT_MEAN,
            student_std=getattr(processor, "image_std", None) or IMAGENET_DEFAULT_STD,
            # finetune recipe: the teacher sees the student's crops at the student's resolution (the paper's 384)
            input_size=self.model.config.image_size if self.args.teacher_at_student_resolution else None,
        )
        return prepare_teacher(
            teacher,
            channels_last=self.args.teacher_channels_last,
            compile=self.args.teacher_torch_compile,
            compile_backend=self.args.torch_compile_backend,
            compile_mode=self.args.torch_compile_mode,
        )

    def _load_teacher_cache(self, cache: CachedTeacher | None) -> CachedTeacher:
        """The cached teacher, checked against the student's classes and every training row before any step."""
        if cache is None:
            cache = CachedTeacher.load(self.args.teacher_cache, num_labels=self.model.config.num_labels)
            if self.args.teacher_name_or_path:  # named beside the cache: it must be the teacher the cache was made by
                check_cache_teacher(cache.info, self.args.teacher_cache, self.args.teacher_name_or_path,
                                    self.args.teacher_checkpoint_path)  # fmt: skip
        elif cache.num_labels != self.model.config.num_labels:
            raise StaleTeacherCacheError(
                f"The teacher cache predicts {cache.num_labels} classes but the student has {self.model.config.num_labels}."
            )
        if self.train_dataset is not None and self.args.teacher_cache:  # a cache built in memory has no row keys
            cache.check_dataset(self.train_dataset, self.args.teacher_cache)
        # The teacher the cache was made from (the card names it; the cache file's path is the training machine's).
        self.teacher_source = cache.info.teacher
        return cache.to(self.args.device)

    # --- loss -------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "labels" not in inputs:
            raise KeyError(f"DistillationTrainer needs 'labels' in each batch; got keys {sorted(inputs)}.")
        if ENCODED_IMAGES in inputs:  # --device_augment: decode + augment here, on the device
            inputs = self.device_augment(inputs)
        labels = inputs["labels"]
        pixel_values = inputs["pixel_values"]
        if pixel_values.dtype == torch.uint8:  # --uint8_batches: normalise (+ erase in training) here, on the device
            pixel_values = self.device_finish(pixel_values, train=model.training)
        mix = None
        if model.training and self.mixup is not None and not labels.is_floating_point():
            pixel_values, labels = self._mix(pixel_values, labels)
            if isinstance(self.mixup, LambdaRecordingMixup):
                mix = MixRecord(self.mixup.last_lam, len(labels) - len(labels) % 2)
        # No labels to the model: its own loss (CE on both heads) is replaced by the distillation loss.
        with sdpa_context(self.args.sdpa_backend):
            outputs = model(pixel_values=pixel_values)
        if not model.training:
            # Evaluation loss: CE of the fused prediction (what inference returns); no teacher at evaluation.
            logits = outputs.logits.float()
            loss = F.cross_entropy(logits, labels.float() if labels.is_floating_point() else labels)  # ids or soft targets
            return (loss, outputs) if return_outputs else loss

        teacher_logits = None
        if self.teacher is not None:
            # The student runs under accelerate's autocast (bf16/fp16) when mixed precision is on; running the
            # teacher under the same autocast gives it the same precision while its weights stay fp32.
            with self.accelerator.autocast():
                if isinstance(self.teacher, CachedTeacher):  # reads the batch's rows, crop boxes and the mix
                    teacher_logits = self.teacher.logits_for_batch(pixel_values, inputs, mix)
                else:
                    teacher_logits = run_teacher(self.teacher, pixel_values, self.args.teacher_inference_mode)
        parts = self.loss_fn(outputs, labels, teacher_logits)
        self._check_finite(parts)
        self._accumulate(parts)
        return (parts["loss"], outputs) if return_outputs else parts["loss"]

    def _mix(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup/CutMix (timm) with label smoothing -> soft targets (batch, classes).

        Mixing here rather than in the collator keeps its randomness (numpy's global RNG, which timm's Mixup
        draws from) in step with the training steps: the Trainer checkpoints that RNG, while a collator runs one
        batch ahead of the step (accelerate prefetches) or in worker processes, so a resumed run would mix its
        first batch differently. It also runs on the accelerator, as in timm's and the paper's training loops.
        timm's Mixup needs an even batch; an odd last image keeps its smoothed one-hot target.
        """
        # clone: Mixup works in place, and the caller's batch stays as it was
        return mix_batch(self.mixup, pixel_values.clone(), labels, self.mixup.num_classes, self.mixup.label_smoothing)

    def _check_finite(self, parts: dict[str, torch.Tensor | None]) -> None:
        if torch.isfinite(parts["loss"]).all():
            return
        values = ", ".join(f"{name}={float(value.detach()):.6g}" for name, value in parts.items() if value is not None)
        raise FloatingPointError(
            f"Non-finite loss at global step {self.state.global_step} (epoch {self.state.epoch}): {values}. Lower "
            "the learning rate or warm up longer, check the inputs for NaNs, or use --bf16 instead of --fp16."
        )

    def _accumulate(self, parts: dict[str, torch.Tensor | None]) -> None:
        # Sums stay on the device (no .item() sync per step) until the next training log.
        for name in ("base_loss", "distillation_loss"):
            if parts.get(name) is not None:
                self._loss_sums[name] = self._loss_sums.get(name, 0.0) + parts[name].float()
        self._loss_batches += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Training logs (those with "loss") get the running means of the loss parts since the previous log,
        # averaged over processes like the Trainer's own "loss".
        if "loss" in logs and self._loss_batches:
            for name, total in self._loss_sums.items():
                mean = self.accelerator.reduce(total / self._loss_batches, reduction="mean")
                logs[name] = round(float(mean), 6)
            self._loss_sums, self._loss_batches = {}, 0
        super().log(logs, start_time)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self._batches_in_epoch += 1
        return super().training_step(model, inputs, num_items_in_batch)

    # --- optimizer and schedule -------------------------------------------------------------------------------
    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """Weight decay on weight matrices and kernels only (timm / the paper's rule)."""
        return [
            name
            for name, param in model.named_parameters()
            if param.ndim > 1 and name.rsplit(".", 1)[-1] not in NO_WEIGHT_DECAY
        ]

    def set_initial_training_values(self, args, dataloader):
        # Public Trainer hook: it counts the optimizer steps per epoch (from the sampler's epoch, see
        # hf_deit.data), which the paper's per-epoch schedule needs; create_scheduler comes after it.
        values = super().set_initial_training_values(args, dataloader)
        self._steps_per_epoch = values[1] if has_length(dataloader) else None  # num_update_steps_per_epoch
        return values

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """The paper's schedule (hf_deit.distillation.schedule), or with --lr_schedule transformers,
        transformers' `get_scheduler(--lr_scheduler_type)` with --warmup_epochs (or --warmup_steps) of warmup."""
        if self.lr_scheduler is None:
            optimizer = optimizer or self.optimizer
            schedule = self.lr_schedule(num_training_steps)
            if self.args.lr_schedule == "transformers":
                self.lr_scheduler = get_scheduler(
                    self.args.lr_scheduler_type, optimizer=optimizer,
                    num_warmup_steps=min(num_training_steps, round(schedule.warmup_epochs * schedule.steps_per_epoch)),
                    num_training_steps=num_training_steps, scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
                )
            else:
                self.lr_scheduler = deit_scheduler(optimizer, schedule)
            self._built_lr_scheduler = True  # rebuilt by the next train() (its length may differ)
        return self.lr_scheduler

    def lr_schedule(self, num_training_steps: int) -> DeiTSchedule:
        """The paper's cosine in epochs of this run's data (a stream without a length: max_steps over
        num_train_epochs nominal epochs); --warmup_steps (transformers' field), when set, replaces warmup_epochs."""
        args = self.args
        steps_per_epoch = self._steps_per_epoch or num_training_steps / max(args.num_train_epochs, 1e-9)
        warmup_epochs = args.warmup_epochs
        if args.warmup_steps > 0:
            warmup_epochs = args.get_warmup_steps(num_training_steps) / steps_per_epoch
        granularity = "step" if args.lr_schedule == "transformers" else args.lr_schedule
        return DeiTSchedule(
            args.learning_rate, steps_per_epoch, num_training_steps / steps_per_epoch, warmup_epochs, args.warmup_lr,
            args.min_lr, granularity,
        )

    # --- data -------------------------------------------------------------------------------------------------
    def get_train_dataloader(self):
        return self._stream_epochs(super().get_train_dataloader())

    def _stream_epochs(self, dataloader):
        """A training stream of known size is cut into epochs of the paper's length (`_stream_epoch_batches`,
        hf_deit.data.EpochLoader), which gives the Trainer a length: it then counts epochs, warmup and the resume
        position itself. A stream of unknown size keeps the Trainer's handling (passes, --max_steps)."""
        batches = _stream_epoch_batches(self.train_dataset, self.args, self.data_args)
        return dataloader if batches is None else EpochLoader(dataloader, batches)

    def get_resumed_dataloader(self, dataloader, num_batches):
        # An epoch of a stream resumes by reading and dropping its first batches, as accelerate's skip_first_batches.
        if isinstance(dataloader, EpochLoader):
            return dataloader.skipping(num_batches)
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False, dataloader_key=None):
        # Private override (transformers' `Trainer._get_dataloader(dataset, description, batch_size, sampler_fn,
        # is_training, dataloader_key)`, which builds every loader and passes it to accelerator.prepare): it
        # replaces nothing of transformers' loader, only the dataset and sampler it is given: map-style training
        # data read with (epoch, position) keys, and the repeated-augmentation order. No public hook passes the
        # sampler's keys to the dataset. tests/test_trainer_hooks.py checks the signature and that the Trainer
        # still builds the training loader through it.
        if is_training and has_length(dataset) and not isinstance(dataset, torch.utils.data.IterableDataset):
            dataset, sampler_fn = self._seeded_training_data(dataset, sampler_fn)
        return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)

    def _training_sampler(self, dataset, sampler_fn):
        """Repeated augmentation (`data_args.repeated_aug` > 1): timm's RepeatAugSampler per rank, laid out in the
        global order that accelerate's batch sharding hands out rank by rank; else the Trainer's sampler."""
        from torch.utils.data import SequentialSampler

        repeats = self.data_args.repeated_aug if self.data_args is not None else 1
        if repeats > 1:
            from ..data import RepeatAugBatchOrder

            return RepeatAugBatchOrder(
                dataset, num_repeats=repeats, num_replicas=self.args.world_size,
                batch_size=self._train_batch_size, seed=self.args.seed,
            )
        return sampler_fn(dataset) if sampler_fn is not None else SequentialSampler(dataset)

    def _seeded_training_data(self, dataset, sampler_fn):
        """Map-style training data read with (epoch, position) keys, so that each image is augmented under its own
        seed: a resumed run skips the trained batches without loading them, and its images must still be augmented
        as in the uninterrupted run (see hf_deit/data/seeding.py)."""
        from accelerate.data_loader import SeedableRandomSampler
        from torch.utils.data import RandomSampler

        from ..data.seeding import PositionalSampler, SeededAugmentation

        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed

        def positional_sampler(wrapped: SeededAugmentation) -> PositionalSampler:
            sampler = self._training_sampler(wrapped.dataset, sampler_fn)
            if type(sampler) is RandomSampler:
                # accelerate swaps a plain RandomSampler for its epoch-seeded one, which it no longer sees inside
                # the wrapper: do the same here, or a resumed epoch would be shuffled differently.
                sampler = SeedableRandomSampler(
                    data_source=sampler.data_source, replacement=sampler.replacement,
                    num_samples=sampler._num_samples, generator=sampler.generator, data_seed=seed,
                )
            return PositionalSampler(sampler)

        return SeededAugmentation(dataset, seed=seed, rank=self.args.process_index), positional_sampler

    # --- checkpoints and exact resume -------------------------------------------------------------------------
    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial):
        # Private override (transformers' `Trainer._init_training_state`, which returns (epochs_trained,
        # steps_trained_in_current_epoch) computed from global_step and the epoch length): a stream of unknown size
        # has no length, so the Trainer counts every step as epoch 0 and would replay the whole run from a fresh
        # first pass. Our checkpoint says which pass it was in and how far: resume there. No public hook sets where
        # training starts.
        epochs, batches = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        # A stream cut into epochs (_stream_epochs) has a length: the Trainer's own count is right for it.
        uncounted = self._steps_per_epoch is None
        if resume_from_checkpoint is not None and uncounted and not self.args.ignore_data_skip:
            position = read_stream_state(resume_from_checkpoint)  # checked: a garbage file is named
            if position is not None:
                epochs, batches = position
            else:
                logger.warning("%s has no %s: the stream restarts from its first pass.", resume_from_checkpoint, STREAM_STATE_NAME)
        self._first_epoch = (epochs, batches)  # the first on_epoch_begin of this run starts there
        return epochs, batches

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train` in an output_dir that is this run's (hf_deit.distillation.run_folder: locked, another run's
        outputs refused unless resuming or --overwrite_output_dir, room for a checkpoint, checkpoints marked complete
        with the run id), with `resume_from_checkpoint` also taking "True"/"False" as a command line gives them (True:
        the newest complete checkpoint of this folder's run), and a checkpoint checked before anything is loaded
        (hf_deit.distillation.checkpoints: a missing optimizer/scheduler state, a corrupt or non-finite file or
        weights that do not match the model stop the run; a missing RNG state warns that the resume is no longer
        exact). The checkpoint's EMA weights are loaded here too. A failed write names the file and the cause."""
        if self._built_lr_scheduler:  # ours is built for one run's length (transformers resets its own likewise)
            self.lr_scheduler, self._built_lr_scheduler = None, False
        claim = run_folder.claim_output_dir(self.args, resume_from_checkpoint, parameter_bytes(self.model))
        self.run_claim = claim
        run_folder.attach(self)
        with run_folder.training(self, claim):
            checkpoint = claim.checkpoint
            # DeepSpeed and FSDP write their optimizer state and weights in their own layouts, which they check.
            if checkpoint is not None and not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
                check_checkpoint(checkpoint, self.args.process_index, self.args.world_size)
                check_checkpoint_keys(checkpoint, self.model)
            if checkpoint is not None:
                self._load_ema(checkpoint)
            return super().train(
                resume_from_checkpoint=checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs
            )

    def _load_ema(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, EMA_WEIGHTS_NAME)
        if self.model_ema is not None and os.path.isfile(path):
            from safetensors.torch import load_file

            self.model_ema.module.load_state_dict(load_file(path, device=str(self.args.device)))

    def check_finite_weights(self, what: str) -> None:
        """A checkpoint or final model with NaN/inf weights is worse than none: stop before writing it."""
        for name, param in self.model.named_parameters():
            if not torch.isfinite(param).all():
                raise FloatingPointError(
                    f"Non-finite values in {name} after global step {self.state.global_step}: {what} not saved. The "
                    "last step diverged (its loss was still finite): lower the learning rate, warm up longer or "
                    "clip gradients (--max_grad_norm 1.0), and resume from the last checkpoint."
                )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # transformers saves whatever the weights hold; a diverged step would be published as the result.
        self.check_finite_weights("the model was")
        if _internal_call:  # a checkpoint: train() names a failed write and removes the incomplete folder
            return super().save_model(output_dir, _internal_call)
        with write_errors_named(output_dir or self.args.output_dir, parameter_bytes(self.model), "the model"):
            super().save_model(output_dir, _internal_call)
            if self.args.should_save:  # the final model: its EMA weights are kept beside it
                self._save_ema(output_dir or self.args.output_dir)

    def save_extra_state(self, checkpoint_dir: str) -> None:
        """What a checkpoint needs besides transformers' files: a stream's position and the EMA weights."""
        if not has_length(self.train_dataset):
            with open(os.path.join(checkpoint_dir, STREAM_STATE_NAME), "w") as f:
                json.dump({"epoch": self._epoch, "batches_in_epoch": self._batches_in_epoch}, f)
        self._save_ema(checkpoint_dir)

    def _save_ema(self, directory: str) -> None:
        if self.model_ema is not None:
            from safetensors.torch import save_file

            state = {k: v.contiguous() for k, v in self.model_ema.module.state_dict().items()}
            save_file(state, os.path.join(directory, EMA_WEIGHTS_NAME))

    # --- evaluation and publishing ----------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Metrics of the model (`eval_loss`, `eval_{fused,cls,distillation}_top{1,5}`) and, with EMA on, of the
        EMA weights too (`eval_ema_*`)."""
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.model_ema is not None:
            model, wrapped = self.model, self.model_wrapped
            self.model = self.model_wrapped = self.model_ema.module
            try:
                metrics.update(super().evaluate(eval_dataset, ignore_keys, f"{metric_key_prefix}_ema"))
            finally:
                self.model, self.model_wrapped = model, wrapped
        return metrics

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # The config tells plain Trainers to collect only the fused logits (keys_to_ignore_at_inference); per-head
        # metrics need the two heads too, in the order of metrics.HEADS.
        if ignore_keys is None:
            ignore_keys = ["hidden_states", "attentions"]
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def create_model_card(self, **kwargs: Any) -> None:
        """README.md (+ training_curves.png): the run's facts (hf_deit.distillation.card_facts) rendered by
        hf_deit.hub.model_card's template."""
        if not self.is_world_process_zero():
            return
        from .card_facts import model_card_from_trainer

        card = model_card_from_trainer(self, self.data_args, self.teacher_source)
        card.save(os.path.join(self.args.output_dir, "README.md"))


__all__ = ["DistillationTrainer", "prepare_student", "NO_WEIGHT_DECAY"]  # prepare_student: hf_deit.distillation.student

"""DistillationTrainer: transformers' Trainer for DeiT. It routes; `DistillationLoss` computes.

    trainer = DistillationTrainer(model=prepare_student("deit_tiny_distilled_patch16_224", num_labels=10),
                                  args=DeiTTrainingArguments(output_dir="out", teacher_name_or_path="resnet50"),
                                  data_args=data_args, train_dataset=train, eval_dataset=val)
    trainer.train(); trainer.evaluate()   # -> eval_loss, eval_{fused,cls,distillation}_top{1,5}

What it adds to the Trainer, each in one method below:
  * compute_loss: student forward, frozen teacher forward (same batch, own normalisation, training autocast),
    DistillationLoss; NaN/inf stops the run naming the step and the parts; parts are logged (`log`).
  * the teacher (`self.teacher`) is held outside the model: never DDP-wrapped, saved or optimised.
  * optimizer groups: no weight decay on norms, biases, position embeddings and tokens; warmup in epochs.
  * repeated augmentation (timm RepeatAugSampler) for map-style data; separate eval collator (no Mixup).
  * per-head top-1/top-5 evaluation, optional EMA weights (timm ModelEmaV3) evaluated alongside.
  * exact resume for streaming data past the first pass (the Trainer alone restarts the stream).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.optimization import get_scheduler
from transformers.trainer_utils import has_length

from .checkpoints import check_checkpoint, resolve_resume_checkpoint
from ..models.configuration_deit import PRESETS, DeiTConfig
from ..models.image_processing import image_processor_for
from .losses import DistillationLoss
from .metrics import compute_topk_metrics, topk_predictions
from ..data.collate import mix_batch
from ..data.device_finish import build_device_finish
from .fast_paths import prepare_teacher, run_teacher, sdpa_context
from ..models.modeling_deit import DeiTForImageClassification
from .teacher import FrozenTeacher, load_teacher
from .teacher_cache import CachedTeacher, LambdaRecordingMixup, MixRecord, StaleTeacherCacheError
from .arguments import DeiTTrainingArguments

logger = logging.getLogger(__name__)

# Parameters without weight decay besides norms and biases (ndim <= 1), as in the paper's code and timm.
NO_WEIGHT_DECAY = ("position_embeddings", "cls_token", "distillation_token")
STREAM_STATE_NAME = "stream_state.json"  # written next to each checkpoint for streaming datasets
EMA_WEIGHTS_NAME = "model_ema.safetensors"


def prepare_student(
    name_or_path: str = "deit_tiny_distilled_patch16_224",
    *,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    image_size: int | None = None,
    drop_path_rate: float = 0.1,
    **config_overrides: Any,
) -> DeiTForImageClassification:
    """The student: a fresh model from a DeiT preset, or a checkpoint (hf_deit directory or Hub id) to fine-tune.

    `num_labels`/`id2label`: the label set; a checkpoint trained on another one gets freshly initialised heads.
    `image_size`: fine-tune at a new resolution (e.g. 224 -> 384 as the paper); the position embeddings are
        resized bicubically once here, like timm's `resample_abs_pos_embed`.
    `drop_path_rate`: stochastic depth of the student (the paper: 0.1; fine-tuning at 384 also uses 0.1).
    """
    labels = {"id2label": id2label} if id2label is not None else {}
    if num_labels is not None and not labels:
        labels = {"num_labels": num_labels}
    if name_or_path in PRESETS:
        config = DeiTConfig.from_preset(name_or_path, drop_path_rate=drop_path_rate, **labels, **config_overrides)
        model = DeiTForImageClassification(config)
    else:
        model = DeiTForImageClassification.from_pretrained(
            name_or_path, drop_path_rate=drop_path_rate, ignore_mismatched_sizes=bool(labels), **labels, **config_overrides
        )
    if image_size is not None and image_size != model.config.image_size:
        model.resize_position_embeddings(image_size)
    return model


class _EmaCallback(TrainerCallback):
    """Updates the EMA weights after every optimizer step (timm's ModelEmaV3, step-aware)."""

    def __init__(self, trainer: DistillationTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.model_ema.update(self.trainer.model, step=state.global_step)


class DistillationTrainer(Trainer):
    """`transformers.Trainer` that distils a DeiT student from a frozen teacher (Touvron et al. 2021).

    Args (besides the Trainer's):
        teacher: None (load `args.teacher_cache` if set, else `args.teacher_name_or_path`), an `nn.Module`, a
            `FrozenTeacher` from `load_teacher`, or a `CachedTeacher` (hf_deit.distillation.teacher_cache: the teacher's stored
            dense label maps, pooled over each crop). Unused with `args.distillation_type == "none"`.
        data_args: `hf_deit.data.DataArguments`; gives label smoothing, repeated augmentation and, unless
            collators are passed, the train (Mixup/CutMix) and eval collators.
        eval_data_collator: collator for evaluation/prediction (default: the training one when no data_args).

    `processing_class` defaults to the student's image processor (so saved directories work with `pipeline`),
    `compute_metrics` to per-head top-1/top-5 and `preprocess_logits_for_metrics` to a per-batch top-5 reduction.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: DeiTTrainingArguments | None = None,
        teacher: nn.Module | str | None = None,
        data_args: Any = None,
        data_collator: Any = None,
        eval_data_collator: Any = None,
        processing_class: Any = None,
        compute_metrics: Any = None,
        preprocess_logits_for_metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = DeiTTrainingArguments(output_dir="tmp_trainer")
        if not isinstance(args, DeiTTrainingArguments):
            raise TypeError(
                f"DistillationTrainer needs DeiTTrainingArguments, got {type(args).__name__}: build the arguments with "
                "hf_deit.DeiTTrainingArguments (it adds the distillation fields and DeiT's defaults)."
            )
        if model is None:
            raise ValueError("DistillationTrainer needs a model: e.g. prepare_student(args.student_preset, num_labels=...).")
        num_labels = model.config.num_labels
        if getattr(model.config, "problem_type", None) in ("regression", "multi_label_classification"):
            raise ValueError(
                f"DistillationTrainer trains single-label classifiers; this model has problem_type="
                f"{model.config.problem_type!r}. Train it with transformers.Trainer: the model's own loss follows "
                "problem_type (docs/method.md)."
            )
        mixup = None
        if data_args is not None:
            from ..data import build_collator, build_mixup

            # Batches are stacked with integer labels and mixed on the device in compute_loss (see _mix); a
            # collator that already gives soft labels (batch, classes) is left alone.
            data_collator = data_collator or build_collator(data_args, num_classes=num_labels, train=False)
            mixup = build_mixup(data_args, num_labels)
            eval_data_collator = eval_data_collator or build_collator(data_args, num_classes=num_labels, train=False)
        if args.ddp_find_unused_parameters is None and isinstance(model, DeiTForImageClassification):
            # Every parameter of a DeiT student takes part in every loss (both heads; drop path scales branches
            # instead of skipping them), so DDP need not search for unused ones: with the Trainer's default (search)
            # every rank warns that it found none, and pays a graph traversal each step.
            args.ddp_find_unused_parameters = False
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
        self.eval_data_collator = eval_data_collator
        self.mixup = mixup
        self.loss_fn = DistillationLoss(
            args.distillation_type, args.distillation_alpha, args.distillation_tau, self._label_smoothing()
        )
        self.teacher = self._resolve_teacher(teacher)
        if isinstance(self.teacher, CachedTeacher) and self.mixup is not None:
            self.mixup = LambdaRecordingMixup.wrap(self.mixup)  # cached logits are mixed with the images' lambda
        self.device_finish = build_device_finish(data_args)  # used on uint8 batches only (--uint8_batches)
        self.model_ema = None
        if args.use_model_ema:
            from timm.utils import ModelEmaV3

            self.model_ema = ModelEmaV3(self.model, decay=args.model_ema_decay)
            self.add_callback(_EmaCallback(self))
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_batches = 0
        self._epoch = 0  # the Trainer's epoch (= pass over a stream) and batches consumed in it, for resume
        self._batches_in_epoch = 0
        self._steps_per_epoch: int | None = None

    # --- set-up -----------------------------------------------------------------------------------------------
    def _label_smoothing(self) -> float:
        """Smoothing for integer labels: the data arguments own it; TrainingArguments' factor when there are none."""
        factor = self.args.label_smoothing_factor
        if self.data_args is None:
            return factor
        if factor and factor != self.data_args.label_smoothing:
            raise ValueError(
                f"label_smoothing_factor={factor} (training arguments) and label_smoothing="
                f"{self.data_args.label_smoothing} (data arguments) disagree: set --label_smoothing only."
            )
        return self.data_args.label_smoothing

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
        elif cache.num_labels != self.model.config.num_labels:
            raise StaleTeacherCacheError(
                f"The teacher cache predicts {cache.num_labels} classes but the student has {self.model.config.num_labels}."
            )
        if self.train_dataset is not None and self.args.teacher_cache:  # a cache built in memory has no row keys
            cache.check_dataset(self.train_dataset, self.args.teacher_cache)
        self.teacher_source = f"{cache.info.teacher} (cached: {self.args.teacher_cache or 'in memory'})"
        return cache.to(self.args.device)

    # --- loss -------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "labels" not in inputs:
            raise KeyError(f"DistillationTrainer needs 'labels' in each batch; got keys {sorted(inputs)}.")
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
        values = super().set_initial_training_values(args, dataloader)
        self._steps_per_epoch = values[1] if has_length(dataloader) else None
        return values

    def warmup_steps(self, num_training_steps: int) -> int:
        """`warmup_steps` when set, else `warmup_epochs` in optimizer steps."""
        if self.args.warmup_steps > 0 or self.args.warmup_epochs == 0:
            return self.args.get_warmup_steps(num_training_steps)
        if self._steps_per_epoch is not None:
            steps_per_epoch = self._steps_per_epoch
        else:  # a stream has no length: the run's nominal epochs give its length in steps
            steps_per_epoch = num_training_steps / max(self.args.num_train_epochs, 1e-9)
        return min(num_training_steps, round(self.args.warmup_epochs * steps_per_epoch))

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            self.lr_scheduler = get_scheduler(
                self.args.lr_scheduler_type,
                optimizer=optimizer or self.optimizer,
                num_warmup_steps=self.warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # --- data -------------------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        repeats = getattr(self.data_args, "repeated_aug", 1)
        if repeats > 1 and dataset is not None and has_length(dataset):
            from ..data import repeat_aug_sampler

            return repeat_aug_sampler(
                dataset,
                num_repeats=repeats,
                num_replicas=self.args.world_size,
                rank=self.args.process_index,
                seed=self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self):
        dataloader = super().get_train_dataloader()
        # RepeatAugSampler already gives each rank its own indices; accelerate's BatchSamplerShard would split
        # them again (each rank would see 1/world of its share): make that wrapper a pass-through.
        shard = getattr(dataloader, "batch_sampler", None)
        inner = getattr(getattr(shard, "batch_sampler", None), "sampler", None)
        inner = getattr(inner, "sampler", inner)  # inside the PositionalSampler
        if self.args.world_size > 1 and hasattr(shard, "num_processes") and hasattr(inner, "num_repeats"):
            shard.num_processes, shard.process_index = 1, 0
        return dataloader

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False, dataloader_key=None):
        if is_training and has_length(dataset) and not isinstance(dataset, torch.utils.data.IterableDataset):
            # Replaces nothing of transformers' loader: only the dataset and sampler it is given (see below).
            dataset, sampler_fn = self._seeded_training_data(dataset, sampler_fn)
        if is_training or self.eval_data_collator is None:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        # Evaluation batches must not be mixed: swap in the eval collator while this dataloader is built.
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        finally:
            self.data_collator = train_collator

    def _seeded_training_data(self, dataset, sampler_fn):
        """Map-style training data read with (epoch, position) keys, so that each image is augmented under its own
        seed: a resumed run skips the trained batches without loading them, and its images must still be augmented
        as in the uninterrupted run (see hf_deit/data/seeding.py)."""
        from accelerate.data_loader import SeedableRandomSampler
        from torch.utils.data import RandomSampler, SequentialSampler

        from ..data.seeding import PositionalSampler, SeededAugmentation

        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed

        def positional_sampler(wrapped: SeededAugmentation) -> PositionalSampler:
            sampler = sampler_fn(wrapped.dataset) if sampler_fn is not None else SequentialSampler(wrapped.dataset)
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
    def _run_epoch(self, **kwargs):
        resuming_here = kwargs["resume_from_checkpoint"] is not None and kwargs["epoch"] == kwargs["epochs_trained"]
        self._epoch = kwargs["epoch"]
        self._batches_in_epoch = kwargs["steps_trained_in_current_epoch"] if resuming_here else 0
        return super()._run_epoch(**kwargs)

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial):
        epochs, batches = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        # A stream has no length, so the Trainer counts every step as epoch 0 and would replay the whole run from
        # a fresh first pass. Our checkpoint says which pass it was in and how far: resume there.
        if resume_from_checkpoint is not None and not has_length(self.train_dataset) and not self.args.ignore_data_skip:
            path = os.path.join(resume_from_checkpoint, STREAM_STATE_NAME)
            if os.path.isfile(path):
                with open(path) as f:
                    state = json.load(f)
                return state["epoch"], state["batches_in_epoch"]
            logger.warning("%s has no %s: the stream restarts from its first pass.", resume_from_checkpoint, STREAM_STATE_NAME)
        return epochs, batches

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train`, with `resume_from_checkpoint` also taking "True"/"False" as a command line gives them, and
        a checkpoint checked before anything is loaded (hf_deit.distillation.checkpoints: missing optimizer/scheduler state or a
        corrupt file stop the run; a missing RNG state warns that the resume is no longer exact)."""
        checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        # DeepSpeed and FSDP write their optimizer state in their own layouts, which they check themselves.
        if checkpoint is not None and not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            check_checkpoint(checkpoint, self.args.process_index, self.args.world_size)
        return super().train(
            resume_from_checkpoint=checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs
        )

    def _check_finite_weights(self, what: str) -> None:
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
        self._check_finite_weights("the model was")
        super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, model, trial):
        # Before transformers writes anything: a NaN checkpoint would also become the one `True` resumes from.
        self._check_finite_weights(f"checkpoint-{self.state.global_step} was")
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        output_dir = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        if not has_length(self.train_dataset):
            with open(os.path.join(output_dir, STREAM_STATE_NAME), "w") as f:
                json.dump({"epoch": self._epoch, "batches_in_epoch": self._batches_in_epoch}, f)
        if self.model_ema is not None:
            from safetensors.torch import save_file

            state = {k: v.contiguous() for k, v in self.model_ema.module.state_dict().items()}
            save_file(state, os.path.join(output_dir, EMA_WEIGHTS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, EMA_WEIGHTS_NAME)
        if self.model_ema is not None and os.path.isfile(path):
            from safetensors.torch import load_file

            self.model_ema.module.load_state_dict(load_file(path, device=str(self.args.device)))

    def _issue_warnings_after_load(self, load_result):
        # The Trainer only warns; a resumed run silently keeping initial weights is worse than stopping.
        if load_result.missing_keys or load_result.unexpected_keys:
            raise RuntimeError(
                f"The checkpoint does not match the model: missing keys {load_result.missing_keys}, unexpected keys "
                f"{load_result.unexpected_keys}. Resume with the same model class and configuration that saved it."
            )

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

        # teacher_source is set only when a teacher was resolved (not with distillation_type "none").
        card = model_card_from_trainer(self, self.data_args, getattr(self, "teacher_source", None))
        card.save(os.path.join(self.args.output_dir, "README.md"))


__all__ = ["DistillationTrainer", "prepare_student", "NO_WEIGHT_DECAY"]

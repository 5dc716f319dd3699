"""DistillationTrainer: transformers' Trainer for DeiT. It routes; `DistillationLoss` computes.

    trainer = DistillationTrainer(model=build_student(student_args, data_args, labels), args=DeiTTrainingArguments(
        output_dir="out", teacher_name_or_path="resnet50"), data_args=data_args, train_dataset=train, eval_dataset=val)
    trainer.train(); trainer.evaluate()   # -> eval_loss, eval_{fused,cls,distillation}_top{1,5}

What each part does lives elsewhere; the trainer wires them into transformers' public hooks:
  * setup.py: every setting derived from the arguments, the model and the data, at start (logged);
  * teacher_setup.py: the frozen teacher or its cache, checked before any step; prepared by accelerate for
    evaluation only (device and autocast, never DDP-wrapped, saved or optimised), as TRL prepares its teachers;
  * compute_loss: the batch finished on the device (hf_deit.data: --device_augment, --uint8_batches), Mixup/CutMix
    (mixing.py), student, teacher (same batch, own normalisation), DistillationLoss (losses.py);
  * monitor.py: loss parts and non-finite values watched on the device, read at logging steps only;
  * callbacks.py: EMA weights, a stream's position, the sampler's epoch, finite checkpoints; run_folder.py: the
    output folder's lock, run id and complete checkpoints; recipe.py / schedule.py: the optimizer groups and the
    paper's schedule; flops.py: transformers' per-step FLOP count with the parameters counted once;
  * hf_deit.data.sampling: the paper's epoch and per-image augmentation seeds of map-style data; hf_deit.data.epoch:
    a stream of known size cut into epochs. (docs/architecture.md: where each piece of training state lives.)

Private Trainer methods overridden (each says which transformers behaviour it replaces; tests/test_trainer_hooks.py
fails when transformers changes them): `_get_dataloader` (loaders' data, sampler and preparation) and
`_init_training_state` (where a stream's resumed pass starts).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import has_length

from ..data.arguments import DataArguments
from ..data.collate import DeiTCollator
from ..data.device_augment import ENCODED_IMAGES, build_device_augment
from ..data.device_finish import build_device_finish
from ..data.epoch import EpochLoader
from ..data.sampling import seeded_training_data
from ..models.configuration_deit import DeiTConfig
from ..models.image_processing import image_processor_for
from . import run_folder
from .arguments import DeiTTrainingArguments
from .callbacks import EmaCallback, FiniteWeightsCallback, SamplerEpochCallback, StreamPositionCallback
from .callbacks import check_finite_weights
from .checkpoints import STREAM_STATE_NAME, check_checkpoint, check_checkpoint_keys
from .fast_paths import run_teacher, sdpa_context
from .flops import CachedFloatingPointOps
from .losses import DistillationLoss
from .metrics import compute_topk_metrics, topk_predictions
from .mixing import LambdaRecordingMixup, build_mixup, mix_batch
from .monitor import TrainingMonitor
from .recipe import NO_WEIGHT_DECAY
from .schedule import build_scheduler
from .setup import close_processes, data_seed, dispatched_evaluation, resolve_setup, stream_epoch_batches
from .storage import parameter_bytes, write_errors_named
from .teacher_cache import CachedTeacher, MixRecord
from .teacher_setup import resolve_teacher

logger = logging.getLogger(__name__)


class DistillationTrainer(CachedFloatingPointOps, Trainer):
    """`transformers.Trainer` that distils a DeiT student from a frozen teacher (Touvron et al. 2021).

    Args (besides the Trainer's):
        teacher: None (load `args.teacher_cache` if set, else `args.teacher_name_or_path`), an `nn.Module`, a
            `FrozenTeacher` from `load_teacher`, or a `CachedTeacher` (the teacher's stored dense label maps, pooled
            over each crop). Unused with `args.distillation_type == "none"`.
        data_args: the `hf_deit.data.DataArguments` the datasets were built with: repeated augmentation, the
            device-side finishing of batches and, unless a collator is passed, `DeiTCollator` (stacks). Without it
            DataArguments' defaults are assumed (a warning says so).

    `processing_class` defaults to the student's image processor (so saved directories work with `pipeline`),
    `compute_metrics` to per-head top-1/top-5 and `preprocess_logits_for_metrics` to a per-batch top-5 reduction.
    """

    def __init__(
        self, model: nn.Module | None = None, args: DeiTTrainingArguments | None = None,
        teacher: nn.Module | str | None = None, data_args: DataArguments | None = None,
        data_collator: Callable | None = None, processing_class: Any = None, compute_metrics: Callable | None = None,
        preprocess_logits_for_metrics: Callable | None = None, **kwargs: Any,
    ) -> None:
        args, data_args = resolve_setup(model, args, data_args, kwargs.get("train_dataset"), kwargs.get("eval_dataset"))
        if processing_class is None and isinstance(model.config, DeiTConfig):
            processing_class = image_processor_for(model.config)
        if compute_metrics is None:
            compute_metrics = compute_topk_metrics
            preprocess_logits_for_metrics = preprocess_logits_for_metrics or topk_predictions
        super().__init__(
            model=model, args=args, data_collator=data_collator or DeiTCollator(), processing_class=processing_class,
            compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess_logits_for_metrics, **kwargs,
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
        self.teacher, self.teacher_source = resolve_teacher(teacher, args, model, processing_class, self.train_dataset)
        if self.teacher is not None and not isinstance(self.teacher, CachedTeacher):  # device + autocast, no DDP:
            self.teacher = self.accelerator.prepare_model(self.teacher, evaluation_mode=True)  # as TRL's teachers
        self.mixup = build_mixup(args, model.config.num_labels, args.label_smoothing_factor,  # a cached teacher mixes
                                 record_lambda=isinstance(self.teacher, CachedTeacher))  # its logits as the images
        self.device_finish = build_device_finish(data_args)  # uint8 batches (--uint8_batches)
        self.device_augment = build_device_augment(data_args)  # encoded batches (--device_augment)
        self.monitor = TrainingMonitor(self.teacher_source)
        self.ema = EmaCallback(self.model, args.model_ema_decay) if args.use_model_ema else None
        self.stream_position = StreamPositionCallback(uncounted=lambda: self._steps_per_epoch is None)
        self.sampler_epoch = SamplerEpochCallback()  # the epoch of the map-style sampler _get_dataloader builds
        finite = FiniteWeightsCallback(self.model, self.monitor, self.accelerator)  # teacher and loss, then weights
        for cb in filter(None, (self.monitor, self.ema, self.stream_position, self.sampler_epoch, finite)):
            self.add_callback(cb)
        self._steps_per_epoch: int | None = None  # the Trainer's count; None for a stream of unknown size
        self._built_lr_scheduler = False
        self.run_claim: run_folder.RunClaim | None = None  # this run's hold on output_dir, while train() runs

    @property
    def model_ema(self):
        """timm's ModelEmaV3 holding the EMA weights (`.module`), when --model_ema_decay is on."""
        return self.ema.ema if self.ema is not None else None

    # --- loss -------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "labels" not in inputs:
            raise KeyError(f"DistillationTrainer needs 'labels' in each batch; got keys {sorted(inputs)}.")
        inputs, pixel_values, labels, mix = self._finish_batch(inputs, model.training)
        # No labels to the model: its own loss (CE on both heads) is replaced by the distillation loss.
        with sdpa_context(self.args.sdpa_backend):
            outputs = model(pixel_values=pixel_values)
        if not model.training:
            # Evaluation loss: CE of the fused prediction (what inference returns); no teacher at evaluation.
            loss = F.cross_entropy(outputs.logits.float(), labels.float() if labels.is_floating_point() else labels)
            return (loss, outputs) if return_outputs else loss
        teacher_logits = None
        if isinstance(self.teacher, CachedTeacher):  # reads the batch's rows, crop boxes and the mix
            teacher_logits = self.teacher.logits_for_batch(pixel_values, inputs, mix)
        elif self.teacher is not None:  # under the student's autocast (accelerate prepared it for evaluation)
            teacher_logits = run_teacher(self.teacher, pixel_values, self.args.teacher_inference_mode)
        parts = self.loss_fn(outputs, labels, teacher_logits)
        self.monitor.update(parts, teacher_logits)  # on the device: no host sync per step
        return (parts["loss"], outputs) if return_outputs else parts["loss"]

    def _finish_batch(self, inputs: dict, training: bool) -> tuple[dict, torch.Tensor, torch.Tensor, MixRecord | None]:
        """(inputs, pixel_values, labels or soft targets, how it was mixed): the batch finished on the device
        (--device_augment: decoded and augmented; --uint8_batches: normalised, erased), then mixed (training)."""
        if ENCODED_IMAGES in inputs:
            inputs = self.device_augment(inputs)
        pixel_values, labels, mix = inputs["pixel_values"], inputs["labels"], None
        if pixel_values.dtype == torch.uint8:
            pixel_values = self.device_finish(pixel_values, train=training)
        if training and self.mixup is not None and not labels.is_floating_point():
            # clone: Mixup works in place, and the caller's batch stays as it was
            pixel_values, labels = mix_batch(self.mixup, pixel_values.clone(), labels, self.mixup.num_classes,
                                             self.mixup.label_smoothing)
            if isinstance(self.mixup, LambdaRecordingMixup):
                mix = MixRecord(self.mixup.last_lam, len(labels) - len(labels) % 2)
        return inputs, pixel_values, labels, mix

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Every log reads the monitor (one host read): a non-finite loss or teacher logit since the previous log stops
        # the run; training logs (with "loss") get the loss parts' means since then, averaged over processes.
        logs.update(self.monitor.report(self.accelerator, self.args.gradient_accumulation_steps, parts="loss" in logs))
        super().log(logs, start_time)

    # --- optimizer and schedule -------------------------------------------------------------------------------
    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """Weight decay on weight matrices and kernels only, minus the paper's exemptions (recipe.NO_WEIGHT_DECAY)."""
        return [name for name, param in model.named_parameters()
                if param.ndim > 1 and name.rsplit(".", 1)[-1] not in NO_WEIGHT_DECAY]

    def set_initial_training_values(self, args, dataloader):
        # Public Trainer hook: it counts the optimizer steps per epoch (from the sampler's epoch, see
        # hf_deit.data.epoch), which the paper's per-epoch schedule needs; create_scheduler comes after it.
        values = super().set_initial_training_values(args, dataloader)
        self._steps_per_epoch = values[1] if has_length(dataloader) else None  # num_update_steps_per_epoch
        return values

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """The paper's schedule or transformers' (hf_deit.distillation.schedule.build_scheduler)."""
        if self.lr_scheduler is None:
            optimizer = optimizer or self.optimizer
            self.lr_scheduler = build_scheduler(self.args, optimizer, self._steps_per_epoch, num_training_steps)
            self._built_lr_scheduler = True  # rebuilt by the next train() (its length may differ)
        return self.lr_scheduler

    # --- data -------------------------------------------------------------------------------------------------
    def get_train_dataloader(self):
        """A training stream of known size is cut into epochs of the paper's length (hf_deit.data.EpochLoader),
        which gives the Trainer a length: it then counts epochs, warmup and the resume position itself."""
        dataloader = super().get_train_dataloader()
        batches = stream_epoch_batches(self.train_dataset, self.args, self.data_args)
        return dataloader if batches is None else EpochLoader(dataloader, batches)

    def get_resumed_dataloader(self, dataloader, num_batches):
        # An epoch of a stream resumes by reading and dropping its first batches, as accelerate's skip_first_batches.
        if isinstance(dataloader, EpochLoader):
            return dataloader.skipping(num_batches)
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False, dataloader_key=None):
        # Private override (transformers' builds every loader and hands it to accelerate; no public hook does): our
        # map-style training data and sampler (hf_deit.data.sampling), evaluation streams dispatched (setup.py).
        if is_training and has_length(dataset) and not isinstance(dataset, torch.utils.data.IterableDataset):
            dataset, sampler_fn = seeded_training_data(
                dataset, sampler_fn, repeated_aug=self.data_args.repeated_aug, world_size=self.args.world_size,
                batch_size=self.args.train_batch_size, seed=data_seed(self.args), rank=self.args.process_index,
                on_sampler=self.sampler_epoch.watch)
        with dispatched_evaluation(self.accelerator, dataset, is_training):
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)

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
        if resume_from_checkpoint is not None and self._steps_per_epoch is None and not self.args.ignore_data_skip:
            position = self.stream_position.position_in(resume_from_checkpoint)  # checked: a garbage file is named
            if position is None:
                logger.warning("%s has no %s: the stream restarts from its first pass.", resume_from_checkpoint, STREAM_STATE_NAME)
            else:
                epochs, batches = position
        self.stream_position.resume_at(epochs, batches)
        return epochs, batches

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train` in an output_dir that is this run's (hf_deit.distillation.run_folder: locked, another run's
        outputs refused unless resuming or --overwrite_output_dir, room for a checkpoint, checkpoints marked complete
        with the run id), with `resume_from_checkpoint` also taking "True"/"False" as a command line gives them (True:
        the newest complete checkpoint of this folder's run), and a checkpoint checked before anything is loaded
        (hf_deit.distillation.checkpoints). A failed write names the file and the cause."""
        if self._built_lr_scheduler:  # ours is built for one run's length (transformers resets its own likewise)
            self.lr_scheduler, self._built_lr_scheduler = None, False
        claim = self.run_claim = run_folder.claim_output_dir(self.args, resume_from_checkpoint, parameter_bytes(self.model))
        run_folder.attach(self)
        with run_folder.training(self, claim):
            checkpoint = claim.checkpoint
            # DeepSpeed and FSDP write their optimizer state and weights in their own layouts, which they check.
            if checkpoint is not None and not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
                check_checkpoint(checkpoint, self.args.process_index, self.args.world_size)
                check_checkpoint_keys(checkpoint, self.model)
            if checkpoint is not None and self.ema is not None:
                self.ema.load(checkpoint, self.args.device)
            return super().train(
                resume_from_checkpoint=checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs
            )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # transformers saves whatever the weights hold; a diverged step would be published as the result.
        check_finite_weights(self.model, "the model was", self.state.global_step)
        if _internal_call:  # a checkpoint: train() names a failed write and removes the incomplete folder
            return super().save_model(output_dir, _internal_call)
        with write_errors_named(output_dir or self.args.output_dir, parameter_bytes(self.model), "the model"):
            super().save_model(output_dir, _internal_call)
            if self.args.should_save and self.ema is not None:  # the final model: its EMA weights kept beside it
                self.ema.save(output_dir or self.args.output_dir)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Metrics of the model (`eval_loss`, `eval_{fused,cls,distillation}_top{1,5}`) and, with EMA on, of the
        EMA weights too (`eval_ema_*`)."""
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.ema is not None:
            model, wrapped = self.model, self.model_wrapped
            self.model = self.model_wrapped = self.ema.module
            try:
                metrics.update(super().evaluate(eval_dataset, ignore_keys, f"{metric_key_prefix}_ema"))
            finally:
                self.model, self.model_wrapped = model, wrapped
        return metrics

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # The config tells plain Trainers to collect only the fused logits; per-head metrics need both heads too.
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys or ["hidden_states", "attentions"])

    def create_model_card(self, **kwargs: Any) -> None:
        """README.md (+ training_curves.png): the run's facts (card_facts) rendered by hub.model_card's template."""
        if self.is_world_process_zero():
            from .card_facts import model_card_from_trainer

            data_args = None if getattr(self.data_args, "assumed", False) else self.data_args  # setup's defaults
            card = model_card_from_trainer(self, data_args, self.teacher_source)
            card.save(os.path.join(self.args.output_dir, "README.md"))

    def close(self) -> None:
        """Call it last (examples/distill.py does): the run's processes end cleanly (setup.close_processes)."""
        close_processes(self)


__all__ = ["DistillationTrainer"]

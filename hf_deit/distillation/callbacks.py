"""The training state DistillationTrainer keeps besides transformers', each in one TrainerCallback that owns it end
to end: it updates it, writes it into each checkpoint and reads it back on resume. docs/architecture.md has the
table of every piece of training state and its one writer.

  * `EmaCallback`: the EMA weights (timm's ModelEmaV3): updated after every optimizer step, written into each
    checkpoint (model_ema.safetensors) and beside the final model, loaded on resume.
  * `StreamPositionCallback`: for a stream of unknown size (no length, so the Trainer cannot count its epochs), which
    pass over it the run is in and how many of its batches were read: written into each checkpoint
    (stream_state.json) and read on resume, so that a resumed run continues in the right pass.
  * `SamplerEpochCallback`: the epoch of the map-style training sampler hf_deit builds (hf_deit.data.sampling), set
    at the start of every epoch, the resumed one included, on every rank.
  * `FiniteWeightsCallback`: a checkpoint is written only from finite weights (a NaN checkpoint would also become the
    one `--resume_from_checkpoint True` picks).

On each checkpoint transformers fires `on_save` after it has written its own files; run_folder's
CompleteCheckpointCallback, kept last, marks the checkpoint complete after these have written theirs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Callable

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .checkpoints import EMA_WEIGHTS_NAME, STREAM_STATE_NAME, read_stream_state

logger = logging.getLogger(__name__)


def checkpoint_folder(args, state) -> str:
    """The folder transformers has just written the checkpoint of `state.global_step` into."""
    return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")


class EmaCallback(TrainerCallback):
    """An exponential moving average of `model`'s weights (timm's ModelEmaV3, the paper's decay 0.99996)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        from timm.utils import ModelEmaV3

        self.model, self.ema = model, ModelEmaV3(model, decay=decay)

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    def on_step_end(self, args, state, control, **kwargs):
        self.ema.update(self.model, step=state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            self.save(checkpoint_folder(args, state))

    def save(self, directory: str) -> None:
        from safetensors.torch import save_file

        state = {name: value.contiguous() for name, value in self.ema.module.state_dict().items()}
        save_file(state, os.path.join(directory, EMA_WEIGHTS_NAME))

    def load(self, checkpoint: str, device: torch.device | str) -> None:
        """The checkpoint's EMA weights, when it has them (checked readable by checkpoints.check_checkpoint)."""
        path = os.path.join(checkpoint, EMA_WEIGHTS_NAME)
        if os.path.isfile(path):
            from safetensors.torch import load_file

            device = torch.device(device)  # safetensors refuses "cpu:0", the device of a rank of a CPU DDP run
            self.ema.module.load_state_dict(load_file(path, device="cpu" if device.type == "cpu" else str(device)))


class StreamPositionCallback(TrainerCallback):
    """Which pass over a stream of unknown size the run is in (the Trainer's epoch) and how many of its batches were
    read. `resume_at` sets where the next run starts (DistillationTrainer._init_training_state)."""

    def __init__(self, uncounted: Callable[[], bool]) -> None:
        self.uncounted = uncounted  # True while the training data has no length (the position must be saved)
        self.epoch, self.batches, self._start = 0, 0, None

    def resume_at(self, epoch: int, batches: int) -> None:
        self._start = (epoch, batches)

    @staticmethod
    def position_in(checkpoint: str) -> tuple[int, int] | None:
        return read_stream_state(checkpoint)

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._start is not None:  # the epoch the run starts (or resumes) in
            (self.epoch, self.batches), self._start = self._start, None
        else:
            self.epoch, self.batches = self.epoch + 1, 0

    def on_substep_end(self, args, state, control, **kwargs):
        self.batches += 1  # a micro-batch of gradient accumulation

    def on_step_end(self, args, state, control, **kwargs):
        self.batches += 1  # the last micro-batch of an optimizer step (before the Trainer saves)

    def on_save(self, args, state, control, **kwargs):
        if args.should_save and self.uncounted():
            with open(os.path.join(checkpoint_folder(args, state), STREAM_STATE_NAME), "w") as f:
                json.dump({"epoch": self.epoch, "batches_in_epoch": self.batches}, f)


class SamplerEpochCallback(TrainerCallback):
    """Sets the epoch of the map-style training sampler (`watch`ed when the Trainer builds its loader) at the start of
    every epoch, from the Trainer's own epoch count (`state.epoch`: whole at an epoch's start, and the checkpoint's
    epoch + fraction when a run resumes inside one).

    transformers and accelerate set it through the loader (`DataLoaderShard.set_epoch` reaches 2 levels down), but a
    resumed epoch's loader on 2+ ranks is SkipBatchSampler -> BatchSamplerShard -> BatchSampler -> sampler, one level
    too deep: left to them, the rest of the resumed epoch would be read in epoch 0's order and augmented under epoch
    0's seeds (issue 25). The sampler is the same object in the resumed and the fresh loaders, so setting it here
    covers both, and costs nothing where they do reach it (the same epoch is set twice)."""

    def __init__(self) -> None:
        self.sampler = None

    def watch(self, sampler) -> None:
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.sampler is not None:
            self.sampler.set_epoch(math.floor(state.epoch or 0))


def check_finite_weights(model: nn.Module, what: str, step: int) -> None:
    """FloatingPointError naming the first non-finite parameter; one host sync for all of them."""
    parameters = dict(model.named_parameters())
    finite = torch.stack([torch.isfinite(p).all() for p in parameters.values()])
    if bool(finite.all()):
        return
    name = list(parameters)[int((~finite).nonzero()[0])]
    raise FloatingPointError(
        f"Non-finite values in {name} after global step {step}: {what} not saved. The last step diverged (its loss "
        "was still finite): lower the learning rate, warm up longer or clip gradients (--max_grad_norm 1.0), and "
        "resume from the last checkpoint."
    )


class FiniteWeightsCallback(TrainerCallback):
    """Before transformers writes a checkpoint (after DefaultFlowCallback decided to save): no non-finite loss or
    teacher logit since the start (the monitor's flags, read here as at a log: a checkpoint trained on a NaN teacher's
    targets is not written, and the error names the teacher, not the learning rate), then finite weights."""

    def __init__(self, model: nn.Module, monitor: Any = None, accelerator: Any = None) -> None:
        self.model, self.monitor, self.accelerator = model, monitor, accelerator

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            if self.monitor is not None:
                self.monitor.report(self.accelerator, args.gradient_accumulation_steps, parts=False)
            check_finite_weights(self.model, f"checkpoint-{state.global_step} was", state.global_step)

    on_epoch_end = on_step_end  # save_strategy="epoch" decides there


__all__ = ["EmaCallback", "FiniteWeightsCallback", "SamplerEpochCallback", "StreamPositionCallback", "check_finite_weights"]

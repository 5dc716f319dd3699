"""What the training loop watches without stopping the GPU: loss parts for the log, and non-finite values.

A per-step `if torch.isfinite(loss)` converts a device tensor to a Python bool: a host sync that drains the GPU's
queue every step (transformers' `logging_nan_inf_filter` does it twice). Here everything stays on the device until
the next logging step, where `report` reads it once:

  * the sums of `base_loss` and `distillation_loss` since the previous log (their means are logged);
  * the first step whose loss was not finite, and the first step whose teacher logits were not finite (a NaN
    teacher under hard distillation would otherwise train the student towards class 0: argmax of NaN is 0, and the
    loss stays finite).

So a non-finite value stops the run at the next logging step (or the end of training), naming the step it first
appeared at; `--logging_steps` bounds how many steps run after it. Every process reports the first bad step of any
process (a collective at the logging step, where the Trainer reduces the loss anyway), so all stop together.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback

NOT_SEEN = torch.iinfo(torch.int64).max  # "no bad step yet", the identity of the min reduction below


class TrainingMonitor(TrainerCallback):
    """Owns the loss-part sums and the non-finite flags of one `train()`: `update` after each batch (the trainer's
    compute_loss), `report` at each log (the trainer's `log`); a callback only to start afresh at `on_train_begin`."""

    def __init__(self, teacher_name: str | None = None) -> None:
        self.teacher_name = teacher_name
        self.on_train_begin(None, None, None)

    def on_train_begin(self, args, state, control, **kwargs):
        self.step_offset = state.global_step if state is not None else 0  # a resumed run starts there
        self._sums: dict[str, torch.Tensor] = {}
        self._batches = 0
        self._step: torch.Tensor | None = None  # batches since the start, on the device (no host value to read)
        self._first_bad: torch.Tensor | None = None  # [first bad loss batch, first bad teacher batch]
        self._bad_parts: torch.Tensor | None = None  # loss, base_loss, distillation_loss at the first bad loss

    def update(self, parts: dict[str, torch.Tensor | None], teacher_logits: torch.Tensor | None = None) -> None:
        """After each training batch: device-side sums and flags only (no Python value is read from the device)."""
        loss = parts["loss"].detach()
        if self._step is None:
            self._step = torch.zeros((), dtype=torch.int64, device=loss.device)
            self._first_bad = torch.full((2,), NOT_SEEN, dtype=torch.int64, device=loss.device)
        self._step += 1
        bad_teacher = (
            ~torch.isfinite(teacher_logits).all() if teacher_logits is not None else torch.zeros((), dtype=torch.bool,
                                                                                                 device=loss.device)
        )
        bad = torch.stack([~torch.isfinite(loss), bad_teacher.to(loss.device)])
        first = bad & (self._first_bad == NOT_SEEN)
        values = torch.stack([parts[n].detach().float() if parts.get(n) is not None else torch.full_like(loss, float("nan"))
                              for n in ("loss", "base_loss", "distillation_loss")])
        self._bad_parts = torch.where(first[0], values, self._bad_parts if self._bad_parts is not None else values)
        self._first_bad = torch.where(first, self._step, self._first_bad)
        for name in ("base_loss", "distillation_loss"):
            if parts.get(name) is not None:
                self._sums[name] = self._sums.get(name, 0.0) + parts[name].float()
        self._batches += 1

    def report(self, accelerator: Any, accumulation: int = 1, parts: bool = True) -> dict[str, float]:
        """At every log: raises FloatingPointError if any process saw a non-finite value since the start
        (`accumulation`: batches per optimizer step, to name the global step); with `parts` (a training log), the
        loss parts' means since the previous such report, averaged over processes."""
        step_offset = self.step_offset
        if self._first_bad is not None:
            # the one host read, at a logging step: the first bad batch over all processes
            first_bad = accelerator.gather(self._first_bad[None]).amin(0).tolist()
            if min(first_bad) != NOT_SEEN:
                steps = [b if b == NOT_SEEN else step_offset + (b - 1) // accumulation + 1 for b in first_bad]
                self._raise_if_bad(steps, self._bad_parts.tolist())
        logs = {}
        if not parts:
            return logs
        if self._batches:
            for name, total in self._sums.items():
                logs[name] = round(float(accelerator.reduce(total / self._batches, reduction="mean")), 6)
        self._sums, self._batches = {}, 0
        return logs

    def _raise_if_bad(self, first_bad: list[int], parts: list[float]) -> None:
        loss_step, teacher_step = first_bad
        if teacher_step != NOT_SEEN:
            raise FloatingPointError(
                f"The teacher {self.teacher_name or ''} gave non-finite logits (NaN or inf) at global step "
                f"{teacher_step}: distilling from them would teach the student garbage (hard distillation's argmax "
                "of NaN is class 0). Check the teacher's weights (e.g. `hf-deit predict` with it), its input "
                "normalisation, or --bf16/--fp16 overflow in the teacher."
            )
        if loss_step != NOT_SEEN:
            values = ", ".join(f"{name}={value:.6g}" for name, value in zip(("loss", "base_loss", "distillation_loss"), parts))
            raise FloatingPointError(
                f"Non-finite loss at global step {loss_step} ({values}; on this process). Lower the learning rate or "
                "warm up longer, check the inputs for NaNs, or use --bf16 instead of --fp16."
            )


__all__ = ["TrainingMonitor"]

"""What a run will cost, computed from its resolved values before it starts: `hf-deit recipe` prints it.

    plan_run(values, dataset_size=1_281_167, env=Environment(world_size=8, gpu=True))
    -> 160,128 images per process per epoch, 1,251 optimizer steps per epoch, 375,300 in 300 epochs, ...

The epoch is the data layer's (`hf_deit.data.samples_per_epoch`: the paper's RASampler count per process, each
drawn image repeated on different processes); the steps are counted as transformers' Trainer counts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..data import batches_per_epoch, samples_per_epoch
from .recipe import Environment


@dataclass(frozen=True)
class RunPlan:
    samples_per_epoch_per_process: int
    steps_per_epoch: int
    total_steps: int
    epochs: float
    warmup_steps: int
    teacher_forwards: int  # teacher runs over the whole run (0 without a live teacher)
    checkpoints_written: int


def plan_run(values: dict[str, Any], dataset_size: int, env: Environment) -> RunPlan:
    """The run's length in samples, optimizer steps, teacher forwards and checkpoints (see the module docstring)."""
    world, per_device = env.world_size, values["per_device_train_batch_size"]
    accumulation = values["gradient_accumulation_steps"]
    repeats = values["repeated_aug"]
    per_process = samples_per_epoch(dataset_size, world) if repeats > 1 else math.ceil(dataset_size / world)
    batches = batches_per_epoch(dataset_size, world, per_device, repeats)  # the last partial batch is dropped
    steps_per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)  # transformers' count
    if values.get("max_steps", -1) > 0:
        total = values["max_steps"]
    else:
        total = math.ceil(values["num_train_epochs"] * steps_per_epoch)
    epochs = total / steps_per_epoch
    live_teacher = values["distillation_type"] != "none" and not values.get("teacher_cache")
    strategy = values["save_strategy"]
    if strategy == "epoch":
        checkpoints = math.ceil(epochs)
    elif strategy == "steps":
        save_steps = values["save_steps"]
        checkpoints = total // (save_steps if save_steps >= 1 else max(round(save_steps * total), 1))
    else:
        checkpoints = 0
    return RunPlan(
        samples_per_epoch_per_process=per_process,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        epochs=epochs,
        warmup_steps=round(values["warmup_epochs"] * steps_per_epoch),
        teacher_forwards=total * per_device * accumulation * world if live_teacher else 0,
        checkpoints_written=checkpoints,
    )


def format_plan(values: dict[str, Any], env: Environment, dataset_size: int) -> str:
    """The plain-text summary of a run's size that `hf-deit recipe` and examples/distill.py print."""
    plan = plan_run(values, dataset_size, env)
    world, per_device = env.world_size, values["per_device_train_batch_size"]
    lines = [
        f"  global batch        {values['global_batch_size']:,} = {world} processes x {per_device} per device x "
        f"{values['gradient_accumulation_steps']} accumulation steps",
        f"  learning rate       {values['learning_rate']:g}" + (
            f" = {values['base_learning_rate']:g} x {values['global_batch_size']:,} / 512"
            if values.get("base_learning_rate") else " (given)"
        ),
        f"  epoch               {plan.samples_per_epoch_per_process:,} images per process, "
        f"{plan.samples_per_epoch_per_process * world:,} in all (dataset: {dataset_size:,}; repeated augmentation "
        f"x{values['repeated_aug']})",
        f"  optimizer steps     {plan.steps_per_epoch:,} per epoch, {plan.total_steps:,} in {plan.epochs:g} epochs",
        f"  warmup              {values['warmup_epochs']:g} epochs = {plan.warmup_steps:,} steps, from "
        f"{values['warmup_lr']:g}; cosine to {values['min_lr']:g}, stepped per {values['lr_schedule']}",
        f"  teacher forwards    {plan.teacher_forwards:,}",
        f"  checkpoints         {plan.checkpoints_written:,} written, the newest {values['save_total_limit']} kept",
        f"  precision, workers  {values['precision']}, {values['dataloader_num_workers']} loader workers per process",
    ]
    return "\n".join(lines)


__all__ = ["RunPlan", "format_plan", "plan_run"]

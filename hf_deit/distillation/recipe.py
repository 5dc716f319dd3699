"""The paper's recipe as defaults, resolved once per run: which values a run gets when the user does not give them.

`DeiTTrainingArguments` leaves the fields below at None ("from the recipe"); its `__post_init__` calls `resolve`
with the fields the user gave and the machine the run is on (`Environment`), and writes the result back. `hf-deit
recipe` calls the same function for another machine (`--world_size 8`) before anyone pays for a run. Each
resolved value comes with a note saying how it was derived; the run prints them (examples/distill.py).

Two recipes, both from the official code (facebookresearch/deit; file and line in recipe_table.py):
  * "pretrain": main.py's defaults with the README's global batch of 1024 (4 GPUs x 256, or 2 nodes x 8 GPUs x 64).
  * "finetune": README_deit.md's fine-tuning at 384 from a 224 checkpoint: 30 epochs, global batch 512 (2 nodes x
    8 GPUs x 32), lr 5e-6, min lr 5e-6, weight decay 1e-8; the teacher sees the student's resolution, as the paper
    describes its fine-tuning with distillation at a higher resolution (a teacher at the target resolution).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

# The paper's lr rule: lr = base_lr * global_batch / LR_REFERENCE_BATCH (main.py:350).
LR_REFERENCE_BATCH = 512
# A per-device batch the recipe picks when none is given: the rest of the global batch is gradient accumulation.
# 128 DeiT-B images with a RegNetY-16GF teacher fit a 40 GB GPU in bf16; give --per_device_train_batch_size to use more.
AUTO_MAX_PER_DEVICE_BATCH = 128
# The paper's loader workers per process (main.py:176), capped at the CPU cores each process has.
OFFICIAL_NUM_WORKERS = 10

RECIPES: dict[str, dict[str, Any]] = {
    "pretrain": dict(
        num_train_epochs=300.0, global_batch_size=1024, base_learning_rate=5e-4, weight_decay=0.05,
        warmup_epochs=5.0, warmup_lr=1e-6, min_lr=1e-5, model_ema_decay=0.99996, save_total_limit=2,
        teacher_at_student_resolution=False,
    ),
    "finetune": dict(
        num_train_epochs=30.0, global_batch_size=512, base_learning_rate=5e-6, weight_decay=1e-8,
        warmup_epochs=5.0, warmup_lr=1e-6, min_lr=5e-6, model_ema_decay=0.99996, save_total_limit=2,
        teacher_at_student_resolution=True,
    ),
}
# Fields a run takes from the recipe (or derives) when left at None, besides those in RECIPES.
DERIVED_FIELDS = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "dataloader_num_workers")
RESOLVED_FIELDS = tuple(RECIPES["pretrain"]) + DERIVED_FIELDS
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Parameters without weight decay besides 1-D ones (norms, biases): the paper's code exempts `no_weight_decay()` =
# {pos_embed, cls_token} of timm 0.3.2's VisionTransformer, which its DistilledVisionTransformer inherits unchanged:
# the distillation token IS decayed there (models.py:20), and here.
NO_WEIGHT_DECAY = ("position_embeddings", "cls_token")


class RecipeError(ValueError):
    """Flags that cannot be made into one run (e.g. a per-device batch that does not divide the global batch)."""


@dataclass(frozen=True)
class Environment:
    """What the recipe depends on besides the flags: processes, accelerator, CPU cores."""

    world_size: int = 1
    local_world_size: int = 1
    gpu: bool = False
    bf16_supported: bool = False
    cpu_count: int = 1

    @classmethod
    def detect(cls, use_cpu: bool = False) -> Environment:
        """This process's view, before transformers sets up the devices (the launcher's environment variables)."""
        import torch

        gpu = torch.cuda.is_available() and not use_cpu
        return cls(
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
            gpu=gpu,
            bf16_supported=gpu and torch.cuda.is_bf16_supported(),
            cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        )


@dataclass
class Resolution:
    """Every resolved field, and for each one not given by the user a note saying where its value came from."""

    values: dict[str, Any]
    notes: dict[str, str]


def resolve(given: Mapping[str, Any], recipe: str, env: Environment, precision: str = "auto") -> Resolution:
    """The run's values: `given` (fields the user set) win; the rest come from RECIPES[recipe] or are derived.

    Raises RecipeError when given values contradict each other (e.g. global batch, per-device batch and
    accumulation that do not multiply out, or both a learning rate and a base learning rate)."""
    if recipe not in RECIPES:
        raise RecipeError(f"recipe={recipe!r}: use one of {sorted(RECIPES)}.")
    values = {**RECIPES[recipe], **{k: v for k, v in given.items() if v is not None}}
    notes = {name: f"the {recipe} recipe" for name in RECIPES[recipe] if given.get(name) is None}
    _resolve_batch(values, notes, given, env)
    _resolve_learning_rate(values, notes, given)
    if given.get("dataloader_num_workers") is None:
        values["dataloader_num_workers"], notes["dataloader_num_workers"] = _workers(env)
    values["precision"], notes["precision"] = _precision(precision, env)
    return Resolution(values, notes)


def _resolve_batch(values: dict, notes: dict, given: Mapping[str, Any], env: Environment) -> None:
    """global = per_device x processes x accumulation; whichever of the three is not given is derived."""
    world = env.world_size
    per_device, accumulation = given.get("per_device_train_batch_size"), given.get("gradient_accumulation_steps")
    if given.get("global_batch_size") is None and per_device is not None:
        # A per-device batch without a global one keeps its meaning: the global batch follows from it.
        values["global_batch_size"] = per_device * world * (accumulation or 1)
        notes["global_batch_size"] = f"{per_device} per device x {world} processes x {accumulation or 1} accumulation"
    total = values["global_batch_size"]
    if total % world:
        raise RecipeError(f"The global batch {total} does not split over {world} processes: give a multiple of {world}.")
    per_process = total // world
    if per_device is None and accumulation is None:
        per_device = max(d for d in range(1, min(per_process, AUTO_MAX_PER_DEVICE_BATCH) + 1) if per_process % d == 0)
        accumulation = per_process // per_device
        notes["per_device_train_batch_size"] = (
            f"global batch {total} / {world} processes, at most {AUTO_MAX_PER_DEVICE_BATCH} per device"
        )
        notes["gradient_accumulation_steps"] = f"global batch {total} / ({world} processes x {per_device} per device)"
    elif per_device is None:
        per_device = per_process // accumulation
        notes["per_device_train_batch_size"] = f"global batch {total} / {world} processes / {accumulation} accumulation"
    elif accumulation is None:
        accumulation = per_process // per_device
        notes["gradient_accumulation_steps"] = f"global batch {total} / ({world} processes x {per_device} per device)"
    if per_device * accumulation * world != total or per_device < 1 or accumulation < 1:
        raise RecipeError(
            f"per-device batch {per_device} x {world} processes x {accumulation} accumulation steps is not the global "
            f"batch {total}: give a --per_device_train_batch_size (and --gradient_accumulation_steps) that multiply "
            f"out to --global_batch_size, or leave one of them unset to have it derived."
        )
    values["per_device_train_batch_size"], values["gradient_accumulation_steps"] = per_device, accumulation


def _resolve_learning_rate(values: dict, notes: dict, given: Mapping[str, Any]) -> None:
    """One owner: --learning_rate as given, else the paper's rule from --base_learning_rate (main.py:350)."""
    if given.get("learning_rate") is not None:
        if given.get("base_learning_rate") is not None:
            raise RecipeError(
                "Give --learning_rate (used as is) or --base_learning_rate (scaled by global batch / 512), not both."
            )
        values.pop("base_learning_rate")
        notes.pop("base_learning_rate", None)
        return
    base, total = values["base_learning_rate"], values["global_batch_size"]
    values["learning_rate"] = base * total / LR_REFERENCE_BATCH
    notes["learning_rate"] = f"{base:g} x global batch {total} / {LR_REFERENCE_BATCH}"


def _workers(env: Environment) -> tuple[int, str]:
    if not env.gpu:
        # On a CPU the model's own threads use every core; loader workers would compete with them.
        return 0, "no GPU: the loader runs in the training process"
    cores = max(env.cpu_count // max(env.local_world_size, 1), 1)
    workers = min(OFFICIAL_NUM_WORKERS, cores)
    return workers, f"the paper's {OFFICIAL_NUM_WORKERS}, at most the {cores} CPU cores per process"


def _precision(precision: str, env: Environment) -> tuple[str, str]:
    if precision not in PRECISIONS:
        raise RecipeError(f"precision={precision!r}: use one of {PRECISIONS}.")
    if precision != "auto":
        return precision, "given"
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher in ("bf16", "fp16"):
        return launcher, "accelerate launch --mixed_precision"
    if not env.gpu:
        return "fp32", "no GPU"
    if env.bf16_supported:
        return "bf16", "GPU with bf16: mixed precision without a loss scaler"
    return "fp16", "GPU without bf16: fp16 autocast with a loss scaler, as the paper's code"


__all__ = [
    "AUTO_MAX_PER_DEVICE_BATCH", "Environment", "LR_REFERENCE_BATCH", "NO_WEIGHT_DECAY", "PRECISIONS", "RECIPES",
    "RESOLVED_FIELDS", "RecipeError", "Resolution", "resolve",
]

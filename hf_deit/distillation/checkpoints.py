"""Which checkpoint a run resumes from, and whether it holds everything an exact resume needs.

transformers' Trainer resumes from whatever it finds: without `optimizer.pt` or `scheduler.pt` it silently starts a
fresh AdamW and restarts the schedule, without `rng_state.pth` it silently draws other random numbers, and a
truncated file fails deep inside torch without naming it. `check_checkpoint` looks first and says what is wrong.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open
from transformers.trainer_utils import get_last_checkpoint

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

WEIGHTS_NAMES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)
# Files without which a resumed run is a different run: the optimizer moments and the learning-rate schedule.
REQUIRED_STATE = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from as it is."""


def resolve_resume_checkpoint(value: str | bool | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint` -> a checkpoint directory, or None to start afresh.

    True (or the strings "true"/"True", as a command line gives it): the newest `checkpoint-*` in `output_dir`.
    False/None/"false": no resume. Anything else: a checkpoint directory, which must exist.
    """
    if isinstance(value, str) and not os.path.isdir(value) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if value is None or value is False:
        return None
    if value is True:
        checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if checkpoint is None:
            raise CheckpointError(
                f"--resume_from_checkpoint True: no checkpoint-* folder in output_dir {output_dir!r}. Give the "
                "output_dir the interrupted run wrote to, a checkpoint path, or drop the flag to start afresh."
            )
        return checkpoint
    if not os.path.isdir(value):
        raise CheckpointError(
            f"--resume_from_checkpoint {value!r} is not a directory: give a checkpoint-* folder written by a previous "
            "run, or True for the newest one in output_dir."
        )
    return value


def _check_readable(path: str) -> None:
    """Raise CheckpointError naming `path` when it is truncated or corrupt (read without building tensors)."""
    name = os.path.basename(path)
    try:
        if name.endswith(".json"):
            with open(path) as f:
                json.load(f)
        elif name.endswith(".safetensors"):
            with safe_open(path, framework="pt") as f:  # checks the header against the file size
                f.keys()
        elif zipfile.is_zipfile(path):  # torch.save's format: every member's CRC is checked
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} fails its CRC check")
        elif name.endswith((".pt", ".pth", ".bin")):
            raise ValueError("not a torch.save zip archive (truncated?)")
    except (OSError, ValueError, RuntimeError, EOFError, zipfile.BadZipFile, SafetensorError) as error:
        raise CheckpointError(
            f"The checkpoint file {path} is corrupt or truncated ({type(error).__name__}: {error}). Resume from an "
            "earlier checkpoint-* folder, or restore this file."
        ) from error


def check_checkpoint(checkpoint: str, process_index: int = 0, world_size: int = 1) -> None:
    """Stop before resuming from `checkpoint` if a file an exact resume needs is missing or corrupt.

    Missing weights, trainer state, optimizer or scheduler: CheckpointError naming the file (to start from the
    weights alone, fine-tune them instead: `--model_name_or_path <checkpoint>` gives a fresh optimizer and schedule).
    Missing RNG state: a warning (the run continues, but not bit-exactly). Every file present is checked readable.
    """
    present = set(os.listdir(checkpoint))
    weights = [name for name in WEIGHTS_NAMES if name in present]
    if not weights:
        raise CheckpointError(f"{checkpoint} holds no model weights ({' / '.join(WEIGHTS_NAMES[::2])} is missing).")
    missing = [name for name in REQUIRED_STATE if name not in present]
    if missing:
        raise CheckpointError(
            f"{checkpoint} has no {', '.join(missing)}: resuming would restart "
            f"{'the optimizer (fresh AdamW moments)' if 'optimizer.pt' in missing else 'the learning-rate schedule'} "
            "and not continue the run. Resume from a complete checkpoint, or, to start from these weights with a "
            f"fresh optimizer and schedule on purpose, fine-tune them: --model_name_or_path {checkpoint}."
        )
    rng_name = f"rng_state_{process_index}.pth" if world_size > 1 else "rng_state.pth"
    if rng_name not in present:
        logger.warning(
            "%s has no %s: the run resumes, but drop path and Mixup/CutMix draw other random numbers than the "
            "uninterrupted run would have, so it is no longer bit-exact.", checkpoint, rng_name,
        )
    for name in [*weights, *REQUIRED_STATE, rng_name, "scaler.pt"]:
        if name in present:
            _check_readable(os.path.join(checkpoint, name))


__all__ = ["CheckpointError", "check_checkpoint", "resolve_resume_checkpoint"]


def check_checkpoint_keys(checkpoint: str, model: torch.nn.Module) -> None:
    """Stop before loading a checkpoint whose weight names differ from the model's (transformers only warns and
    would resume with the missing weights left at their initial values). Checks safetensors checkpoints (single
    or sharded); other formats are left to transformers."""
    single = os.path.join(checkpoint, "model.safetensors")
    index = os.path.join(checkpoint, "model.safetensors.index.json")
    if os.path.isfile(single):
        with safe_open(single, framework="pt") as f:
            saved = set(f.keys())
    elif os.path.isfile(index):
        with open(index) as f:
            saved = set(json.load(f)["weight_map"])
    else:
        return
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - saved), sorted(saved - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"The checkpoint {checkpoint} does not match the model: missing keys {missing}, unexpected keys "
            f"{unexpected}. Resume with the same model class and configuration that saved it."
        )

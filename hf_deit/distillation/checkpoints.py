"""Whether a checkpoint holds everything an exact resume needs, each file checked and named on failure.

transformers' Trainer resumes from whatever it finds: without `optimizer.pt` or `scheduler.pt` it silently starts a
fresh AdamW and restarts the schedule, without `rng_state.pth` it silently draws other random numbers, a truncated
file fails deep inside torch without naming it, and NaN bytes in the weights load silently (the next step then
blames the learning rate). `check_checkpoint` looks first, at every file a resume reads, and says what is wrong.

A checkpoint is complete when it holds `CHECKPOINT_MARKER` (`mark_complete`, written by
hf_deit.distillation.run_folder's callback once every file of the checkpoint is on disk): the run it belongs to and
the size of each of its files. Which checkpoint a run resumes from is decided in run_folder.py.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

WEIGHTS_NAMES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)
# Files without which a resumed run is a different run: the optimizer moments and the learning-rate schedule.
REQUIRED_STATE = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
STREAM_STATE_NAME = "stream_state.json"  # a stream's pass and position (callbacks.StreamPositionCallback)
EMA_WEIGHTS_NAME = "model_ema.safetensors"  # the EMA weights (callbacks.EmaCallback)
CHECKPOINT_MARKER = "hf_deit_checkpoint.json"  # written last: the checkpoint is complete (mark_complete)


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from as it is."""


def _corrupt(path: str, problem: str) -> CheckpointError:
    return CheckpointError(
        f"The checkpoint file {path} is corrupt or truncated ({problem}). Resume from an earlier checkpoint-* "
        "folder, or restore this file."
    )


def read_json(path: str, required: dict[str, type] | None = None) -> dict[str, Any]:
    """A checkpoint's JSON file as a dict, with `required` keys of the given types; CheckpointError naming the file
    otherwise (a bare JSONDecodeError or KeyError says neither which file nor what to do)."""
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _corrupt(path, f"{type(error).__name__}: {error}") from error
    if not isinstance(content, dict):
        raise _corrupt(path, f"a JSON object was expected, found {type(content).__name__}")
    for key, kind in (required or {}).items():
        value = content.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _corrupt(path, f"{key!r} should be {kind.__name__}, found {value!r}")
    return content


def read_stream_state(checkpoint: str) -> tuple[int, int] | None:
    """(pass over the stream, batches read in it) from the checkpoint's stream_state.json; None without one."""
    path = os.path.join(checkpoint, STREAM_STATE_NAME)
    if not os.path.isfile(path):
        return None
    state = read_json(path, {"epoch": int, "batches_in_epoch": int})
    if state["epoch"] < 0 or state["batches_in_epoch"] < 0:
        raise _corrupt(path, f"negative position {state}")
    return state["epoch"], state["batches_in_epoch"]


def mark_complete(checkpoint: str, run_id: str, global_step: int) -> None:
    """Write CHECKPOINT_MARKER into `checkpoint` once all its files are written: the run it belongs to and each
    file's size (a file later truncated or replaced is then named at resume). Written to a temporary name and
    renamed, so the marker itself is whole or absent."""
    files = {}
    for root, _, names in os.walk(checkpoint):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, checkpoint)] = os.path.getsize(path)
    files.pop(CHECKPOINT_MARKER, None)
    temporary = os.path.join(checkpoint, f".{CHECKPOINT_MARKER}.tmp")
    with open(temporary, "w") as f:
        json.dump({"run_id": run_id, "global_step": global_step, "files": files}, f, indent=1)
    os.replace(temporary, os.path.join(checkpoint, CHECKPOINT_MARKER))


def read_marker(checkpoint: str) -> dict[str, Any] | None:
    """The checkpoint's completion marker (run_id, global_step, files), or None when it has none (incomplete, or
    written without hf_deit's run folder)."""
    path = os.path.join(checkpoint, CHECKPOINT_MARKER)
    if not os.path.isfile(path):
        return None
    return read_json(path, {"run_id": str, "global_step": int, "files": dict})


def _check_readable(path: str) -> None:
    """Raise CheckpointError naming `path` when it is truncated or corrupt (read without building tensors)."""
    name = os.path.basename(path)
    if name.endswith(".json"):
        read_json(path)
        return
    try:
        if name.endswith(".safetensors"):
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
        raise _corrupt(path, f"{type(error).__name__}: {error}") from error


def _check_finite(path: str) -> None:
    """Weights with NaN or inf are refused at load, naming the file and the tensor: loaded, they would fail a step
    later with a "non-finite loss" that blames the learning rate. (Read once, tensor by tensor, memory-mapped.)"""
    import torch

    def non_finite(value: torch.Tensor) -> bool:
        return value.is_floating_point() and not value.isfinite().all()

    if path.endswith(".safetensors"):
        with safe_open(path, framework="pt") as f:
            bad = next((key for key in f.keys() if non_finite(f.get_tensor(key))), None)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        bad = next((key for key, value in state.items() if non_finite(value)), None)
    if bad is not None:
        raise CheckpointError(
            f"The checkpoint file {path} holds non-finite values (NaN or inf) in {bad}: it was damaged, or written "
            "by a run that diverged. Resume from an earlier checkpoint-* folder."
        )


def _weight_files(checkpoint: str, weights: str) -> list[str]:
    """The files holding the weights: the file itself, or a sharded index's shards."""
    path = os.path.join(checkpoint, weights)
    if not weights.endswith(".index.json"):
        return [path]
    shards = read_json(path, {"weight_map": dict})["weight_map"].values()
    return [os.path.join(checkpoint, shard) for shard in sorted(set(shards))]


def _check_marked_sizes(checkpoint: str, marker: dict[str, Any]) -> None:
    """Each file the completion marker lists still has the size it had when the checkpoint was completed (a missing
    one is left to the checks of what a resume needs: some only make it inexact, and warn)."""
    for name, size in marker["files"].items():
        path = os.path.join(checkpoint, name)
        if os.path.isfile(path) and os.path.getsize(path) != size:
            raise CheckpointError(
                f"The checkpoint file {path} is {os.path.getsize(path)} bytes, but was {size} bytes when the "
                "checkpoint was completed: it was truncated or replaced since. Resume from an earlier checkpoint-* "
                "folder, or restore it."
            )


def _check_required(checkpoint: str, present: set[str]) -> list[str]:
    """The weights files present; CheckpointError when the weights, optimizer, scheduler or trainer state are not."""
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
    return weights


def check_checkpoint(checkpoint: str, process_index: int = 0, world_size: int = 1) -> None:
    """Stop before resuming from `checkpoint` if a file an exact resume reads is missing, corrupt or non-finite.

    Missing weights, trainer state, optimizer or scheduler: CheckpointError naming the file (to start from the
    weights alone, fine-tune them instead: `--model_name_or_path <checkpoint>` gives a fresh optimizer and schedule).
    Missing RNG state: a warning (the run continues, but not bit-exactly). Every file a resume reads that is present
    is checked (JSON parsed, safetensors headers, torch zip CRCs, the completion marker's sizes), and the weights
    (EMA included) are checked finite.
    """
    present = set(os.listdir(checkpoint))
    weights = _check_required(checkpoint, present)
    marker = read_marker(checkpoint)
    if marker is not None:
        _check_marked_sizes(checkpoint, marker)
    rng_name = f"rng_state_{process_index}.pth" if world_size > 1 else "rng_state.pth"
    if rng_name not in present:
        logger.warning(
            "%s has no %s: the run resumes, but drop path and Mixup/CutMix draw other random numbers than the "
            "uninterrupted run would have, so it is no longer bit-exact.", checkpoint, rng_name,
        )
    read = ["config.json", *REQUIRED_STATE, rng_name, "scaler.pt", STREAM_STATE_NAME]
    for name in read:
        if name in present:
            _check_readable(os.path.join(checkpoint, name))
    read_stream_state(checkpoint)
    weight_files = [path for name in weights for path in _weight_files(checkpoint, name)]
    if EMA_WEIGHTS_NAME in present:
        weight_files.append(os.path.join(checkpoint, EMA_WEIGHTS_NAME))
    for path in weight_files:
        _check_readable(path)
        _check_finite(path)


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
        saved = set(read_json(index, {"weight_map": dict})["weight_map"])
    else:
        return
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - saved), sorted(saved - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"The checkpoint {checkpoint} does not match the model: missing keys {missing}, unexpected keys "
            f"{unexpected}. Resume with the same model class and configuration that saved it."
        )


__all__ = [
    "CHECKPOINT_MARKER", "CheckpointError", "check_checkpoint", "check_checkpoint_keys", "mark_complete", "read_marker",
    "read_stream_state",
]

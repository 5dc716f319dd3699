"""Room on disk for a run's outputs, and write errors that say which file and why.

Before any image is read (examples/distill.py's `check_before_data`; `DistillationTrainer.train` for Python users):
the output folder must be creatable and writable, and its file system must have room for one checkpoint and the
final model. A checkpoint holds the weights, AdamW's two moments per weight (in the weights' dtype), the EMA weights
when on, and small files (configs, the model's code, RNG states, trainer state: 64 KB for a tiny student here).

While writing, the errors say little: torch's writer raises "[enforce fail at inline_container.cc:672] . unexpected
pos ..." on a full disk, safetensors "Error while serializing: I/O error: No space left on device", and a JSON dump
"[Errno 28] No space left on device" without the file. `describe_write_error` turns them into one sentence naming
the file and the cause ("no space left on device", with the free space, or the OS error).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from safetensors import SafetensorError
from torch import nn

logger = logging.getLogger(__name__)

# Configs, model code, RNG and trainer state, model card: 64 KB in a checkpoint, 107 KB beside the final model, both
# measured for the tiny student of tests/test_run_folder.py.
SMALL_FILES_BYTES = 128 * 1024
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("No space left on device", "os error 28", "Disk quota exceeded")


class OutputWriteError(OSError):
    """A run's output (its folder, a checkpoint, the model) could not be written; the message says which and why."""


def parameter_bytes(model_or_config: Any) -> int:
    """Bytes of a model's parameters; a config is built on the meta device (no memory, no initialisation)."""
    model = model_or_config
    if not isinstance(model, nn.Module):
        import torch

        from ..models.modeling_deit import DeiTForImageClassification

        with torch.device("meta"):
            model = DeiTForImageClassification(model_or_config)
    return sum(param.numel() * param.element_size() for param in model.parameters())


def checkpoint_bytes(weights_bytes: int, ema: bool = False) -> int:
    """About how much one checkpoint takes: weights + AdamW's two moments (+ EMA weights) + the small files."""
    return weights_bytes * (3 + int(ema)) + SMALL_FILES_BYTES


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _existing(path: str) -> str:
    """`path`, or its nearest existing parent (another process may not have created it yet)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_writable(output_dir: str) -> None:
    """Create `output_dir` if needed and write a probe file in it; OutputWriteError naming it otherwise."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir, prefix="_hf_deit_probe"):
            pass
    except OSError as error:
        raise OutputWriteError(
            f"--output_dir {output_dir} cannot be written ({type(error).__name__}: {error}); nothing was read or "
            "trained. Give a folder this user can create and write to, on a file system that is not read-only."
        ) from error


def check_room(args: Any, weights_bytes: int) -> None:
    """OutputWriteError when the file system of `args.output_dir` lacks room for one checkpoint (unless the run
    saves none) and the final model of a student whose parameters take `weights_bytes`."""
    ema, checkpoints = args.use_model_ema, args.save_strategy != "no"
    needed = (checkpoint_bytes(weights_bytes, ema) if checkpoints else 0) + weights_bytes + SMALL_FILES_BYTES
    free = shutil.disk_usage(_existing(args.output_dir)).free
    if free < needed:
        what = ("one checkpoint (weights + AdamW moments" + (" + EMA" if ema else "") + ") and ") if checkpoints else ""
        raise OutputWriteError(
            f"--output_dir {args.output_dir} has {_size(free)} free, but {what}the final model of this student need "
            f"about {_size(needed)}; no image was decoded, nothing was trained. Free some space or give an "
            "--output_dir on a larger disk."
        )


def _newest_file(folder: str) -> str | None:
    paths = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    return max(paths, key=os.path.getmtime, default=None)


def _unfinished_weights(folder: str) -> str | None:
    """safetensors deletes a weights file it could not finish, so the newest file is not the one that failed: the
    weights file a checkpoint should hold but does not is (the model's first, then the EMA's, the order of saving)."""
    for name in ("model.safetensors", "model_ema.safetensors"):
        if not os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def is_write_error(error: BaseException) -> bool:
    """An error that a full or failing disk gives while a file is written (the checks above name the rest)."""
    if isinstance(error, OSError) and error.errno in (*_NO_SPACE, errno.EROFS, errno.EIO):
        return True
    return isinstance(error, SafetensorError | RuntimeError | OSError) and any(
        text in str(error) for text in _NO_SPACE_TEXT
    )


def describe_write_error(error: BaseException, folder: str, needed: int) -> str:
    """"<cause>; the file being written: <file>" for an error raised while writing into `folder`.

    The cause is "no space left on device" when the error or the file system says so (less free than `needed`,
    the size of what was being written), else the error itself. The file is the error's own, else for safetensors the
    weights file missing from `folder`, else the newest in `folder`: files are written one after another, so the
    newest is the one cut short."""
    free = shutil.disk_usage(_existing(folder)).free
    full = getattr(error, "errno", None) in _NO_SPACE or any(text in str(error) for text in _NO_SPACE_TEXT)
    if full or free < needed:
        cause = f"no space left on device ({_size(free)} free there; this needs about {_size(needed)})"
    else:
        cause = f"{type(error).__name__}: {error}"
    path = getattr(error, "filename", None)
    if path is None and isinstance(error, SafetensorError):
        path = _unfinished_weights(folder)
    path = path or _newest_file(folder)
    return f"{cause}; the file being written: {path or folder} ({type(error).__name__}: {error})"


@contextlib.contextmanager
def write_errors_named(folder: str, weights_bytes: int, what: str) -> Iterator[None]:
    """Around a save outside training (the final model): a write error becomes OutputWriteError naming the file."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        if isinstance(error, OutputWriteError):
            raise
        detail = describe_write_error(error, folder, weights_bytes + SMALL_FILES_BYTES)
        message = f"Writing {what} to {folder} failed: {detail}. Free some space and save again."
        raise OutputWriteError(message) from error


__all__ = [
    "OutputWriteError", "check_room", "check_writable", "checkpoint_bytes", "describe_write_error", "is_write_error",
    "parameter_bytes", "write_errors_named",
]

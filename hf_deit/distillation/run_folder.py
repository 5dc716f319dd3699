"""An output folder belongs to one run.

transformers 5's Trainer writes into whatever `--output_dir` holds: two runs at once interleave their checkpoints, a
rerun silently overwrites a finished model, a rerun with fewer steps leaves the old run's later checkpoints for
`--resume_from_checkpoint True` to continue, and a checkpoint cut short by a full disk or a kill is resumed from.
Here, in the process that writes the folder (rank 0):

  * a lock (folder_lock.py: an flock on `_hf_deit_run.lock`) is held while a run may write the folder: a second run
    is refused with the holder's pid and command. The OS drops the lock when its holder dies (kill -9 included); the
    next run takes it over with a warning naming the dead holder.
  * a run record (`_hf_deit_run.json`: run id, command, finished or not) says whose the folder's files are. A
    folder holding a run's outputs (RUN_OUTPUTS) is refused unless the run resumes it (`--resume_from_checkpoint`)
    or the user says `--overwrite_output_dir`, which deletes those outputs first.
  * each checkpoint gets a completion marker holding the run id (checkpoints.CHECKPOINT_MARKER), written by
    `CompleteCheckpointCallback` after every other file of it. `--resume_from_checkpoint True` picks the newest
    checkpoint marked with this folder's run id, and moves newer unmarked (incomplete) ones aside, naming them.
  * a write error while a checkpoint is written names the file and the cause, and removes the incomplete folder.

Why a marker and not a temporary folder renamed into place: transformers' `Trainer._save_checkpoint` writes straight
into `checkpoint-N` (public `save_model` first, then optimizer, scheduler, RNG and trainer state, then rotation),
and this package overrides no more private Trainer methods than it must. What that gives and does not give is in
docs/recipe.md ("Resuming"). Names starting with "_" are never uploaded by `Trainer.push_to_hub`.
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from safetensors import SafetensorError
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .checkpoints import CheckpointError, mark_complete, read_json, read_marker
from .folder_lock import RunFolderError, command, lock, now, unlock
from .storage import (
    OutputWriteError, check_room, check_writable, checkpoint_bytes, describe_write_error, is_write_error,
    parameter_bytes,
)

logger = logging.getLogger(__name__)

RUN_RECORD = "_hf_deit_run.json"
INCOMPLETE_PREFIX = "_incomplete-"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# What a run leaves at the top of its output_dir (the Trainer's checkpoints and state, save_model with the model's
# code, the model card, examples/distill.py's metrics). A folder holding any of them holds a run's results; they
# are what --overwrite_output_dir deletes (with the code files that config.json's auto_map names).
RUN_OUTPUTS = (
    f"{PREFIX_CHECKPOINT_DIR}-*", f"{INCOMPLETE_PREFIX}{PREFIX_CHECKPOINT_DIR}-*", RUN_RECORD, "trainer_state.json",
    "training_args.bin", "config.json", "preprocessor_config.json", "model.safetensors", "model-*-of-*.safetensors",
    "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json", "*_results.json",
    "README.md", "training_curves.png",
)


@dataclass
class RunClaim:
    """This process' hold on an output folder: the run's id, the checkpoint it resumes from, and (in the process
    that writes the folder) the lock's file descriptor."""

    output_dir: str
    run_id: str
    checkpoint: str | None = None
    lock_fd: int | None = None
    pid: int = 0


_CLAIMS: dict[str, RunClaim] = {}  # realpath(output_dir) -> the claim this process holds on it


# --- the run record and the folder's outputs ------------------------------------------------------------------------
def read_run_record(output_dir: str) -> dict[str, Any] | None:
    path = os.path.join(output_dir, RUN_RECORD)
    if not os.path.isfile(path):
        return None
    try:
        return read_json(path, {"run_id": str})
    except CheckpointError as error:
        raise RunFolderError(
            f"The run record {path} is unreadable ({error.__cause__ or error}). Delete it (the folder then counts as "
            "another program's), or start afresh with --overwrite_output_dir."
        ) from error


def _write_run_record(output_dir: str, record: dict[str, Any]) -> None:
    temporary = os.path.join(output_dir, f".{RUN_RECORD}.tmp")
    with open(temporary, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(temporary, os.path.join(output_dir, RUN_RECORD))


def previous_outputs(output_dir: str) -> list[str]:
    """The names in `output_dir` that a run wrote (RUN_OUTPUTS), the run record itself left out."""
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    return sorted(n for n in names if n != RUN_RECORD and any(fnmatch.fnmatch(n, p) for p in RUN_OUTPUTS))


def _model_code_files(output_dir: str) -> list[str]:
    """The code files save_pretrained copied beside config.json (the modules its auto_map names)."""
    files = set()
    for name in ("config.json", "preprocessor_config.json"):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            with open(os.path.join(output_dir, name)) as f:
                auto_map = json.load(f).get("auto_map") or {}
            for target in auto_map.values():
                for reference in target if isinstance(target, list) else [target]:
                    if reference:
                        files.add(reference.split("--")[-1].rsplit(".", 1)[0] + ".py")
    return sorted(name for name in files if os.path.isfile(os.path.join(output_dir, name)))


def _delete_outputs(output_dir: str) -> None:
    doomed = _model_code_files(output_dir) + previous_outputs(output_dir) + [RUN_RECORD]
    for name in doomed:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
    logger.warning("--overwrite_output_dir: deleted the previous run's outputs from %s: %s", output_dir, doomed)


def _refusal(output_dir: str, record: dict[str, Any] | None, outputs: list[str]) -> RunFolderError:
    shown = ", ".join(outputs[:6]) + (f" and {len(outputs) - 6} more" if len(outputs) > 6 else "")
    if record is None:
        whose = "the outputs of another run (no run record: written by another program or an older hf_deit)"
    else:
        state = f"finished at step {record.get('global_step')}" if record.get("finished") else "not finished"
        whose = f"the outputs of run {record['run_id']} ({state}; command: {record.get('command')})"
    return RunFolderError(
        f"--output_dir {output_dir} holds {whose}: {shown}. A new run there would overwrite or mix with them. "
        "Continue that run with --resume_from_checkpoint True, start afresh with --overwrite_output_dir (deletes "
        "them), or give another --output_dir."
    )


# --- which checkpoint a run resumes from ----------------------------------------------------------------------------
def checkpoint_folders(output_dir: str) -> list[str]:
    """The `checkpoint-N` folders of `output_dir`, newest (highest N) first."""
    names = [n for n in os.listdir(output_dir) if _CHECKPOINT.match(n) and os.path.isdir(os.path.join(output_dir, n))]
    return [os.path.join(output_dir, n) for n in sorted(names, key=lambda n: -int(_CHECKPOINT.match(n)[1]))]


def _marker_or_none(checkpoint: str) -> dict[str, Any] | None:
    try:
        return read_marker(checkpoint)
    except CheckpointError as error:  # a marker is renamed into place whole: a broken one was changed since
        logger.warning("%s: counted as incomplete.", error)
        return None


def newest_complete(output_dir: str, run_id: str) -> tuple[str | None, list[str], list[str]]:
    """(newest checkpoint marked complete by run `run_id`, newer unmarked ones, newer ones of other runs)."""
    incomplete, foreign = [], []
    for folder in checkpoint_folders(output_dir):
        marker = _marker_or_none(folder)
        if marker is None:
            incomplete.append(folder)
        elif marker["run_id"] != run_id:
            foreign.append(folder)
        else:
            return folder, incomplete, foreign
    return None, incomplete, foreign


def _set_aside(folder: str) -> str:
    target = os.path.join(os.path.dirname(folder), INCOMPLETE_PREFIX + os.path.basename(folder))
    if os.path.exists(target):
        shutil.rmtree(target)
    os.rename(folder, target)
    return target


def resume_checkpoint(output_dir: str, record: dict[str, Any] | None) -> tuple[str, str]:
    """`--resume_from_checkpoint True` -> (run id, checkpoint): the newest checkpoint of the folder's run that is
    complete. Newer incomplete ones are moved aside (`_incomplete-checkpoint-N`, never resumed nor rotated by the
    Trainer) and named; checkpoints of other runs are skipped and named."""
    folders = checkpoint_folders(output_dir) if os.path.isdir(output_dir) else []
    if record is None:  # written before run records, or by another program: the Trainer's rule (the newest)
        if not folders:
            raise CheckpointError(
                f"--resume_from_checkpoint True: no checkpoint-* folder in output_dir {output_dir!r}. Give the "
                "output_dir the interrupted run wrote to, a checkpoint path, or drop the flag to start afresh."
            )
        marker = _marker_or_none(folders[0])
        logger.warning("%s has no run record (%s): resuming from the newest checkpoint, %s, whose files are checked "
                       "one by one.", output_dir, RUN_RECORD, folders[0])
        return (marker["run_id"] if marker else uuid.uuid4().hex), folders[0]
    run_id = record["run_id"]
    chosen, incomplete, foreign = newest_complete(output_dir, run_id)
    for folder in incomplete:
        logger.warning("%s is incomplete (no completion marker: its run stopped while writing it): skipped, and moved "
                       "to %s.", folder, _set_aside(folder))
    if foreign:
        logger.warning("Skipped %s: written by other runs than %s's (%s). Move them out of %s.",
                       [os.path.basename(f) for f in foreign], output_dir, run_id, output_dir)
    if chosen is None:
        raise CheckpointError(
            f"--resume_from_checkpoint True: output_dir {output_dir} holds run {run_id} but no complete checkpoint "
            f"of it{' (incomplete ones were moved aside, see above)' if incomplete else ''}. Start afresh with "
            "--overwrite_output_dir, or give a checkpoint path."
        )
    logger.warning("Resuming run %s from %s.", run_id, chosen)
    return run_id, chosen


def _resume_value(value: str | bool | None) -> str | bool | None:
    """`--resume_from_checkpoint` as a command line gives it ("True"/"False") -> True, None or a path."""
    if isinstance(value, str) and not os.path.isdir(value) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if value is None or value is False:
        return None
    if value is not True and not os.path.isdir(value):
        raise CheckpointError(
            f"--resume_from_checkpoint {value!r} is not a directory: give a checkpoint-* folder written by a previous "
            "run, or True for the newest complete one in output_dir."
        )
    return value


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _decide(output_dir: str, resume: str | bool | None, overwrite: bool) -> tuple[str, str | None]:
    """(run id, checkpoint to resume from) for a run starting in `output_dir`; refuses another run's folder."""
    inside = isinstance(resume, str) and _same_folder(os.path.dirname(os.path.normpath(resume)), output_dir)
    if overwrite and (resume is True or inside):
        raise RunFolderError(
            "--overwrite_output_dir deletes the checkpoints that --resume_from_checkpoint would continue from "
            f"({output_dir}): give one of the two."
        )
    record = read_run_record(output_dir)
    if resume is True:
        return resume_checkpoint(output_dir, record)
    own = record["run_id"] if record else None
    run_id = uuid.uuid4().hex
    if isinstance(resume, str):
        marker = read_marker(resume)  # CheckpointError naming it when it is garbage
        run_id = marker["run_id"] if marker else (own if inside and own else run_id)
        if marker is None:
            logger.warning("%s has no completion marker (its run stopped while writing it, or it was written "
                           "without hf_deit): its files are checked one by one before resuming.", resume)
    outputs = previous_outputs(output_dir)
    same_run = isinstance(resume, str) and own == run_id  # continuing the folder's run from a copy of its checkpoint
    if outputs and not inside and not same_run:
        if not overwrite:
            raise _refusal(output_dir, record, outputs)
        _delete_outputs(output_dir)
    return run_id, resume if isinstance(resume, str) else None


# --- claiming and releasing a folder --------------------------------------------------------------------------------
def _claim(args: Any, resume: str | bool | None, weights_bytes: int | None) -> RunClaim:
    """In the process that writes the folder: writable, locked, its outputs this run's, room for a checkpoint."""
    output_dir = args.output_dir
    check_writable(output_dir)
    fd = lock(output_dir)
    try:
        run_id, checkpoint = _decide(output_dir, _resume_value(resume), args.overwrite_output_dir)
        if weights_bytes is not None:
            check_room(args, weights_bytes)
        previous = read_run_record(output_dir) or {}
        started = previous.get("started") if previous.get("run_id") == run_id else None
        _write_run_record(output_dir, {"run_id": run_id, "started": started or now(), "command": command(),
                                       "finished": False})
    except BaseException:
        unlock(output_dir, fd)
        raise
    return RunClaim(output_dir, run_id, checkpoint, fd, os.getpid())


def claim_output_dir(args: Any, resume_from_checkpoint: str | bool | None = None,
                     weights_bytes: int | None = None) -> RunClaim:
    """Make `args.output_dir` this run's (see the module docstring) and decide the checkpoint it resumes from.

    Process 0 decides and holds the lock; the other processes receive its decision (or its error), so that all
    resume from the same checkpoint or all stop. Claiming again in this process returns the same claim (so
    examples/distill.py can claim before reading the data and the trainer again in `train`).
    `weights_bytes`: the student's parameters in bytes, to check there is room for a checkpoint (None: not checked).
    """
    key = os.path.realpath(args.output_dir)
    if key in _CLAIMS:
        return _CLAIMS[key]
    box: list[Any] = [None]
    if args.process_index == 0:
        try:
            box[0] = _claim(args, resume_from_checkpoint, weights_bytes)
        except Exception as error:  # every process must stop with it, or the others wait for process 0 forever
            box[0] = error
    import torch.distributed as dist

    if args.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], Exception):
        raise box[0]
    claim = box[0]
    if args.process_index != 0:
        claim = RunClaim(claim.output_dir, claim.run_id, claim.checkpoint, None, os.getpid())
    _CLAIMS[key] = claim
    return claim


def release(claim: RunClaim, finished: bool = False, global_step: int | None = None) -> None:
    """End this process' hold on the folder: record whether the run finished, and drop the lock."""
    _CLAIMS.pop(os.path.realpath(claim.output_dir), None)
    if claim.lock_fd is None or claim.pid != os.getpid():  # not the writer, or a forked child (DataLoader worker)
        return
    if finished:
        with contextlib.suppress(OSError, RunFolderError):
            record = read_run_record(claim.output_dir) or {"run_id": claim.run_id}
            _write_run_record(claim.output_dir, {**record, "finished": True, "global_step": global_step})
    unlock(claim.output_dir, claim.lock_fd)
    claim.lock_fd = None


@atexit.register
def _release_all() -> None:  # a claim never trained (e.g. the data failed to load) is released at exit
    for claim in list(_CLAIMS.values()):
        release(claim)


# --- while training -------------------------------------------------------------------------------------------------
class CompleteCheckpointCallback(TrainerCallback):
    """Marks each checkpoint complete, with the run id, once every file of it is written: transformers' files (its
    `on_save` comes after `_save_checkpoint` has written and rotated) and those of the callbacks before this one
    (EMA weights, a stream's position). `attach` keeps it the last callback."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if args.world_size > 1:  # every process has written its rng_state_<rank>.pth
            self.trainer.accelerator.wait_for_everyone()
        claim = self.trainer.run_claim
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if args.should_save and claim is not None and os.path.isdir(folder):
            mark_complete(folder, claim.run_id, state.global_step)


def attach(trainer: Any) -> None:
    """Put CompleteCheckpointCallback last among the trainer's callbacks (callbacks added after the trainer was
    built would otherwise write into checkpoints already marked complete)."""
    trainer.callback_handler.remove_callback(CompleteCheckpointCallback)
    trainer.add_callback(CompleteCheckpointCallback(trainer))


def _checkpoint_write_error(trainer: Any, claim: RunClaim, error: BaseException) -> OutputWriteError | None:
    """A write error while checkpoint-<step> was written -> OutputWriteError naming the file and the cause, the
    incomplete folder removed (it holds the space that ran out); None for an error that is not a write error."""
    step = trainer.state.global_step
    folder = os.path.join(claim.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
    writing = os.path.isdir(folder) and _marker_or_none(folder) is None
    if not writing and not is_write_error(error):
        return None
    needed = checkpoint_bytes(parameter_bytes(trainer.model), trainer.args.use_model_ema)
    detail = describe_write_error(error, folder if writing else claim.output_dir, needed)
    after = ""
    if writing and claim.lock_fd is not None:
        shutil.rmtree(folder, ignore_errors=True)
        newest = newest_complete(claim.output_dir, claim.run_id)[0]
        after = (f" The incomplete {os.path.basename(folder)} was removed; the newest complete checkpoint is "
                 f"{os.path.basename(newest) if newest else 'none'}.")
    what = os.path.basename(folder) if writing else f"into {claim.output_dir}"
    return OutputWriteError(
        f"Writing {what} failed: {detail}.{after} Free some space (or lower --save_total_limit, or give an "
        "--output_dir on a larger disk) and continue with --resume_from_checkpoint True."
    )


@contextlib.contextmanager
def training(trainer: Any, claim: RunClaim) -> Iterator[None]:
    """Around `Trainer.train`: write errors named, the run recorded as finished when it returns, the lock dropped."""
    finished = False
    try:
        yield
        finished = True
    except (OSError, RuntimeError, SafetensorError) as error:
        named = None if isinstance(error, OutputWriteError) else _checkpoint_write_error(trainer, claim, error)
        if named is None:
            raise
        raise named from error
    finally:
        release(claim, finished, trainer.state.global_step)


__all__ = [
    "CompleteCheckpointCallback", "RUN_OUTPUTS", "RUN_RECORD", "RunClaim", "RunFolderError", "attach",
    "claim_output_dir", "newest_complete", "read_run_record", "release", "resume_checkpoint", "training",
]

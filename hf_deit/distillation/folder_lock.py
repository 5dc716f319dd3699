"""The lock that keeps two runs out of one output folder (hf_deit.distillation.run_folder).

An `flock` on `_hf_deit_run.lock` in the folder, held by the process that writes it. The file says who holds it
(pid, host, command, since when) for the refusal's message. The OS drops an flock when its holder dies, kill -9
included, so a lock file left behind is taken over, with a warning naming the dead holder; nothing depends on
guessing whether a pid is alive. Releasing unlinks the file before closing it, and a locker checks that the file it
locked is still the one at the path, so two runs never both hold it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import socket
import sys
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_NAME = "_hf_deit_run.lock"  # "_": never uploaded by Trainer.push_to_hub


class RunFolderError(RuntimeError):
    """The output folder cannot be used by this run as it is: in use, or holding another run's outputs."""


class FolderInUseError(RunFolderError):
    """Another live process holds the folder's lock."""


def command() -> str:
    return " ".join(sys.argv) or sys.executable


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _read_holder(fd: int) -> dict[str, Any] | None:
    data = os.pread(fd, 1 << 16, 0)
    try:
        holder = json.loads(data) if data.strip() else None
    except ValueError:
        return {"pid": "?", "command": data[:200].decode(errors="replace")}
    return holder if isinstance(holder, dict) else None


def _open_locked(path: str) -> int:
    """An fd on `path` holding its exclusive flock; FolderInUseError naming the holder when another process has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd) or {}
            os.close(fd)
            raise FolderInUseError(
                f"--output_dir {os.path.dirname(path)} is in use by another run: pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, command: {holder.get('command', '?')} (since {holder.get('since', '?')}). "
                "Two runs writing one folder would mix their checkpoints: wait for that run to end, stop it, or give "
                "another --output_dir."
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)  # the holder removed the file between our open and our lock: lock the new one


def lock(output_dir: str) -> int | None:
    """An fd holding `output_dir`'s lock, its file naming this process; None where files cannot be locked (a warning
    says so). FolderInUseError when a live process holds it."""
    if fcntl is None:
        logger.warning("No flock on this platform: two runs on --output_dir %s are not kept apart.", output_dir)
        return None
    path = os.path.join(output_dir, LOCK_NAME)
    try:
        fd = _open_locked(path)
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        logger.warning("The file system of %s cannot lock files (%s): two runs there are not kept apart.", path, error)
        return None
    previous = _read_holder(fd)
    if previous and previous.get("pid") != os.getpid():
        logger.warning(
            "--output_dir %s: taking over the lock left by pid %s (command: %s, since %s), which is no longer running "
            "(killed or crashed).", output_dir, previous.get("pid"), previous.get("command"), previous.get("since"),
        )
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command(), "since": now()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return fd


def unlock(output_dir: str, fd: int | None) -> None:
    """Drop the lock that `lock` returned, removing its file."""
    if fd is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(output_dir, LOCK_NAME))  # before closing: a waiting opener then sees another inode
    os.close(fd)


__all__ = ["FolderInUseError", "LOCK_NAME", "RunFolderError", "command", "lock", "now", "unlock"]

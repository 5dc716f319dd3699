"""Count host syncs: calls that turn a tensor's value into a Python object (`Tensor.item`, `__bool__`, `tolist`,
`__float__`, `__int__`). On a GPU each one waits until every queued kernel has finished, so the host stops running
ahead of the device; on a CPU the same Python calls happen, so a count made here is the count a GPU run pays.

    from benchmarks.host_syncs import count_host_syncs

    with count_host_syncs() as syncs:
        trainer.train()
    print(syncs.total, dict(syncs.counts), syncs.sites.most_common(3))

The methods are replaced on `torch.Tensor` by counting wrappers for the block and put back afterwards (also on an
error). Python code that reaches them indirectly is counted too (`f"{t:.3f}"` calls `item`). Calls from C++ (e.g. a
kernel reading a size from a tensor) are not seen: on CUDA, `torch.cuda.set_sync_debug_mode("warn")` sees those too
(benchmarks/gpu_check.py reports both). `device_type="cuda"` counts only tensors on that device.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch

SYNC_METHODS = ("item", "__bool__", "tolist", "__float__", "__int__")
_TORCH_DIR = os.path.dirname(torch.__file__)


class HostSyncCounter:
    """Counts, per method and per calling site, the sync calls made between `start()` and `stop()`.

    `counts`: method name -> calls. `sites`: "path:line (function) method" of the first frame outside torch and this
    module -> calls, which says who synced.
    """

    def __init__(self, device_type: str | None = None, methods: tuple[str, ...] = SYNC_METHODS) -> None:
        self.device_type = device_type
        self.methods = methods
        self.counts: Counter[str] = Counter()
        self.sites: Counter[str] = Counter()
        self._saved: dict[str, object] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _record(self, method: str) -> None:
        self.counts[method] += 1
        frame = sys._getframe(2)  # the caller of the wrapper
        while frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIR):
            frame = frame.f_back
        code = frame.f_code if frame is not None else None
        where = "?" if code is None else f"{short_path(code.co_filename)}:{frame.f_lineno} ({code.co_name})"
        self.sites[f"{where} {method}"] += 1

    def _wrap(self, method: str, original):
        def counted(tensor, *args, **kwargs):
            if self.device_type is None or tensor.device.type == self.device_type:
                self._record(method)
            return original(tensor, *args, **kwargs)

        counted.__name__ = getattr(original, "__name__", method)
        return counted

    def start(self) -> HostSyncCounter:
        if self._saved:
            raise RuntimeError("this HostSyncCounter is already counting")
        for method in self.methods:
            # torch.Tensor inherits most of these from the C base class: remember whether it had its own
            self._saved[method] = torch.Tensor.__dict__.get(method)
            setattr(torch.Tensor, method, self._wrap(method, getattr(torch.Tensor, method)))
        return self

    def stop(self) -> None:
        for method, own in self._saved.items():
            if own is None:
                delattr(torch.Tensor, method)
            else:
                setattr(torch.Tensor, method, own)
        self._saved = {}

    def per_step(self, steps: int) -> dict[str, float]:
        return {method: calls / steps for method, calls in sorted(self.counts.items())}


@contextmanager
def count_host_syncs(
    device_type: str | None = None, methods: tuple[str, ...] = SYNC_METHODS
) -> Iterator[HostSyncCounter]:
    """Count the sync calls made inside the block (see the module docstring)."""
    counter = HostSyncCounter(device_type, methods).start()
    try:
        yield counter
    finally:
        counter.stop()


def short_path(path: str) -> str:
    """site-packages/transformers/trainer.py -> transformers/trainer.py; our files relative to the repository."""
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        if marker in path:
            return path.split(marker, 1)[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.relpath(path, root) if path.startswith(root) else path


__all__ = ["SYNC_METHODS", "HostSyncCounter", "count_host_syncs", "short_path"]

"""What an epoch is: the DeiT paper's repeated-augmentation epoch, the one rule every part of hf_deit counts with.

The official code (facebookresearch/deit samplers.py, `RASampler`; timm's `RepeatAugSampler` is the same sampler)
draws a random permutation of the dataset each epoch, repeats every index `num_repeats` (3) times in a row, deals the
result round-robin to the ranks and keeps floor(N // 256 * 256 / world) indices on each rank; its DataLoader drops
the last partial batch. So an epoch is about len(dataset) samples over all ranks, not 3x: about a third of the
images, each 3 times (on 3 different ranks when there are at least 3). ImageNet-1k (N = 1,281,167) on 8 ranks:
160,128 samples per rank, 1,251 steps of 128, 375,300 steps in 300 epochs.

Map-style data gets that epoch from the sampler (hf_deit.data.RepeatAugBatchOrder). A stream has no sampler: a pass
over a training stream draws a random 1/repeated_aug of what it reads, each drawn example repeated_aug times
(hf_deit.data.prepare_dataset), so a pass is about len(dataset) samples; its exact length comes from the stream's
size N (`stream_size`: datasets' split info, which `build_datasets` fills in from the source's metadata or
`--train_dataset_size`): `EpochLoader` cuts the stream's loader into epochs of `batches_per_epoch` batches, which
gives the Trainer a length to count epochs, warmup and resume positions with.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

# RASampler rounds the dataset size down to a multiple of this before dividing it among the ranks.
RA_SIZE_ROUND = 256
# The datasets epoch of a stream's extra passes inside one epoch (EpochLoader): far from every epoch's first pass.
LAP_EPOCH_STRIDE = 1 << 32


def samples_per_epoch(dataset_size: int, world_size: int) -> int:
    """The number of samples ONE rank sees per epoch: the paper's RASampler count, floor(N // 256 * 256 / world).

    Datasets of fewer than 256 examples, where RASampler would yield nothing, get the fallback of timm's
    `RepeatAugSampler`: ceil(N / world) per rank, so that an epoch is still about len(dataset) samples over all
    ranks (rounded up instead of down). The result is `len(timm.data.RepeatAugSampler(dataset, world_size, rank))`
    for every size and rank, i.e. what hf_deit's map-style sampler yields (tests/test_epoch.py). The per-rank
    DataLoader then keeps `samples_per_epoch(...) // per_device_batch_size` full batches (drop_last, as the paper).
    This is the epoch with repeated augmentation (`repeated_aug` > 1, the default); with `repeated_aug=1` an epoch
    shows every image once (the paper's DistributedSampler).
    """
    if dataset_size < 1 or world_size < 1:
        raise ValueError(f"dataset_size and world_size must be >= 1, got {dataset_size} and {world_size}")
    if dataset_size >= RA_SIZE_ROUND:
        return dataset_size // RA_SIZE_ROUND * RA_SIZE_ROUND // world_size
    return -(-dataset_size // world_size)


def batches_per_epoch(dataset_size: int, world_size: int, batch_size: int, repeated_aug: int) -> int:
    """Full batches per rank per epoch (the paper's drop_last): `samples_per_epoch` with repeated augmentation,
    ceil(N / world) samples (every image once, as the paper's DistributedSampler) without."""
    if repeated_aug > 1:
        samples = samples_per_epoch(dataset_size, world_size)
    else:
        samples = -(-dataset_size // world_size)
    return samples // batch_size


def stream_size(dataset: Any) -> int | None:
    """The number of examples of a stream's split as datasets records it (`info.splits`): from the Hub's metadata,
    or written by `build_datasets` (`record_stream_size`). None when unknown."""
    splits = getattr(getattr(dataset, "info", None), "splits", None)
    if not splits:
        return None
    name = str(dataset.split) if getattr(dataset, "split", None) is not None else None
    if name in splits:
        info = splits[name]
    elif len(splits) == 1:
        info = next(iter(splits.values()))
    else:
        return None
    return info.num_examples or None


def record_stream_size(dataset: Any, size: int) -> None:
    """Write `size` as the number of examples of the stream's split (datasets' `info.splits`), which later
    datasets operations copy along."""
    from datasets import SplitInfo
    from datasets.splits import SplitDict

    name = str(dataset.split) if dataset.split is not None else "train"
    dataset.info.splits = SplitDict({name: SplitInfo(name=name, num_examples=size)})


class EpochLoader:
    """A DataLoader over a stream, cut into epochs of `num_batches` batches: it gives the stream the length it lacks.

    An epoch starts a new pass over the stream (`set_epoch(epoch)`: datasets reshuffles and draws anew); a pass that
    ends inside the epoch (a process whose shards hold fewer examples than the epoch takes) is followed by another,
    under its own datasets epoch `epoch + lap * LAP_EPOCH_STRIDE`, until the epoch has its batches. `skip` batches
    are read and dropped first (a resumed epoch: a stream cannot seek). Everything else is the wrapped loader's.
    """

    def __init__(self, loader: Any, num_batches: int, skip: int = 0) -> None:
        if num_batches < 1:
            raise ValueError(f"an epoch needs at least one batch, got {num_batches}")
        self.loader = loader
        self.num_batches = num_batches
        self.skip = skip
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_batches - self.skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def _batches(self) -> Iterator[Any]:
        """The epoch's passes one after the other, for ever."""
        for lap in itertools.count():
            self.loader.set_epoch(self.epoch + lap * LAP_EPOCH_STRIDE)
            empty = True
            for batch in self.loader:
                empty = False
                yield batch
            if empty:
                raise ValueError("The training stream gave no batch in a whole pass: it holds no usable example.")

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self._batches(), self.skip, self.num_batches)

    def skipping(self, num_batches: int) -> EpochLoader:
        """The same epochs, the next one starting `num_batches` in (read and dropped, as accelerate's
        `skip_first_batches` does)."""
        resumed = EpochLoader(self.loader, self.num_batches, skip=num_batches)
        resumed.epoch = self.epoch
        return resumed

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (unpickling): do not recurse
            raise AttributeError(name)
        return getattr(self.loader, name)


__all__ = [
    "RA_SIZE_ROUND",
    "EpochLoader",
    "LAP_EPOCH_STRIDE",
    "batches_per_epoch",
    "record_stream_size",
    "samples_per_epoch",
    "stream_size",
]

"""Per-image augmentation seeds, so that a run resumed from a checkpoint augments every image as the uninterrupted run.

timm's and torchvision's transforms draw from the global RNGs (`random`, `numpy.random`, torch's CPU generator).
Left alone, an image's augmentation depends on what drew from those RNGs before it: in the main process (0
DataLoader workers) the model's drop path and Mixup, in a worker the batches that worker handled earlier and its
seed (drawn from the main process' RNG when the epoch's iterator starts). A resumed run differs in all three: it
skips the trained batches of a map-style dataset without loading them, and transformers restores the checkpoint's
RNG state only after the first resumed batch has been fetched. So each image is transformed under its own seed,
derived from where it sits in the run, and the global RNGs are put back afterwards:

  * map-style data: `PositionalSampler` tags each index with (epoch, position in this rank's epoch), and
    `SeededAugmentation` transforms it under the seed (run seed, rank, epoch, position). The repeated-augmentation
    copies of an image sit at different positions, so they still get independent augmentations.
  * streams: `SeededStreamTransform` keys each example by (run seed, worker, position in this worker's pass, image
    identity: `row_key.image_identity`, its path inside the dataset or its bytes' hash, as the teacher cache's keys). Positions restart each pass; the image at a position changes from pass to pass with the shuffle, so
    an image's augmentation still changes from one pass to the next (a stream without shuffling would repeat them).
"""

from __future__ import annotations

import contextlib
import random
import zlib
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .row_key import image_identity


@contextlib.contextmanager
def seeded_rngs(*key: int) -> Iterator[None]:
    """Seed `random`, `numpy.random` and torch's CPU generator from `key` for the block, then restore all three.

    Only the CPU generator: transforms run on the CPU, and reseeding CUDA generators here would change the model's
    dropout draws on a GPU. numpy's SeedSequence mixes the key into well-separated seeds for the three RNGs.
    """
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seeds = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]).generate_state(3, dtype=np.uint32)
    random.seed(int(seeds[0]))
    np.random.seed(int(seeds[1]))
    torch.default_generator.manual_seed(int(seeds[2]))
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


class AugmentationKey(NamedTuple):
    """What `PositionalSampler` yields: the dataset index plus where it sits in the run."""

    epoch: int
    position: int
    index: int


class PositionalSampler(Sampler):
    """Wraps a sampler of indices; yields `AugmentationKey(epoch, position, index)` for `SeededAugmentation`.

    `set_epoch` is forwarded to the wrapped sampler (the Trainer and accelerate call it each epoch). Positions count
    from the start of the epoch, so they stay right when a resumed run skips the first batches of an epoch.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[AugmentationKey]:
        for position, index in enumerate(self.sampler):
            yield AugmentationKey(self.epoch, position, int(index))

    def __len__(self) -> int:
        return len(self.sampler)


class SeededAugmentation(Dataset):
    """A map-style dataset read with `AugmentationKey`s: each item is loaded (decoded, augmented) under the seed
    (seed, rank, epoch, position), so it does not depend on the batches loaded before it nor on the process."""

    def __init__(self, dataset: Any, seed: int, rank: int = 0) -> None:
        self.dataset = dataset
        self.seed = seed
        self.rank = rank

    def __getitem__(self, key: AugmentationKey) -> Any:
        with seeded_rngs(self.seed, self.rank, key.epoch, key.position):
            return self.dataset[key.index]

    def __len__(self) -> int:
        return len(self.dataset)


def _identity(example: dict[str, Any]) -> int:
    """A stable number for the example's image: its `image_identity` (hf_deit.data.row_key), the identity a teacher
    cache keys its rows by, so that moving or copying the dataset folder changes neither the keys nor the seeds."""
    return zlib.crc32(image_identity(example.get("image")).encode())


class SeededStreamTransform:
    """`IterableDataset.map(..., with_indices=True)` function: `transform(example)` under a per-example seed.

    The index datasets passes is the example's position in this worker's pass over its shards; a resumed run
    replays the pass from its start (the Trainer skips a stream's trained batches by reading them), so positions,
    and with them the augmentations, repeat exactly.
    """

    def __init__(self, transform: Callable[[dict[str, Any]], dict[str, Any]], seed: int) -> None:
        self.transform = transform
        self.seed = seed

    def __call__(self, example: dict[str, Any], position: int) -> dict[str, Any]:
        worker = torch.utils.data.get_worker_info()
        with seeded_rngs(self.seed, worker.id if worker is not None else 0, position, _identity(example)):
            return self.transform(example)


__all__ = ["AugmentationKey", "PositionalSampler", "SeededAugmentation", "SeededStreamTransform", "seeded_rngs"]

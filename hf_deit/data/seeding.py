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
    identity: `row_key.image_identity`, its path inside the dataset or its bytes' hash, as the teacher cache's keys).
    Positions restart each pass; the image at a position changes from pass to pass with the shuffle, so an image's
    augmentation still changes from one pass to the next (a stream without shuffling would repeat them).

The global states are saved once per batch and restored after it (`reseeding`), not around each image: the code
that runs between batches (drop path, Mixup) is the only other code that draws, and each image's seeding resets
all three RNGs entirely. Every image sees the same streams and the code after a batch the same states as with
`seeded_rngs` around each image (tests/test_seeding.py compares both bit for bit), for about a seventh of the host
time (0.26 ms instead of 2.1 per batch of 8 images here: docs/benchmarks.md, host overhead).
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
from .seed_words import seed_words


def _reseed(*key: int) -> None:
    """Seed `random`, `numpy.random` and torch's CPU generator from `key`. Each seeding resets its RNG entirely
    (Python's and numpy's cached Gaussians included), so what was drawn before does not matter. The three seeds are
    `np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(3, np.uint32)`, computed without numpy."""
    python_seed, numpy_seed, torch_seed = seed_words(key)
    random.seed(python_seed)
    np.random.seed(numpy_seed)
    torch.default_generator.manual_seed(torch_seed)  # not torch.manual_seed: that also seeds every CUDA generator


_SPARE_NUMPY = np.random.MT19937(0)  # the bit generator images are seeded in, put in place of numpy's global one


def _set_aside_numpy_state() -> Callable[[], None]:
    """Put `_SPARE_NUMPY` in the place of numpy's global bit generator and return the function that puts the global
    one back as it was. Saving and restoring numpy's state copies 624 words one by one (about 145 us); a swap
    (np.random.set_bit_generator) leaves the global generator untouched. The swap drops numpy's cached Gaussian
    (np.random.normal and the legacy draws built on it make Gaussians in pairs and keep the second): the state is
    read once to know it, and written back only when there was one. A global generator that is not an MT19937, or a
    nested block (the spare is already in place), gets its state copied and written back instead."""
    outer = np.random.get_bit_generator() if hasattr(np.random, "get_bit_generator") else None
    if type(outer) is not np.random.MT19937 or outer is _SPARE_NUMPY:
        state = np.random.get_state(legacy=False)
        return lambda: np.random.set_state(state)
    state = np.random.get_state()  # ("MT19937", key, pos, has_gauss, gauss)
    np.random.set_bit_generator(_SPARE_NUMPY)

    def put_back() -> None:
        np.random.set_bit_generator(outer)
        if state[3] or state[4]:
            np.random.set_state(state)

    return put_back


@contextlib.contextmanager
def reseeding() -> Iterator[Callable[..., None]]:
    """Save the global RNG states (`random`, `numpy.random`, torch's CPU generator) once, yield `reseed(*key)`, which
    seeds all three from `key` as `seeded_rngs` does, and restore the states at the end, whatever the block drew.

    For a batch: `reseed` before each image gives every image exactly what `seeded_rngs` around it gives, for one
    save and one restore per batch instead of one per image. Call `reseed` before anything in the block draws."""
    python_state, torch_state = random.getstate(), torch.get_rng_state()
    put_back_numpy = _set_aside_numpy_state()
    try:
        yield _reseed
    finally:
        random.setstate(python_state)
        put_back_numpy()
        torch.set_rng_state(torch_state)


@contextlib.contextmanager
def seeded_rngs(*key: int) -> Iterator[None]:
    """Seed `random`, `numpy.random` and torch's CPU generator from `key` for the block, then restore all three.

    Only the CPU generator: transforms run on the CPU, and reseeding CUDA generators here would change the model's
    dropout draws on a GPU. numpy's SeedSequence mixes the key into well-separated seeds for the three RNGs.
    A batch of images: `reseeding`, which saves and restores the states once for all of them.
    """
    with reseeding() as reseed:
        reseed(*key)
        yield


class AugmentationKey(NamedTuple):
    """What `PositionalSampler` yields: the dataset index plus where it sits in the run."""

    epoch: int
    position: int
    index: int


class PositionalSampler(Sampler):
    """Wraps a sampler of indices; yields `AugmentationKey(epoch, position, index)` for `SeededAugmentation`.

    `set_epoch` is forwarded to the wrapped sampler. The Trainer and accelerate call it each epoch, but not in a
    resumed epoch on 2+ ranks (the skipping loader hides it), so DistillationTrainer sets it itself, every epoch
    (hf_deit.distillation.callbacks.SamplerEpochCallback). Positions count
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
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[AugmentationKey]) -> list[Any]:
        """A batch (the DataLoader calls this instead of `__getitem__` per key): the RNG states are saved and
        restored once for the batch, each item still loaded under its own seed."""
        items = []
        with reseeding() as reseed:
            for key in keys:
                reseed(self.seed, self.rank, key.epoch, key.position)
                items.append(self.dataset[key.index])
        return items

    def __len__(self) -> int:
        return len(self.dataset)


def _identity(example: dict[str, Any]) -> int:
    """A stable number for the example's image: its `image_identity` (hf_deit.data.row_key), the identity a teacher
    cache keys its rows by, so that moving or copying the dataset folder changes neither the keys nor the seeds."""
    return zlib.crc32(image_identity(example.get("image")).encode())


class SeededStreamTransform:
    """Batched `IterableDataset.map(..., with_indices=True, batched=True)` function: `transform(example)` for each
    example of the batch under that example's own seed; the RNG states are saved and restored once per batch.

    The index datasets passes is the example's position in this worker's pass over its shards; a resumed run
    replays the pass from its start (the Trainer skips a stream's trained batches by reading them), so positions,
    and with them the augmentations, repeat exactly. Batching changes none of them: datasets counts positions the
    same way, and each example is seeded by its own position whatever batch it falls in.
    """

    def __init__(self, transform: Callable[[dict[str, Any]], dict[str, Any]], seed: int) -> None:
        self.transform = transform
        self.seed = seed

    def __call__(self, batch: dict[str, list], positions: list[int]) -> dict[str, list]:
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else 0
        outputs = []
        with reseeding() as reseed:
            for row, position in enumerate(positions):
                example = {name: values[row] for name, values in batch.items()}
                reseed(self.seed, worker_id, position, _identity(example))
                outputs.append(self.transform(example))
        return _columns(outputs)


def _columns(outputs: list[dict[str, Any]]) -> dict[str, list]:
    """Per-example outputs -> the columns a batched map returns (datasets splits them back into the same examples)."""
    names = list(outputs[0]) if outputs else []
    for output in outputs:
        if list(output) != names:
            raise ValueError(f"A stream transform returned the columns {list(output)} for one example and {names} for "
                             "another: it must return the same columns for every example.")
    return {name: [output[name] for output in outputs] for name in names}


# Examples transformed per batched call: the RNG states are saved and restored once per this many images (about
# 100 us each time), and a pass that stops early (an epoch's end) has transformed at most this many - 1 unused.
STREAM_SEEDING_BATCH = 16


def map_seeded(dataset: Any, transform: Callable[[dict[str, Any]], dict[str, Any]], seed: int,
               remove_columns: list[str]) -> Any:
    """`dataset.map(transform)` for a training stream (a datasets IterableDataset), each example transformed under
    its own seed (`SeededStreamTransform`)."""
    return dataset.map(SeededStreamTransform(transform, seed), with_indices=True, batched=True,
                       batch_size=STREAM_SEEDING_BATCH, remove_columns=remove_columns)


__all__ = ["AugmentationKey", "PositionalSampler", "SeededAugmentation", "SeededStreamTransform", "map_seeded",
           "reseeding", "seeded_rngs"]

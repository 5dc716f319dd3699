"""The training order of map-style data and the key each image is augmented under, handed to the Trainer's loader.

    dataset, sampler_fn = seeded_training_data(dataset, sampler_fn, repeated_aug=3, world_size=8, batch_size=128,
                                               seed=42, rank=0)

The Trainer builds its training loader from a dataset and a sampler factory (`sampler_fn(dataset)`); this swaps both:
  * the sampler: with repeated augmentation, the paper's epoch (hf_deit.data.epoch) in the global order that
    accelerate's round-robin batch sharding hands out rank by rank (`RepeatAugBatchOrder`); without, the Trainer's
    own (a plain RandomSampler becomes accelerate's epoch-seeded one, which accelerate would no longer see inside
    the wrapper);
  * the dataset: read with (epoch, position) keys (`PositionalSampler` + `SeededAugmentation`), so that each image
    is augmented under its own seed and a resumed run, which skips the trained batches without loading them,
    augments every later image as the uninterrupted run (hf_deit/data/seeding.py).
"""

from __future__ import annotations

from typing import Any, Callable

from torch.utils.data import RandomSampler, Sampler, SequentialSampler

from .pipeline import RepeatAugBatchOrder
from .seeding import PositionalSampler, SeededAugmentation


def training_sampler(
    dataset: Any, sampler_fn: Callable | None, repeated_aug: int, world_size: int, batch_size: int, seed: int
) -> Sampler:
    """The paper's repeated-augmentation order (`repeated_aug` > 1), else the Trainer's sampler, epoch-seeded."""
    if repeated_aug > 1:
        return RepeatAugBatchOrder(
            dataset, num_repeats=repeated_aug, num_replicas=world_size, batch_size=batch_size, seed=seed
        )
    sampler = sampler_fn(dataset) if sampler_fn is not None else SequentialSampler(dataset)
    if type(sampler) is RandomSampler:
        from accelerate.data_loader import SeedableRandomSampler

        sampler = SeedableRandomSampler(
            data_source=sampler.data_source, replacement=sampler.replacement, num_samples=sampler.num_samples,
            generator=sampler.generator, data_seed=seed,
        )
    return sampler


def seeded_training_data(
    dataset: Any, sampler_fn: Callable | None, *, repeated_aug: int, world_size: int, batch_size: int, seed: int,
    rank: int, on_sampler: Callable[[PositionalSampler], None] | None = None,
) -> tuple[SeededAugmentation, Callable[[SeededAugmentation], PositionalSampler]]:
    """(the dataset read with (epoch, position) keys, the factory of its sampler): see the module docstring.
    `on_sampler` is handed each sampler the factory builds: its epoch must be set every epoch by whoever counts them
    (DistillationTrainer: callbacks.SamplerEpochCallback), since a resumed loader's chain hides it from accelerate."""

    def positional_sampler(wrapped: SeededAugmentation) -> PositionalSampler:
        order = training_sampler(wrapped.dataset, sampler_fn, repeated_aug, world_size, batch_size, seed)
        sampler = PositionalSampler(order)
        if on_sampler is not None:
            on_sampler(sampler)
        return sampler

    return SeededAugmentation(dataset, seed=seed, rank=rank), positional_sampler


__all__ = ["seeded_training_data", "training_sampler"]

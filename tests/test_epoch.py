"""What an epoch is (hf_deit/data/epoch.py): the paper's RASampler count per rank, equal to timm's sampler."""

import math

import pytest
from timm.data.distributed_sampler import RepeatAugSampler

from hf_deit.data import samples_per_epoch

IMAGENET_TRAIN_SIZE = 1_281_167


def official_rasampler_count(dataset_size: int, world_size: int) -> int:
    """facebookresearch/deit samplers.py, RASampler.__init__: num_selected_samples, verbatim."""
    return int(math.floor(dataset_size // 256 * 256 / world_size))


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("dataset_size", [256, 257, 1000, 50_000, IMAGENET_TRAIN_SIZE])
def test_samples_per_epoch_is_the_official_rasampler_count(dataset_size, world_size):
    assert samples_per_epoch(dataset_size, world_size) == official_rasampler_count(dataset_size, world_size)


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("dataset_size", [1, 5, 18, 255, 256, 257, 1000, IMAGENET_TRAIN_SIZE])
def test_samples_per_epoch_is_the_length_of_timms_sampler_on_every_rank(dataset_size, world_size):
    """Also below 256 images, where RASampler would yield nothing and timm falls back to ceil(N / world)."""
    for rank in range(world_size):
        sampler = RepeatAugSampler(range(dataset_size), num_replicas=world_size, rank=rank, num_repeats=3)
        assert samples_per_epoch(dataset_size, world_size) == len(sampler)


def test_small_datasets_keep_an_epoch_of_about_len_dataset_samples():
    assert samples_per_epoch(18, 1) == 18 and samples_per_epoch(18, 2) == 9 and samples_per_epoch(19, 2) == 10


def test_imagenet_at_global_batch_1024_is_the_papers_375300_steps():
    per_rank = samples_per_epoch(IMAGENET_TRAIN_SIZE, 8)
    assert per_rank == 160_128 and per_rank // 128 == 1_251 and per_rank // 128 * 300 == 375_300


@pytest.mark.parametrize("dataset_size, world_size", [(0, 1), (10, 0)])
def test_samples_per_epoch_refuses_empty_datasets_and_worlds(dataset_size, world_size):
    with pytest.raises(ValueError):
        samples_per_epoch(dataset_size, world_size)

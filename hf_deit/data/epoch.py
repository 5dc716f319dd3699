"""What an epoch is: the DeiT paper's repeated-augmentation epoch, the one rule every part of hf_deit counts with.

The official code (facebookresearch/deit samplers.py, `RASampler`; timm's `RepeatAugSampler` is the same sampler)
draws a random permutation of the dataset each epoch, repeats every index `num_repeats` (3) times in a row, deals the
result round-robin to the ranks and keeps floor(N // 256 * 256 / world) indices on each rank; its DataLoader drops
the last partial batch. So an epoch is about len(dataset) samples over all ranks, not 3x: about a third of the
images, each 3 times (on 3 different ranks when there are at least 3). ImageNet-1k (N = 1,281,167) on 8 ranks:
160,128 samples per rank, 1,251 steps of 128, 375,300 steps in 300 epochs.
"""

from __future__ import annotations

# RASampler rounds the dataset size down to a multiple of this before dividing it among the ranks.
RA_SIZE_ROUND = 256


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


__all__ = ["RA_SIZE_ROUND", "samples_per_epoch"]

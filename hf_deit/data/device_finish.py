"""uint8 batches, finished on the accelerator (timm's prefetcher design; `--uint8_batches`).

With `DataArguments.uint8_batches`, DataLoader workers stop after the PIL steps of the training transform (crop,
flip, RandAugment) and return uint8 tensors [3, H, W]; the training step (`DistillationTrainer.compute_loss`)
then runs, on the batch and on the accelerator:

    uint8 [B, 3, H, W] -> float32 x / 255 -> (x - mean) / std -> RandomErasing (timm, per image) -> Mixup/CutMix

Workers do less (no float conversion, normalisation or erasing) and move 4x fewer bytes to the main process and the
device: their CPU per image on the DeiT recipe fell 12% with 1 worker and 14% with 2 (4.66 -> 4.08 and 5.09 -> 4.40
ms, 500 ImageNet JPEGs at 224 px, `benchmarks/bench_data.py --variants baseline map uint8` on the 2-core CPU dev
machine; docs/benchmarks.md, "uint8 batches: worker CPU per image").

What equals the worker path (tests/test_device_finish.py):
  * normalisation: the same float32 operations in the same order as `ToNormalizedTensor` (x / 255, - mean,
    / std), so the same tensor bit for bit on CPU.
  * random erasing: timm's own `RandomErasing` with the same parameters, applied to each image of the batch. Given
    the same RNG state (Python's `random` for the box, torch's generator for the pixel-mode noise), one image
    is erased identically to the worker path (bit for bit on CPU). In training the draws come from the main
    process's RNGs (checkpointed by the Trainer, like Mixup's) instead of each image's augmentation seed
    (seeding.py): the distribution of boxes and noise is the same, the particular box an image gets is not. On
    CUDA the noise comes from the CUDA generator.
  * Mixup/CutMix: unchanged (it already runs in the training step, after erasing, as before).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from timm.data.random_erasing import RandomErasing
from torch import nn

from .transforms import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from .arguments import DataArguments


class DeviceFinish(nn.Module):
    """uint8 batch [B, C, H, W] -> normalised float32 batch, with timm's random erasing in training.

    Args:
        mean, std: normalisation statistics (per channel, on [0, 1] pixels).
        reprob, remode, recount: random erasing probability, fill mode and maximum count (timm's RandomErasing
            with the defaults timm's training transform uses for the rest: area 0.02-1/3, aspect 0.3-3.3).
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        reprob: float = 0.0,
        remode: str = "pixel",
        recount: int = 1,
    ) -> None:
        super().__init__()
        # (C,) -> (1, C, 1, 1): broadcasts over (batch, H, W); buffers follow .to(device)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.erasing = RandomErasing(reprob, mode=remode, max_count=recount, device="cpu") if reprob > 0 else None

    def normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dtype != torch.uint8:
            raise TypeError(f"DeviceFinish expects a uint8 batch, got {pixel_values.dtype}.")
        if self.mean.device != pixel_values.device:
            self.to(pixel_values.device)  # once: the statistics follow the batches to the accelerator
        return pixel_values.float().div_(255).sub_(self.mean).div_(self.std)

    def forward(self, pixel_values: torch.Tensor, train: bool = True) -> torch.Tensor:
        x = self.normalize(pixel_values)
        if train and self.erasing is not None:
            self.erasing.device = x.device  # where timm draws the pixel-mode noise
            x = self.erasing(x)  # a 4-D batch: each image erased (or not) independently, in place
        return x

    def extra_repr(self) -> str:
        return f"erasing={self.erasing!r}"


def build_device_finish(data_args: DataArguments | None) -> DeviceFinish:
    """The finishing steps for `data_args` (normalisation only without data arguments)."""
    if data_args is None:
        return DeviceFinish()
    return DeviceFinish(reprob=data_args.reprob, remode=data_args.remode, recount=data_args.recount)


__all__ = ["DeviceFinish", "build_device_finish"]

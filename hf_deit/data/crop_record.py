"""Record where the training transform cropped each image and whether it flipped it.

A cached teacher (`hf_deit.distillation.teacher_cache`) turns the crop box into the teacher's logits for that crop, so the box
must travel with the example: `record_crops(transform)` swaps the transform's random crop (timm's
RandomResizedCropAndInterpolation, torchvision's RandomResizedCrop / RandomCrop) and horizontal flip for the small
subclasses below, built from the originals' public attributes, so that each call leaves `transform.crop_record` =
(box, flipped) for the image just transformed. The subclasses make the same random draws in the same order (they
call the parent's `get_params` / one `torch.rand` per flip), so the augmented images are unchanged bit for bit.

What this relies on (docs/architecture.md, pinned by tests/test_trainer_hooks.py): the crops' own `__call__` /
`forward` ask `self.get_params(...)` (their public method that draws the box) for the box, once per call, as timm
and torchvision do today.

The box is (x0, y0, x1, y1) in fractions of the image the crop was taken from (the whole decoded image: a Resize
before the crop keeps fractions). A padded crop (CIFAR's reflect-padded RandomCrop) can reach outside [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms
from torchvision.transforms import functional as TF


@dataclass
class CropRecord:
    """The last call's crop box (x0, y0, x1, y1), fractions of the source image, and horizontal flip."""

    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    flipped: bool = False

    def reset(self) -> None:
        self.box, self.flipped = (0.0, 0.0, 1.0, 1.0), False


def _padding(padding: Any) -> tuple[int, int, int, int]:
    """torchvision's padding argument -> (left, top, right, bottom)."""
    if padding is None:
        return 0, 0, 0, 0
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 1:
        return (padding[0],) * 4
    if len(padding) == 2:
        return padding[0], padding[1], padding[0], padding[1]
    return tuple(padding)  # type: ignore[return-value]


class _Recording:
    """Mixin: `like(original, record)` builds the recording subclass from the original's public attributes."""

    crop_record: CropRecord

    @staticmethod
    def arguments_of(original: Any) -> tuple:
        raise NotImplementedError

    @classmethod
    def like(cls, original: Any, record: CropRecord) -> Any:
        recording = cls(*cls.arguments_of(original))
        recording.crop_record = record
        return recording


class _RecordsCropBox(_Recording):
    """Mixin for a random crop class: its `get_params` (a static method upstream) draws as the parent's does and
    writes the box, as fractions of the unpadded image, to `self.crop_record`."""

    def get_params(self, image: Any, *args: Any) -> tuple[int, int, int, int]:  # type: ignore[override]
        top, left, height, width = super().get_params(image, *args)  # type: ignore[misc]
        _, full_height, full_width = TF.get_dimensions(image)  # the padded image for a padded RandomCrop
        pad_left, pad_top, pad_right, pad_bottom = self._box_padding()
        inner_w, inner_h = full_width - pad_left - pad_right, full_height - pad_top - pad_bottom
        x0, y0 = (left - pad_left) / inner_w, (top - pad_top) / inner_h
        self.crop_record.box = (x0, y0, x0 + width / inner_w, y0 + height / inner_h)
        return top, left, height, width

    def _box_padding(self) -> tuple[int, int, int, int]:
        return 0, 0, 0, 0


class RecordingRandomResizedCropAndInterpolation(_RecordsCropBox, RandomResizedCropAndInterpolation):
    """timm's RandomResizedCropAndInterpolation (the DeiT recipe's crop) that records its box."""

    @staticmethod
    def arguments_of(crop: RandomResizedCropAndInterpolation) -> tuple:
        return crop.size, crop.scale, crop.ratio

    @classmethod
    def like(cls, crop: RandomResizedCropAndInterpolation, record: CropRecord) -> Any:
        recording = super().like(crop, record)
        recording.interpolation = crop.interpolation  # already parsed (a mode, or the list 'random' draws from)
        return recording


class RecordingRandomResizedCrop(_RecordsCropBox, transforms.RandomResizedCrop):
    """torchvision's RandomResizedCrop that records its box."""

    @staticmethod
    def arguments_of(crop: transforms.RandomResizedCrop) -> tuple:
        return crop.size, crop.scale, crop.ratio, crop.interpolation, crop.antialias


class RecordingRandomCrop(_RecordsCropBox, transforms.RandomCrop):
    """torchvision's RandomCrop (CIFAR's reflect-padded crop) that records its box in the unpadded image."""

    @staticmethod
    def arguments_of(crop: transforms.RandomCrop) -> tuple:
        return crop.size, crop.padding, crop.pad_if_needed, crop.fill, crop.padding_mode

    def _box_padding(self) -> tuple[int, int, int, int]:
        return _padding(self.padding)


class RecordingHorizontalFlip(_Recording, transforms.RandomHorizontalFlip):
    """torchvision's RandomHorizontalFlip (same draw: one torch.rand per call) that records whether it flipped."""

    @staticmethod
    def arguments_of(flip: transforms.RandomHorizontalFlip) -> tuple:
        return (flip.p,)

    def forward(self, img: Any) -> Any:
        flipped = bool(torch.rand(1) < self.p)
        self.crop_record.flipped = flipped
        return TF.hflip(img) if flipped else img


class CropRecordingTransform:
    """`transform` whose crop and flip report to `crop_record` on each call (see the module docstring)."""

    def __init__(self, transform: Callable, record: CropRecord) -> None:
        self.transform, self.crop_record = transform, record

    def __call__(self, image: Any) -> Any:
        self.crop_record.reset()
        return self.transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


# The exact class found in a transform -> its recording subclass (a recording one maps to itself: re-recorded).
_RECORDING: dict[type, Any] = {
    RandomResizedCropAndInterpolation: RecordingRandomResizedCropAndInterpolation,
    transforms.RandomResizedCrop: RecordingRandomResizedCrop,
    transforms.RandomCrop: RecordingRandomCrop,
    transforms.RandomHorizontalFlip: RecordingHorizontalFlip,
}
_RECORDING.update({recording: recording for recording in list(_RECORDING.values())})


def record_crops(transform: transforms.Compose) -> CropRecordingTransform:
    """Swap every random crop and horizontal flip of `transform` (nested Composes too; in place) for its recording
    subclass, all reporting to one record."""
    record = CropRecord()
    pending = [transform]
    while pending:
        compose = pending.pop()
        for index, step in enumerate(compose.transforms):
            if isinstance(step, transforms.Compose):
                pending.append(step)
            elif type(step) in _RECORDING:
                compose.transforms[index] = _RECORDING[type(step)].like(step, record)
    return CropRecordingTransform(transform, record)

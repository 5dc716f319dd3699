"""Record where the training transform cropped each image and whether it flipped it.

A cached teacher (`hf_deit.distillation.teacher_cache`) turns the crop box into the teacher's logits for that crop, so the box
must travel with the example: `record_crops(transform)` patches the transform's random crop (timm's
RandomResizedCropAndInterpolation, torchvision's RandomResizedCrop / RandomCrop) and replaces its horizontal flip so
that each call leaves `transform.crop_record` = (box, flipped) for the image just transformed. The random draws are
the same calls in the same order as before, so the augmented images are unchanged bit for bit.

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


class _RecordingGetParams:
    """Stands in for a crop's `get_params` (an instance attribute shadows the static method): same draw, recorded."""

    def __init__(self, crop_class: type, record: CropRecord, padding: tuple[int, int, int, int]) -> None:
        self.crop_class, self.record, self.padding = crop_class, record, padding

    def __call__(self, image: Any, *args: Any) -> tuple[int, int, int, int]:
        top, left, height, width = self.crop_class.get_params(image, *args)
        _, full_height, full_width = TF.get_dimensions(image)  # the padded image for a padded RandomCrop
        pad_left, pad_top, pad_right, pad_bottom = self.padding
        inner_w, inner_h = full_width - pad_left - pad_right, full_height - pad_top - pad_bottom
        x0, y0 = (left - pad_left) / inner_w, (top - pad_top) / inner_h
        self.record.box = (x0, y0, x0 + width / inner_w, y0 + height / inner_h)
        return top, left, height, width


class RecordingHorizontalFlip(transforms.RandomHorizontalFlip):
    """torchvision's RandomHorizontalFlip (same draw: one torch.rand per call) that records whether it flipped."""

    def __init__(self, p: float, record: CropRecord) -> None:
        super().__init__(p)
        self.record = record

    def forward(self, img: Any) -> Any:
        flipped = bool(torch.rand(1) < self.p)
        self.record.flipped = flipped
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


_CROPS = (RandomResizedCropAndInterpolation, transforms.RandomResizedCrop, transforms.RandomCrop)


def record_crops(transform: transforms.Compose) -> CropRecordingTransform:
    """Patch the first random crop and horizontal flip found in `transform` (nested Composes too) to record."""
    record = CropRecord()
    pending = [transform]
    while pending:
        compose = pending.pop()
        for index, step in enumerate(compose.transforms):
            if isinstance(step, transforms.Compose):
                pending.append(step)
            elif isinstance(step, _CROPS):
                padding = _padding(step.padding) if isinstance(step, transforms.RandomCrop) else (0, 0, 0, 0)
                step.get_params = _RecordingGetParams(type(step), record, padding)
            elif type(step) is transforms.RandomHorizontalFlip:
                compose.transforms[index] = RecordingHorizontalFlip(step.p, record)
    return CropRecordingTransform(transform, record)

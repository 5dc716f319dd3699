"""Crop recording (hf_deit.data.crop_record) changes nothing the transform draws: the recording subclasses give the
plain transform's pixels and leave the random generators where it leaves them, on real photos through the whole
DeiT recipe (RandAugment, random erasing). That the recorded box is the box the crop used is pinned, against timm's
and torchvision's crops, in tests/test_trainer_hooks.py."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms

from hf_deit.data import DataArguments, build_train_transform
from hf_deit.data.crop_record import (
    RecordingHorizontalFlip,
    RecordingRandomCrop,
    RecordingRandomResizedCrop,
    RecordingRandomResizedCropAndInterpolation,
    record_crops,
)

SEEDS = range(6)


def _seed(seed: int) -> None:
    random.seed(seed), torch.manual_seed(seed), np.random.seed(seed)


def _next_draws() -> tuple:
    """Where the three generators stand: a transform that drew once more or less moves at least one of them."""
    return random.random(), torch.rand(1).item(), np.random.rand()


def _flatten(transform) -> list:
    if isinstance(transform, transforms.Compose):
        return [step for inner in transform.transforms for step in _flatten(inner)]
    return [transform]


RECIPES = {
    "deit_224": (DataArguments(reprob=1.0), None),  # erasing on every image: its draws follow the crop's
    "random_interpolation": (DataArguments(reprob=1.0, interpolation="random"), None),  # one more draw per crop
    "cifar_32": (DataArguments(image_size=32, reprob=1.0), (40, 36)),  # Resize -> reflect-padded RandomCrop
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recording_gives_the_plain_transforms_pixels_and_random_draws(imagenet_photos, recipe):
    args, resize = RECIPES[recipe]
    plain, recorded = build_train_transform(args), record_crops(build_train_transform(args))
    boxes = set()
    for path, _ in imagenet_photos[:4]:
        image = Image.open(path).convert("RGB")
        image = image.resize(resize) if resize else image
        for seed in SEEDS:
            _seed(seed)
            expected, expected_draws = plain(image), _next_draws()
            _seed(seed)
            assert torch.equal(recorded(image), expected) and _next_draws() == expected_draws
            boxes.add(recorded.crop_record.box)
    assert len(boxes) > 1  # the crops were recorded (a missed swap would leave the reset box on every image)


def test_every_crop_and_flip_is_swapped_and_built_from_the_originals_settings():
    compose = transforms.Compose([
        RandomResizedCropAndInterpolation(48, scale=(0.3, 0.9), ratio=(0.5, 2.0), interpolation="random"),
        transforms.Compose([transforms.RandomResizedCrop((40, 44), scale=(0.2, 0.8), antialias=False),
                            transforms.RandomCrop(32, padding=(1, 2, 3, 4), padding_mode="edge", fill=7),
                            transforms.RandomHorizontalFlip(0.3)]),
    ])  # fmt: skip
    originals = [vars(step).copy() for step in _flatten(compose)]
    recorded = record_crops(compose)
    steps = _flatten(compose)
    kinds = [RecordingRandomResizedCropAndInterpolation, RecordingRandomResizedCrop, RecordingRandomCrop,
             RecordingHorizontalFlip]  # fmt: skip
    assert [type(step) for step in steps] == kinds
    for step, original in zip(steps, originals):
        assert step.crop_record is recorded.crop_record
        settings = {name: value for name, value in vars(step).items() if name != "crop_record"}
        assert settings == original
    again = record_crops(compose)  # re-recording points every step at the new record
    assert all(step.crop_record is again.crop_record for step in _flatten(compose))

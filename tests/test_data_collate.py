"""Transforms follow DeiT's recipe through timm; Mixup/CutMix targets sum to 1 and reduce to label-smoothed one-hot."""

import pytest
import numpy as np
import torch
from PIL import Image
from timm.data import RandomResizedCropAndInterpolation
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from torchvision import transforms

from hf_deit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataArguments,
    DeiTCollator,
    build_collator,
    build_eval_transform,
    build_train_transform,
)

NUM_CLASSES = 10


def _flatten(transform) -> list:
    if isinstance(transform, transforms.Compose):
        return [step for inner in transform.transforms for step in _flatten(inner)]
    return [transform]


def test_default_train_transform_is_deits_recipe():
    steps = _flatten(build_train_transform(DataArguments()))
    kinds = [type(step) for step in steps]
    crop = steps[kinds.index(RandomResizedCropAndInterpolation)]
    assert crop.size == (224, 224) and crop.scale == (0.08, 1.0) and crop.interpolation.name == "BICUBIC"
    assert any(isinstance(s, transforms.RandomHorizontalFlip) and s.p == 0.5 for s in steps)
    rand_augment = steps[kinds.index(RandAugment)]
    assert rand_augment.num_layers == 2 and all(op.magnitude == 9 and op.magnitude_std == 0.5 for op in rand_augment.ops)
    assert transforms.ColorJitter not in kinds  # timm (and the paper's run) skip colour jitter under RandAugment
    erasing = steps[kinds.index(RandomErasing)]
    assert (erasing.probability, erasing.mode) == (0.25, "pixel")
    normalize = steps[kinds.index(transforms.Normalize)]
    assert normalize.mean.tolist() == pytest.approx(list(IMAGENET_MEAN))
    assert normalize.std.tolist() == pytest.approx(list(IMAGENET_STD))


def test_eval_transform_resizes_by_one_over_0875_and_center_crops(imagenet_photos):
    steps = _flatten(build_eval_transform(DataArguments()))
    assert steps[0].size == 256 and steps[1].size == (224, 224)
    out = build_eval_transform(DataArguments())(Image.open(imagenet_photos[0][0]).convert("RGB"))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32


def test_small_images_use_padded_crop_and_no_eval_upsize(imagenet_photos):
    args = DataArguments(image_size=32)
    kinds = [type(step) for step in _flatten(build_train_transform(args))]
    assert transforms.RandomCrop in kinds and RandomResizedCropAndInterpolation not in kinds
    assert RandAugment in kinds and RandomErasing in kinds
    tiny = Image.open(imagenet_photos[1][0]).convert("RGB").resize((32, 32))
    assert build_train_transform(args)(tiny).shape == (3, 32, 32)
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(build_eval_transform(args)(tiny), plain(tiny))  # 32 px stays exactly 32 px


def _examples(batch_size: int, broken: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(batch_size)
    examples = [{"pixel_values": torch.randn(3, 8, 8, generator=generator), "labels": i % NUM_CLASSES, "key": str(i)}
                for i in range(batch_size)]
    for example in examples[:broken]:
        example["pixel_values"] = None
    return examples


@pytest.mark.parametrize("batch_size", [8, 7])
def test_mixup_cutmix_targets_sum_to_one(batch_size):
    collator = build_collator(DataArguments(), NUM_CLASSES, train=True)  # mixup 0.8, cutmix 1.0, smoothing 0.1
    np.random.seed(0)  # timm's Mixup draws lambda and mixup-vs-cutmix from numpy
    changed = []
    for _ in range(5):
        examples = _examples(batch_size)
        batch = collator(examples)
        assert batch["pixel_values"].shape == (batch_size, 3, 8, 8)
        assert batch["labels"].shape == (batch_size, NUM_CLASSES) and batch["labels"].dtype == torch.float32
        assert torch.allclose(batch["labels"].sum(dim=1), torch.ones(batch_size))
        changed.append(not torch.equal(batch["pixel_values"], torch.stack([e["pixel_values"] for e in _examples(batch_size)])))
    # A single CutMix draw on 8x8 images can cut an empty box (lambda = 1, nothing changes); five draws cannot all.
    assert any(changed)


def test_mixing_off_gives_label_smoothed_one_hot():
    labels = torch.tensor([i % NUM_CLASSES for i in range(6)])
    expected = torch.nn.functional.one_hot(labels, NUM_CLASSES).float() * 0.9 + 0.1 / NUM_CLASSES
    for collator in (build_collator(DataArguments(mixup=0.0, cutmix=0.0), NUM_CLASSES, train=True),
                     build_collator(DataArguments(mixup_prob=0.0), NUM_CLASSES, train=True)):
        batch = collator(_examples(6))
        assert torch.allclose(batch["labels"], expected)
        assert torch.equal(batch["pixel_values"], torch.stack([e["pixel_values"] for e in _examples(6)]))


def test_eval_collator_keeps_integer_labels_and_drops_broken_examples():
    batch = build_collator(DataArguments(), NUM_CLASSES, train=False)(_examples(5, broken=2))
    assert batch["labels"].tolist() == [2, 3, 4] and batch["labels"].dtype == torch.long
    assert batch["pixel_values"].shape == (3, 3, 8, 8) and set(batch) == {"pixel_values", "labels"}


def test_odd_batch_after_dropping_still_mixes_the_even_part():
    collator = DeiTCollator(NUM_CLASSES, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    batch = collator(_examples(6, broken=1))  # 5 left: 4 mixed, the 5th keeps its smoothed one-hot
    assert batch["labels"].shape == (5, NUM_CLASSES)
    assert torch.allclose(batch["labels"].sum(dim=1), torch.ones(5))
    assert batch["labels"][4].argmax() == 5 and batch["labels"][4].max() == pytest.approx(0.9 + 0.1 / NUM_CLASSES)


def test_randaugment_posterize_at_magnitude_10_does_not_crash(imagenet_photos):
    """timm asks Pillow to keep 0 bits at magnitude 10; Pillow 13 raises there. We give the old black image."""
    from timm.data.auto_augment import AugmentOp

    ops = [s for s in _flatten(build_train_transform(DataArguments())) if isinstance(s, RandAugment)][0].ops
    op = next(op for op in ops if op.name == "PosterizeIncreasing")
    assert isinstance(op, AugmentOp) and op.level_fn(10.0, op.hparams) == (0,)
    image = Image.open(imagenet_photos[0][0]).convert("RGB")
    out = op.aug_fn(image, *op.level_fn(10.0, op.hparams))
    assert out.size == image.size and out.getextrema() == ((0, 0), (0, 0), (0, 0))
    op.magnitude, op.magnitude_std, op.prob = 10.0, 0.0, 1.0  # force it: the whole op now runs at 0 bits
    assert op(image).getextrema() == ((0, 0), (0, 0), (0, 0))

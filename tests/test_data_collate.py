"""Transforms follow DeiT's recipe through timm; Mixup/CutMix targets sum to 1 and reduce to label-smoothed one-hot."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import RandomResizedCropAndInterpolation, create_transform
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from torchvision import transforms

from hf_deit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataArguments,
    DeiTCollator,
    build_eval_transform,
    build_train_transform,
)
from hf_deit.distillation.mixing import MixupArguments, build_mixup, mix_batch
from hf_deit.data.transforms import ToNormalizedTensor

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
    normalize = steps[kinds.index(ToNormalizedTensor)]  # timm's ToTensor + Normalize, fused
    assert normalize.mean.flatten().tolist() == pytest.approx(list(IMAGENET_MEAN))
    assert normalize.std.flatten().tolist() == pytest.approx(list(IMAGENET_STD))


@pytest.mark.parametrize("train", [True, False])
def test_transforms_give_timms_tensors_bit_for_bit(imagenet_photos, train):
    """Our transform (fused ToTensor + Normalize) against timm's create_transform with the same recipe and seed."""
    timm_transform = create_transform(
        224, is_training=train, auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic", re_prob=0.25,
        re_mode="pixel", crop_pct=0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )
    ours = (build_train_transform if train else build_eval_transform)(DataArguments())
    for path, _ in imagenet_photos[:6]:
        image = Image.open(path).convert("RGB")
        for seed in range(3):
            random.seed(seed), torch.manual_seed(seed), np.random.seed(seed)
            expected = timm_transform(image)
            random.seed(seed), torch.manual_seed(seed), np.random.seed(seed)
            assert torch.equal(ours(image), expected)


def test_to_normalized_tensor_equals_to_tensor_then_normalize(imagenet_photos):
    rgb = Image.open(imagenet_photos[0][0]).convert("RGB").crop((3, 5, 203, 150))  # odd, non-square size
    for image, mean, std in ((rgb, IMAGENET_MEAN, IMAGENET_STD), (np.asarray(rgb), IMAGENET_MEAN, IMAGENET_STD),
                             (rgb.convert("L"), (0.45,), (0.226,))):
        reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        out = ToNormalizedTensor(mean, std)(image)
        assert out.is_contiguous() and torch.equal(out, reference(image))
    tensor = torch.rand(3, 7, 9)  # tensors are normalised only, as timm's MaybeToTensor + Normalize do
    assert torch.equal(ToNormalizedTensor(IMAGENET_MEAN, IMAGENET_STD)(tensor),
                       transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(tensor))


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


def _mixing_collator(mixup_args, smoothing):
    """DeiTCollator, then build_mixup + mix_batch as DistillationTrainer applies them in its training step."""
    mixup = build_mixup(mixup_args, NUM_CLASSES, smoothing)

    def collate(examples):
        batch = DeiTCollator()(examples)
        pixels, labels = batch["pixel_values"], batch["labels"]
        batch["pixel_values"], batch["labels"] = mix_batch(mixup, pixels, labels, NUM_CLASSES, smoothing)
        return batch

    return collate


@pytest.mark.parametrize("batch_size", [8, 7])
def test_mixup_cutmix_targets_sum_to_one(batch_size):
    collator = _mixing_collator(MixupArguments(), 0.1)  # mixup 0.8, cutmix 1.0, smoothing 0.1
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
    for collator in (_mixing_collator(MixupArguments(mixup=0.0, cutmix=0.0), 0.1),
                     _mixing_collator(MixupArguments(mixup_prob=0.0), 0.1)):
        batch = collator(_examples(6))
        assert torch.allclose(batch["labels"], expected)
        assert torch.equal(batch["pixel_values"], torch.stack([e["pixel_values"] for e in _examples(6)]))


def test_eval_collator_keeps_integer_labels_and_drops_broken_examples():
    batch = DeiTCollator()(_examples(5, broken=2))
    assert batch["labels"].tolist() == [2, 3, 4] and batch["labels"].dtype == torch.long
    assert batch["pixel_values"].shape == (3, 3, 8, 8) and set(batch) == {"pixel_values", "labels"}


def test_odd_batch_after_dropping_still_mixes_the_even_part():
    collator = _mixing_collator(MixupArguments(mixup=0.8, cutmix=1.0), 0.1)
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

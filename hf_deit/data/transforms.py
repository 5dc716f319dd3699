"""DeiT's training and evaluation transforms, built by timm's `create_transform` (not by hand).

Training (paper Table 9, `main.py`): RandomResizedCrop(scale 0.08-1, bicubic) -> horizontal flip -> RandAugment
`rand-m9-mstd0.5-inc1` -> ToTensor -> Normalize(ImageNet mean/std) -> RandomErasing(0.25, pixel mode).
Colour jitter 0.3 is in the paper's argument list, but timm (and therefore the paper's run) skips colour jitter
whenever RandAugment is on; we keep that (`force_color_jitter` turns it on).

Evaluation: resize the short side to int(image_size / 0.875) (bicubic; `hf_deit.models.eval_resize_size`, which timm's
`create_transform` computes alike) -> center crop -> normalise.

Both end with `ToNormalizedTensor` in place of timm's ToTensor + Normalize: the same float operations, so the
same tensor bit for bit, about twice as fast (0.24 vs 0.45 ms per 224 px image on this project's 2-core CPU,
where the rest of the training transform takes ~5 ms; docs/benchmarks.md).

Small images (image_size <= 32, CIFAR-like): a 0.08-area crop of a 32 px image is a few pixels, so training uses
the usual CIFAR reflect-padded RandomCrop instead of RandomResizedCrop (timm's flip, RandAugment and erasing
are kept), and evaluation uses crop_pct 1.0 (no 1/0.875 up-resize).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.auto_augment import AugmentOp, posterize
from timm.data.transforms import MaybeToTensor, str_to_interp_mode
from timm.data.transforms_factory import transforms_imagenet_train
from torchvision import transforms

from ..models.configuration_deit import eval_resize_size

if TYPE_CHECKING:
    from .arguments import DataArguments

# The statistics the student is normalised with; a teacher trained with others must be re-normalised.
IMAGENET_MEAN: tuple[float, float, float] = tuple(IMAGENET_DEFAULT_MEAN)  # type: ignore[assignment]
IMAGENET_STD: tuple[float, float, float] = tuple(IMAGENET_DEFAULT_STD)  # type: ignore[assignment]
SMALL_IMAGE_SIZE = 32


def _posterize_zero_bits_safe(image: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's posterize, except that keeping 0 bits gives the black image Pillow < 13 returned for it.

    RandAugment's PosterizeIncreasing asks for 0 bits at magnitude 10, which `mstd0.5` around m9 draws now and
    then; Pillow 13 raises "bits must be between or equal to 1 and 8" there, killing a run after some hundreds
    of images. The black image is what the paper's runs (older Pillow) got.
    """
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size)
    return posterize(image, bits_to_keep, **kwargs)


def fix_timm_posterize(transform: Callable) -> Callable:
    """Make every RandAugment/AutoAugment posterize op in `transform` safe on Pillow 13 (in place; returned)."""
    pending = [transform]
    while pending:
        step = pending.pop()
        if isinstance(step, AugmentOp) and step.name.startswith("Posterize"):
            step.aug_fn = _posterize_zero_bits_safe
        pending += list(getattr(step, "transforms", None) or getattr(step, "ops", None) or [])
    return transform


class ToNormalizedTensor:
    """PIL RGB/L image (or uint8 HWC array) -> normalised float tensor [C, H, W]: torchvision's `ToTensor` then
    `Normalize(mean, std)` in one step.

    The arithmetic is theirs, in their order (x / 255, then - mean, then / std, in float32), so the output is
    bit-identical; what is saved is torchvision's uint8 HWC->CHW permute copy and the intermediate tensors. One
    contiguous uint8->float32 transposing copy does the layout change. Anything else (tensors, 16-bit or
    float images) goes through torchvision's own two steps.
    """

    def __init__(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1): broadcasts over H, W
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self._slow = transforms.Compose([MaybeToTensor(), transforms.Normalize(self.mean.flatten(), self.std.flatten())])

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, Image.Image) and image.mode in ("RGB", "L"):
            array = np.asarray(image)
        elif isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
            array = image
        else:
            return self._slow(image)
        if array.ndim == 2:
            array = array[:, :, None]  # (H, W) -> (H, W, 1)
        chw = array.transpose(2, 0, 1).astype(np.float32, order="C")  # (H, W, C) uint8 -> (C, H, W) float32
        return torch.from_numpy(chw).div_(255).sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def fuse_to_tensor_normalize(transform: transforms.Compose) -> transforms.Compose:
    """Replace the first ToTensor/MaybeToTensor directly followed by Normalize in `transform`, and in each nested
    Compose, with one `ToNormalizedTensor` (in place; returned)."""
    steps = transform.transforms
    for index in range(len(steps)):
        if isinstance(steps[index], transforms.Compose):
            fuse_to_tensor_normalize(steps[index])
    for index in range(len(steps) - 1):
        first, second = steps[index], steps[index + 1]
        if isinstance(first, (MaybeToTensor, transforms.ToTensor)) and isinstance(second, transforms.Normalize):
            steps[index : index + 2] = [ToNormalizedTensor(second.mean, second.std)]
            break
    return transform


def build_train_transform(args: DataArguments) -> Callable:
    """The training transform: PIL RGB image -> normalised float tensor [3, image_size, image_size] (uint8 tensor
    with `args.uint8_batches`)."""
    # timm's create_transform(is_training=True) calls this; we call it directly for `force_color_jitter`.
    primary, secondary, final = transforms_imagenet_train(
        img_size=args.image_size,
        scale=tuple(args.train_crop_scale),
        hflip=args.hflip,
        color_jitter=args.color_jitter,
        force_color_jitter=args.force_color_jitter,
        auto_augment=args.auto_augment,
        interpolation=args.interpolation,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        re_prob=args.reprob,
        re_mode=args.remode,
        re_count=args.recount,
        separate=True,
    )
    if args.image_size <= SMALL_IMAGE_SIZE:
        padding = args.small_image_padding if args.small_image_padding is not None else args.image_size // 8
        resize_mode = str_to_interp_mode("bicubic" if args.interpolation == "random" else args.interpolation)
        # Resize is a no-op on images already at image_size; it makes larger inputs usable too.
        steps = [transforms.Resize(args.image_size, resize_mode), transforms.RandomCrop(args.image_size, padding, padding_mode="reflect")]
        if args.hflip > 0:
            steps.append(transforms.RandomHorizontalFlip(args.hflip))
        primary = transforms.Compose(steps)
    if args.uint8_batches:
        # PIL (RGB, as decoded) -> uint8 [3, H, W], unscaled; ToTensor, Normalize and RandomErasing move to the
        # device (device_finish.py)
        final = transforms.PILToTensor()
    return fuse_to_tensor_normalize(fix_timm_posterize(transforms.Compose([primary, secondary, final])))


def build_eval_transform(args: DataArguments) -> Callable:
    """The evaluation transform: resize to image_size / eval_crop_pct, center crop, normalise."""
    return fuse_to_tensor_normalize(create_transform(
        input_size=args.image_size,
        is_training=False,
        interpolation="bicubic" if args.interpolation == "random" else args.interpolation,
        crop_pct=args.eval_crop_pct,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ))


def draft_size(args: DataArguments, train: bool) -> int | None:
    """Smallest side a JPEG may be decoded at without losing pixels the transform keeps (None: decode in full).

    Eval resizes the short side to image_size / crop_pct, so any larger decode is thrown away. Training crops at
    least sqrt(min_scale * 3/4) of the short side (RandomResizedCrop's smallest area and most extreme aspect
    ratio) and resizes that to image_size, so a decode at image_size / that fraction keeps every pixel of even
    the smallest crop. With jpeg_draft off (default) or small images, always decode in full.
    """
    if not args.jpeg_draft or args.image_size <= SMALL_IMAGE_SIZE:
        return None
    if not train:
        return eval_resize_size(args.image_size, args.eval_crop_pct)
    smallest_crop_fraction = math.sqrt(args.train_crop_scale[0] * 3 / 4)
    return math.ceil(args.image_size / smallest_crop_fraction)

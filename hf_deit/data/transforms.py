"""DeiT's training and evaluation transforms, built by timm's `create_transform` (not by hand).

Training (paper Table 9, `main.py`): RandomResizedCrop(scale 0.08-1, bicubic) -> horizontal flip -> RandAugment
`rand-m9-mstd0.5-inc1` -> ToTensor -> Normalize(ImageNet mean/std) -> RandomErasing(0.25, pixel mode).
Colour jitter 0.3 is in the paper's argument list, but timm (and therefore the paper's run) skips colour jitter
whenever RandAugment is on; we keep that (`force_color_jitter` turns it on).

Evaluation: resize the short side to int(image_size / 0.875) (bicubic) -> center crop -> normalise.

Small images (image_size <= 32, CIFAR-like): a 0.08-area crop of a 32 px image is a few pixels, so training uses
the usual CIFAR reflect-padded RandomCrop instead of RandomResizedCrop (timm's flip, RandAugment and erasing
are kept), and evaluation uses crop_pct 1.0 (no 1/0.875 up-resize).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.auto_augment import AugmentOp, posterize
from timm.data.transforms import str_to_interp_mode
from timm.data.transforms_factory import transforms_imagenet_train
from torchvision import transforms

if TYPE_CHECKING:
    from .arguments import DataArguments

# The statistics the student is normalised with; a teacher trained with others must be re-normalised.
IMAGENET_MEAN: tuple[float, float, float] = tuple(IMAGENET_DEFAULT_MEAN)  # type: ignore[assignment]
IMAGENET_STD: tuple[float, float, float] = tuple(IMAGENET_DEFAULT_STD)  # type: ignore[assignment]
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "random")
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


def build_train_transform(args: DataArguments) -> Callable:
    """The training transform: PIL RGB image -> normalised float tensor [3, image_size, image_size]."""
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
    return fix_timm_posterize(transforms.Compose([primary, secondary, final]))


def build_eval_transform(args: DataArguments) -> Callable:
    """The evaluation transform: resize to image_size / eval_crop_pct, center crop, normalise."""
    return create_transform(
        input_size=args.image_size,
        is_training=False,
        interpolation="bicubic" if args.interpolation == "random" else args.interpolation,
        crop_pct=args.eval_crop_pct,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


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
        return int(args.image_size / args.eval_crop_pct)
    smallest_crop_fraction = math.sqrt(args.train_crop_scale[0] * 3 / 4)
    return math.ceil(args.image_size / smallest_crop_fraction)

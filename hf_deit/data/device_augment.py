"""`--device_augment`: the DeiT training augmentation on the training device, in the training step.

Workers hand over encoded images and seeds (hf_deit.data.device_decode); `DistillationTrainer.compute_loss` calls
`DeviceAugment` on the batch, which runs on the device the batch's labels are on:

    decode (nvjpeg on CUDA) -> per image: RandomResizedCrop (or CIFAR's padded crop), flip -> stack uint8
    -> RandAugment (per op over the batch) -> x / 255, - mean, / std -> random erasing
    -> {"pixel_values": float [B, 3, S, S], "crop_box", "crop_flip", the other keys}

Every random number an image gets is drawn on the host from `random.Random(its seed)`, in the order and with the
calls timm's transform makes (RandomResizedCropAndInterpolation.get_params, the flip, RandAugment, RandomErasing),
and the erasing noise from a generator on the device seeded from the same stream. Nothing draws from the global
RNGs, so the model's dropout and Mixup see the same sequence as without the flag, and a resumed run, which hands the
same seeds (seeding.py), augments every image identically. The host-side draws need only the decoded sizes, which
are known without waiting for the device.

What differs from the PIL path (docs/data.md): the resize is torchvision's tensor bicubic with antialiasing (within
2 levels of Pillow's on real photos), RandAugment's geometric ops interpolate with grid_sample's bicubic (a = -0.75;
Pillow's a = -0.5), colour ops round as torchvision does (within 1 level of Pillow), and for a given seed the draws
are not the ones the PIL path makes for that image (same distributions, tested against timm).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torchvision.transforms.v2.functional as TF

from .device_decode import ENCODED_IMAGES, EncodedBatch, decode_batch
from .device_finish import DeviceFinish
from .device_randaugment import OpDraw, RandAugmentConfig, apply_rand_augment, draw_rand_augment, parse_rand_augment
from .device_randaugment import to_device
from .transforms import IMAGENET_MEAN, IMAGENET_STD, SMALL_IMAGE_SIZE

if TYPE_CHECKING:
    from .arguments import DataArguments

DEVICE_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
ERASE_AREA = (0.02, 1 / 3)  # timm's RandomErasing defaults, as its training transform builds it
ERASE_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))


@dataclass(frozen=True)
class DeviceAugmentConfig:
    """The training augmentation, from `DataArguments` (`from_data_args`)."""

    image_size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    padding: int | None = None  # small images: reflect-padded random crop with this padding instead of RRC
    hflip: float = 0.5
    rand_augment: RandAugmentConfig | None = None
    reprob: float = 0.25
    remode: str = "pixel"
    recount: int = 1

    @classmethod
    def from_data_args(cls, args: DataArguments) -> DeviceAugmentConfig:
        padding = None
        if args.image_size <= SMALL_IMAGE_SIZE:  # as build_train_transform
            padding = args.small_image_padding if args.small_image_padding is not None else args.image_size // 8
        rand_augment = None
        if args.auto_augment:
            rand_augment = parse_rand_augment(args.auto_augment, args.image_size, IMAGENET_MEAN, args.interpolation)
        return cls(
            image_size=args.image_size, scale=tuple(args.train_crop_scale), interpolation=args.interpolation,
            padding=padding, hflip=args.hflip, rand_augment=rand_augment, reprob=args.reprob, remode=args.remode,
            recount=args.recount,
        )


@dataclass
class ImageDraws:
    """Everything random about one image's augmentation."""

    crop: tuple[int, int, int, int]  # top, left, height, width (small images: in the padded image)
    box: tuple[float, float, float, float]  # the crop as (x0, y0, x1, y1) fractions of the image (crop_record.py)
    flip: bool
    ops: list[OpDraw] = field(default_factory=list)
    erase: list[tuple[int, int, int, int]] = field(default_factory=list)  # top, left, height, width
    noise_seed: int = 0


def draw_crop(rng: random.Random, width: int, height: int, scale, ratio) -> tuple[int, int, int, int]:
    """timm's `RandomResizedCropAndInterpolation.get_params`: (top, left, height, width)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = rng.uniform(*scale) * area
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target_area * aspect_ratio)))
        crop_h = int(round(math.sqrt(target_area / aspect_ratio)))
        if crop_w <= width and crop_h <= height:
            return rng.randint(0, height - crop_h), rng.randint(0, width - crop_w), crop_h, crop_w
    in_ratio = width / height  # fallback: the central crop at the nearest allowed aspect ratio
    crop_w, crop_h = width, height
    if in_ratio < min(ratio):
        crop_h = int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_w = int(round(height * max(ratio)))
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def draw_erasing(rng: random.Random, size: int, prob: float, max_count: int) -> list[tuple[int, int, int, int]]:
    """timm's `RandomErasing._erase` on a size x size image: the boxes (top, left, height, width) it erases."""
    if rng.random() > prob:
        return []
    count = 1 if max_count == 1 else rng.randint(1, max_count)
    boxes = []
    for _ in range(count):
        for _ in range(10):
            target_area = rng.uniform(*ERASE_AREA) * size * size / count
            aspect_ratio = math.exp(rng.uniform(*ERASE_LOG_ASPECT))
            h, w = int(round(math.sqrt(target_area * aspect_ratio))), int(round(math.sqrt(target_area / aspect_ratio)))
            if w < size and h < size:
                boxes.append((rng.randint(0, size - h), rng.randint(0, size - w), h, w))
                break
    return boxes


def _crop_and_box(rng: random.Random, width: int, height: int, config: DeviceAugmentConfig):
    if config.padding is None:
        top, left, h, w = draw_crop(rng, width, height, config.scale, config.ratio)
        return (top, left, h, w), (left / width, top / height, (left + w) / width, (top + h) / height)
    # small images: torchvision's RandomCrop on the reflect-padded image, after Resize(image_size) (short side)
    pad, size = config.padding, config.image_size
    if width <= height:
        width, height = size, int(size * height / width)
    else:
        width, height = int(size * width / height), size
    top, left = 0, 0
    if (height + 2 * pad, width + 2 * pad) != (size, size):  # RandomCrop.get_params draws unless the sizes match
        top, left = rng.randint(0, height + 2 * pad - size), rng.randint(0, width + 2 * pad - size)
    x0, y0 = (left - pad) / width, (top - pad) / height
    return (top, left, size, size), (x0, y0, x0 + size / width, y0 + size / height)


def draw_image(seed: int, width: int, height: int, config: DeviceAugmentConfig) -> ImageDraws:
    """All of one image's draws, in timm's order: crop, flip, RandAugment, erasing, then the erasing noise's seed."""
    rng = random.Random(seed)
    crop, box = _crop_and_box(rng, width, height, config)
    draws = ImageDraws(crop, box, flip=config.hflip > 0 and rng.random() < config.hflip)
    if config.rand_augment is not None:
        draws.ops = draw_rand_augment(rng, config.rand_augment)
    if config.reprob > 0:
        draws.erase = draw_erasing(rng, config.image_size, config.reprob, config.recount)
    draws.noise_seed = rng.getrandbits(63)
    return draws


def crop_and_flip(image: torch.Tensor, draws: ImageDraws, config: DeviceAugmentConfig) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, S, S]: the drawn crop resized to S (or the padded crop), flipped if drawn."""
    size, top, left, height, width = config.image_size, *draws.crop
    mode = TF.InterpolationMode(config.interpolation)
    if config.padding is None:
        out = TF.resized_crop(image, top, left, height, width, [size, size], interpolation=mode, antialias=True)
    else:
        image = TF.resize(image, [size], interpolation=mode, antialias=True)  # a no-op at size
        out = TF.pad(image, [config.padding], padding_mode="reflect")[:, top : top + size, left : left + size]
    return TF.horizontal_flip(out) if draws.flip else out


def erase(pixel_values: torch.Tensor, draws: list[ImageDraws], mode: str) -> torch.Tensor:
    """timm's RandomErasing fill in the drawn boxes (in place): normal noise per pixel ('pixel'), per box and
    channel ('rand'), or zeros ('const'), from a generator on the device seeded per image."""
    for index, image_draws in enumerate(draws):
        if not image_draws.erase:
            continue
        generator = torch.Generator(device=pixel_values.device).manual_seed(image_draws.noise_seed)
        for top, left, h, w in image_draws.erase:
            shape = (pixel_values.shape[1], h, w) if mode == "pixel" else (pixel_values.shape[1], 1, 1)
            if mode == "const":
                fill = torch.zeros(shape, device=pixel_values.device)
            else:
                fill = torch.empty(shape, device=pixel_values.device).normal_(generator=generator)
            pixel_values[index, :, top : top + h, left : left + w] = fill
    return pixel_values


class DeviceAugment:
    """The training step's half of --device_augment (see the module docstring). `config=None`: a batch of encoded
    images is refused with a message saying what to pass."""

    def __init__(self, config: DeviceAugmentConfig | None) -> None:
        self.config = config
        self.finish = DeviceFinish(IMAGENET_MEAN, IMAGENET_STD)  # normalisation only: bit-identical to the workers'

    def augment(self, images: list[torch.Tensor], seeds: list[int]) -> tuple[torch.Tensor, list[ImageDraws]]:
        """Decoded uint8 images (one device) and their seeds -> normalised, augmented float batch and the draws."""
        config = self.config
        draws = [draw_image(seed, image.shape[-1], image.shape[-2], config) for image, seed in zip(images, seeds)]
        batch = torch.stack([crop_and_flip(image, d, config) for image, d in zip(images, draws)])
        if config.rand_augment is not None:
            batch = apply_rand_augment(batch, [d.ops for d in draws], config.rand_augment)
        pixel_values = self.finish.normalize(batch)
        return erase(pixel_values, draws, config.remode), draws

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """A collated batch with `encoded_images` -> the same batch with `pixel_values`, `crop_box`, `crop_flip`;
        rows whose image does not decode are dropped from every per-row tensor."""
        if self.config is None:
            raise ValueError(
                "This batch holds encoded images (DataArguments.device_augment) but the trainer has no DataArguments "
                "with device_augment=True: pass data_args= to DistillationTrainer."
            )
        encoded: EncodedBatch = inputs[ENCODED_IMAGES]
        device = inputs["labels"].device
        decoded = decode_batch(encoded, device)
        kept = [index for index, image in enumerate(decoded) if image is not None]
        pixel_values, draws = self.augment([decoded[i] for i in kept], [encoded.seeds[i] for i in kept])
        out = {key: value for key, value in inputs.items() if key != ENCODED_IMAGES}
        if len(kept) < len(decoded):
            rows = to_device(kept, torch.long, device)
            out = {k: v.index_select(0, rows) if isinstance(v, torch.Tensor) else v for k, v in out.items()}
        out["pixel_values"] = pixel_values
        out["crop_box"] = to_device([d.box for d in draws], torch.float32, device)
        out["crop_flip"] = to_device([d.flip for d in draws], torch.bool, device)
        return out


def build_device_augment(data_args: DataArguments | None) -> DeviceAugment:
    """The step-side augmentation for `data_args` (one that refuses encoded batches without --device_augment)."""
    if data_args is None or not data_args.device_augment:
        return DeviceAugment(None)
    return DeviceAugment(DeviceAugmentConfig.from_data_args(data_args))


__all__ = [
    "ENCODED_IMAGES",
    "DeviceAugment",
    "DeviceAugmentConfig",
    "ImageDraws",
    "build_device_augment",
    "crop_and_flip",
    "draw_crop",
    "draw_erasing",
    "draw_image",
    "erase",
]

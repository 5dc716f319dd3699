"""`--device_augment`, the data-loader half: workers hand over each training image still encoded, with its
augmentation seed; the training step decodes the batch on the training device (hf_deit.data.device_augment).

Worker, per image (`EncodeForDevice`, in place of `DecodeAndTransform`): read the file's bytes and open its header
(no pixels decoded). A baseline/progressive JPEG in RGB or grayscale without an EXIF rotation travels as its bytes;
anything else (PNG, CMYK JPEG, an EXIF-rotated photo, ...) is decoded right there by hf_deit's decoder
(`decode_image`: the same pixels as the default path) and travels as uint8 [3, H, W]. A file whose header is broken
is counted and skipped, as on the default path. The image's augmentation seed is drawn from the RNGs that
`seeding.py` seeds for this image (run seed, rank, epoch, position), so a resumed run draws the same seed.

Step, per batch (`decode_batch`): `torchvision.io.decode_jpeg` on the list of JPEGs, with `device=` the training
device (CUDA: one batched nvjpeg call; CPU: libjpeg-turbo, the pixels Pillow gives, tested); decoded images are moved
to the device. A JPEG that fails to decode there (a truncated file) is retried with hf_deit's decoder, and dropped
(with a warning) only when that fails too.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import pil_to_tensor

from .decode import BadImageCounter, BrokenImageError, decode_image, image_key, open_image_header
from .row_key import ROW_KEY, row_key

logger = logging.getLogger(__name__)

ENCODED_IMAGE = "encoded_image"  # an example's key (EncodedImage)
ENCODED_IMAGES = "encoded_images"  # a batch's key (EncodedBatch)
SEED_BITS = 63


@dataclass
class EncodedImage:
    """One training image as a worker hands it over: JPEG bytes (decoded in the step) or uint8 [3, H, W] pixels
    (decoded in the worker), and its augmentation seed."""

    data: bytes | torch.Tensor
    seed: int


@dataclass
class EncodedBatch:
    """A batch's images, kept as they are by the Trainer: it moves the tensors it finds in a batch (in dicts and
    lists too) to the device, and objects with a `.to`; this has none. So JPEG bytes stay on the host, where nvjpeg
    reads them, and the seeds stay Python ints (reading them back from a GPU would be a host sync)."""

    images: list[EncodedImage]

    def __len__(self) -> int:
        return len(self.images)


def decodes_on_device(image: Any) -> bool:
    """Whether `decode_jpeg` gives the pixels hf_deit's decoder would (an opened PIL image's header)."""
    return image.format == "JPEG" and image.mode in ("RGB", "L") and image.getexif().get(0x0112, 1) == 1


class EncodeForDevice:
    """Worker side of --device_augment: an example's undecoded `image` -> `EncodedImage` (None when broken),
    `labels` and `example_key` (a cached teacher's row key). A class so that workers can pickle it."""

    def __init__(self, counter: BadImageCounter) -> None:
        self.counter = counter

    def encode(self, raw: Any, fallback_key: str) -> EncodedImage | None:
        try:
            data, header = open_image_header(raw)
            pixels = data if decodes_on_device(header) else pil_to_tensor(decode_image(data))
        except BrokenImageError as error:
            self.counter.record_broken(image_key(raw, fallback_key), str(error))
            return None
        self.counter.record_ok()
        # Drawn from the RNGs seeded for this image (seeding.py), so it is a function of the image's place in the run.
        return EncodedImage(pixels, random.getrandbits(SEED_BITS))

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        """One example (IterableDataset.map): returns the new columns."""
        key = str(example.get("__key__", example.get("key", "<stream>")))
        return {ENCODED_IMAGE: self.encode(example["image"], key), "labels": example["label"],
                ROW_KEY: row_key(example["image"], example["label"])}

    def batch(self, batch: dict[str, list]) -> dict[str, list]:
        """A batch (Dataset.with_transform): image/label become encoded_image/labels, other columns pass through."""
        keys = batch.get("__key__", batch.get("key", ["<row>"] * len(batch["image"])))
        out = {name: values for name, values in batch.items() if name not in ("image", "label")}
        out[ENCODED_IMAGE] = [self.encode(raw, str(key)) for raw, key in zip(batch["image"], keys)]
        out[ROW_KEY] = [row_key(raw, label) for raw, label in zip(batch["image"], batch["label"])]
        out["labels"] = batch["label"]
        return out


def _to_device(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return pixels.pin_memory().to(device, non_blocking=True)
    return pixels.to(device)


def _decode_one(data: bytes, device: torch.device) -> torch.Tensor | None:
    """One JPEG that failed in the batched call: the device decoder alone, else hf_deit's, else None (broken)."""
    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    try:
        return _to_device(pil_to_tensor(decode_image(data)), device)
    except BrokenImageError as error:
        logger.warning("--device_augment: dropped an image that does not decode (%s)", error)
        return None


def decode_batch(batch: EncodedBatch, device: torch.device) -> list[torch.Tensor | None]:
    """Every image of the batch as uint8 [3, H, W] on `device` (None for one that does not decode)."""
    images: list[torch.Tensor | None] = [None] * len(batch)
    jpegs = []
    for index, image in enumerate(batch.images):
        if isinstance(image.data, bytes):
            jpegs.append(index)
        else:  # decoded by the worker
            images[index] = _to_device(image.data, device)
    if jpegs:
        encoded = [torch.frombuffer(bytearray(batch.images[index].data), dtype=torch.uint8) for index in jpegs]
        try:
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad file fails the whole call: find it
            decoded = [_decode_one(batch.images[index].data, device) for index in jpegs]
        for index, pixels in zip(jpegs, decoded):
            images[index] = pixels
    return images


__all__ = ["ENCODED_IMAGE", "ENCODED_IMAGES", "EncodeForDevice", "EncodedBatch", "EncodedImage", "decode_batch"]

"""`--device_augment`, the data-loader half: workers hand over each training image still encoded, with its
augmentation seed; the training step decodes the batch on the training device (hf_deit.data.device_augment).

Worker, per image (`EncodeForDevice`, in place of `DecodeAndTransform`): read the file's bytes and open its header
(no pixels decoded). A baseline/progressive JPEG in RGB or grayscale without an EXIF rotation travels as its bytes;
anything else (PNG, CMYK JPEG, an EXIF-rotated photo, ...) is decoded right there by hf_deit's decoder
(`decode_image`: the same pixels as the default path) and travels as uint8 [3, H, W]. A file whose header is broken
is counted and skipped, as on the default path. The image's augmentation seed is drawn from the RNGs that
`seeding.py` seeds for this image (run seed, rank, epoch, position), so a resumed run draws the same seed.

Collator (`EncodedBatch.from_images`): the batch's JPEG files back to back in one uint8 tensor, the decoded images,
the seeds. Step, per batch (`decode_batch`): `torchvision.io.decode_jpeg` on the list of JPEGs, with `device=` the training
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
from .row_key import CONTENT_KEY, ROW_KEY, content_hash, row_key

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
    """A batch's images as the collator packs them (`from_images`), kept as they are by the Trainer.

    The JPEG files sit back to back in one uint8 tensor: out of a worker it travels through shared memory like any
    batch (Python bytes would be pickled through the worker's pipe, and a worker whose pipe is full cannot exit when
    the training process dies). The Trainer moves the tensors it finds in a batch (in dicts and lists too) and
    objects with a `.to` to the device; this has none, so the files stay on the host, where nvjpeg reads them, and
    the seeds stay Python ints (reading them back from a GPU would be a host sync). `pin_memory` (DataLoader's
    pin_memory=True) pins them for the device's copy.
    """

    jpeg_bytes: torch.Tensor  # uint8 [total bytes]
    spans: list[tuple[int, int] | None]  # image i's JPEG file: jpeg_bytes[start:end]; None for a decoded image
    decoded: list[torch.Tensor | None]  # image i decoded by the worker (uint8 [3, H, W]); None for a JPEG
    seeds: list[int]

    @classmethod
    def from_images(cls, images: list[EncodedImage]) -> EncodedBatch:
        spans, start = [], 0
        for image in images:
            size = len(image.data) if isinstance(image.data, bytes) else None
            spans.append((start, start + size) if size is not None else None)
            start += size or 0
        files = bytearray().join(image.data for image in images if isinstance(image.data, bytes))
        jpeg_bytes = torch.frombuffer(files, dtype=torch.uint8) if files else torch.empty(0, dtype=torch.uint8)
        decoded = [None if isinstance(image.data, bytes) else image.data for image in images]
        return cls(jpeg_bytes, spans, decoded, [image.seed for image in images])

    def pin_memory(self) -> EncodedBatch:
        pinned = [None if d is None else d.pin_memory() for d in self.decoded]
        return EncodedBatch(self.jpeg_bytes.pin_memory(), self.spans, pinned, self.seeds)

    def __len__(self) -> int:
        return len(self.seeds)


def decodes_on_device(image: Any) -> bool:
    """Whether `decode_jpeg` gives the pixels hf_deit's decoder would (an opened PIL image's header)."""
    return image.format == "JPEG" and image.mode in ("RGB", "L") and image.getexif().get(0x0112, 1) == 1


class EncodeForDevice:
    """Worker side of --device_augment: an example's undecoded `image` -> `EncodedImage` (None when broken),
    `labels`, and a cached teacher's `example_key` (row key) and `example_content` (hash of the bytes it was made
    from). A class so that workers can pickle it."""

    def __init__(self, counter: BadImageCounter) -> None:
        self.counter = counter

    def encode(self, raw: Any, fallback_key: str) -> tuple[EncodedImage | None, int]:
        """The encoded image (None when broken) and the content hash of its bytes (0 when unreadable)."""
        data = None
        try:
            data, header = open_image_header(raw)
            pixels = data if decodes_on_device(header) else pil_to_tensor(decode_image(data))
        except BrokenImageError as error:
            self.counter.record_broken(image_key(raw, fallback_key), str(error))
            return None, content_hash(data) if data is not None else 0
        self.counter.record_ok()
        # Drawn from the RNGs seeded for this image (seeding.py), so it is a function of the image's place in the run.
        return EncodedImage(pixels, random.getrandbits(SEED_BITS)), content_hash(data)

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        """One example (IterableDataset.map): returns the new columns."""
        key = str(example.get("__key__", example.get("key", "<stream>")))
        encoded, content = self.encode(example["image"], key)
        return {ENCODED_IMAGE: encoded, "labels": example["label"], CONTENT_KEY: content,
                ROW_KEY: row_key(example["image"], example["label"])}

    def batch(self, batch: dict[str, list]) -> dict[str, list]:
        """A batch (Dataset.with_transform): image/label become encoded_image/labels, other columns pass through."""
        keys = batch.get("__key__", batch.get("key", ["<row>"] * len(batch["image"])))
        out = {name: values for name, values in batch.items() if name not in ("image", "label")}
        encoded = [self.encode(raw, str(key)) for raw, key in zip(batch["image"], keys)]
        out[ENCODED_IMAGE], out[CONTENT_KEY] = [image for image, _ in encoded], [content for _, content in encoded]
        out[ROW_KEY] = [row_key(raw, label) for raw, label in zip(batch["image"], batch["label"])]
        out["labels"] = batch["label"]
        return out


def _to_device(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    # non_blocking: from pinned memory (pin_memory above) the copy does not wait for the queued kernels
    return pixels.to(device, non_blocking=pixels.is_pinned())


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """One JPEG that failed in the batched call: the device decoder alone, else hf_deit's, else None (broken)."""
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    try:
        return _to_device(pil_to_tensor(decode_image(data.numpy().tobytes())), device)
    except BrokenImageError as error:
        logger.warning("--device_augment: dropped an image that does not decode (%s)", error)
        return None


def decode_batch(batch: EncodedBatch, device: torch.device) -> list[torch.Tensor | None]:
    """Every image of the batch as uint8 [3, H, W] on `device` (None for one that does not decode)."""
    images = [None if pixels is None else _to_device(pixels, device) for pixels in batch.decoded]
    jpegs = [index for index, span in enumerate(batch.spans) if span is not None]
    files = [batch.jpeg_bytes[slice(*batch.spans[index])] for index in jpegs]
    if files:
        try:
            decoded = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad file fails the whole call: find it
            decoded = [_decode_one(data, device) for data in files]
        for index, pixels in zip(jpegs, decoded):
            images[index] = pixels
    return images


__all__ = ["ENCODED_IMAGE", "ENCODED_IMAGES", "EncodeForDevice", "EncodedBatch", "EncodedImage", "decode_batch"]

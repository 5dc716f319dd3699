# Copyright 2026 The hf_deit Authors. All rights reserved.
# Licensed under the Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).
"""The one image decoder of hf_deit: bytes or PIL image -> RGB PIL image, for training and inference alike.

Training (`hf_deit.data.decode_image`), the image processor, `DeiTImageClassificationPipeline` and `hf-deit predict`
all convert images here, so an odd image reaches the model as the same pixels in both:
  * 16-/32-bit grayscale ('I;16', 'I', 'F') is scaled to 8 bits (Pillow's `convert("RGB")` clips it to white);
  * grayscale, CMYK, palette (transparency via RGBA), RGBA/LA become RGB, alpha dropped (as timm and torchvision);
  * the EXIF orientation is applied (as transformers' `load_image` and datasets' `Image` feature).
It imports only Pillow and numpy. It does not travel with saved model folders (only configuration_deit.py and
modeling_deit.py do): where hf_deit is not installed, transformers' own loader and image processor convert images.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """16-/32-bit grayscale ('I;16', 'I', 'F') to 'L' by scaling: `convert('L')` would clip them to white."""
    array = np.asarray(image)
    if image.mode == "F":
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / max(high - low, 1e-12) * 255.0
    else:
        # 16-bit PNGs open as 'I;16' or 'I' depending on the Pillow version; both span 0..65535.
        scaled = array.astype(np.float64) / 257.0 if array.max() > 255 else array
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # mode L


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB. Alpha is dropped (as in timm and torchvision); palette transparency goes via RGBA."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_bit_depth_to_8bit(image)
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # avoids Pillow's "palette with transparency" warning
    return image.convert("RGB")


class UnreadableImageError(OSError):
    """An image file or URL that cannot be decoded; the message names it and says why."""


# What Pillow raises on bad input. SyntaxError, ValueError and EOFError come from some plugins' header parsers.
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def open_rgb(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Decode encoded image bytes to a fully loaded, upright RGB image. Pillow's errors propagate.

    `draft_size`: let libjpeg decode a JPEG at a reduced scale (1/2, 1/4, 1/8) as long as both sides stay
    >= draft_size. Callers pass it only where the next step downsamples below that size anyway.
    """
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        # Pillow's message names only the in-memory stream (<_io.BytesIO object at 0x...>); callers add the file.
        raise UnidentifiedImageError("cannot identify image file (not an image, or a format Pillow cannot read)") from None
    if draft_size is not None and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    image.load()  # decode now: a truncated file fails here, not later inside a transform
    return upright_rgb(image)


def upright_rgb(image: Image.Image) -> Image.Image:
    """An opened PIL image with its EXIF orientation applied, converted by `to_rgb`."""
    image = ImageOps.exif_transpose(image) if image.getexif().get(0x0112, 1) != 1 else image
    return to_rgb(image)


def load_image(source: str | bytes | Image.Image) -> Image.Image:
    """A path, URL, encoded bytes or PIL image -> RGB PIL image, decoded like the training data.

    A file or URL that cannot be read or decoded raises `UnreadableImageError` naming it (a missing file stays a
    FileNotFoundError, which names it already)."""
    if isinstance(source, Image.Image):
        return upright_rgb(source)
    if isinstance(source, (bytes, bytearray)):
        return open_rgb(bytes(source))
    if source.startswith(("http://", "https://")):
        import httpx  # a transformers dependency

        data = httpx.get(source, timeout=30, follow_redirects=True).content
    else:
        with open(source, "rb") as f:
            data = f.read()
    try:
        return open_rgb(data)
    except PILLOW_ERRORS as error:
        reason = str(error) or type(error).__name__
        raise UnreadableImageError(f"cannot read the image {source}: {reason}") from error


__all__ = ["PILLOW_ERRORS", "UnreadableImageError", "load_image", "open_rgb", "to_rgb", "upright_rgb"]

"""Decoding raw image bytes into RGB PIL images, and counting the ones that cannot be decoded.

Every source (folder, parquet, webdataset, Hub) is read with `datasets.Image(decode=False)`, so an example's
image arrives as `{"bytes": ..., "path": ...}` and is decoded exactly once, here. That is where a bad file can
be caught: datasets' own decoder would raise inside the DataLoader and kill the run.

- Odd but valid images become RGB (the conversion lives in `hf_deit.models.image_decoding`, shared with inference):
  grayscale (L, 1, I), 16-bit PNG (I;16, scaled, not clipped), CMYK JPEG,
  RGBA / LA / palette PNG (alpha dropped, like timm's and torchvision's loaders), EXIF rotation applied (like
  datasets' own `Image` feature).
- Broken ones are skipped and counted by a `BadImageCounter`: zero-byte files, non-images, truncated files,
  decompression bombs (more pixels than `PIL.Image.MAX_IMAGE_PIXELS`; Pillow only warns below twice that limit,
  we treat the warning as an error too).
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import warnings
from typing import Any

from PIL import Image

from ..models.image_decoding import PILLOW_ERRORS, open_rgb, to_rgb  # noqa: F401  (to_rgb is part of this module's API)

logger = logging.getLogger(__name__)

# Load Pillow's common format plugins (JPEG, PNG, ...) now, in the process that starts the DataLoader workers:
# forked workers inherit them instead of each importing them at its first image, every epoch (~45 ms a worker).
Image.preinit()

# What Pillow raises on bad input (hf_deit.models.image_decoding), plus its decompression-bomb warning, which
# decode_image turns into an error.
DECODE_ERRORS = (*PILLOW_ERRORS, Image.DecompressionBombWarning)


class BrokenImageError(ValueError):
    """One image could not be decoded (the message says why)."""


class TooManyBadImagesError(RuntimeError):
    """More than the allowed fraction of images was broken: the dataset is probably corrupt."""


def read_image_bytes(raw: Any) -> bytes:
    """Bytes of a `datasets.Image(decode=False)` value (`{"bytes", "path"}`), raw bytes, or a path."""
    if isinstance(raw, dict):
        if raw.get("bytes") is not None:
            return raw["bytes"]
        if raw.get("path"):
            with open(raw["path"], "rb") as f:
                return f.read()
        raise BrokenImageError("no bytes and no path")
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    if isinstance(raw, str):
        with open(raw, "rb") as f:
            return f.read()
    raise BrokenImageError(f"unsupported image value of type {type(raw).__name__}")


def decode_image(raw: Any, draft_size: int | None = None) -> Image.Image:
    """Decode one image to a fully loaded RGB PIL image, or raise `BrokenImageError` saying why.

    `draft_size`: let libjpeg decode a JPEG at a reduced scale (1/2, 1/4, 1/8) as long as both sides stay
    >= draft_size. Callers pass it only where the next step downsamples below that size anyway.
    """
    data = read_image_bytes(raw)
    if not data:
        raise BrokenImageError("zero-byte file")
    try:
        with warnings.catch_warnings():
            # Between MAX_IMAGE_PIXELS and twice that, Pillow only warns: treat it as the bomb it is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return open_rgb(data, draft_size)  # the decoder inference uses too (hf_deit.models.image_decoding)
    except DECODE_ERRORS as error:
        raise BrokenImageError(f"{type(error).__name__}: {error}") from error


def open_image_header(raw: Any) -> tuple[bytes, Image.Image]:
    """The encoded bytes of `raw` and the image opened lazily (format, mode, size and EXIF read; no pixels decoded),
    or `BrokenImageError` for what can be told from the header (zero bytes, not an image, a decompression bomb).
    A truncated file passes here; it fails when decoded."""
    data = read_image_bytes(raw)
    if not data:
        raise BrokenImageError("zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # as decode_image
            image = Image.open(io.BytesIO(data))
            image.getexif()  # parse the EXIF block now: a broken one fails here, not in the caller
            return data, image
    except DECODE_ERRORS as error:
        raise BrokenImageError(f"{type(error).__name__}: {error}") from error


class BadImageCounter:
    """Counts seen and broken images across DataLoader worker processes, and stops a run that has too many.

    The two counts live in shared memory (`multiprocessing.Value`), created in the main process and inherited
    by forked workers, so `seen`/`broken` read in the main process include every worker's images. A copy
    (datasets deep-copies its pipelines) shares the same counts.

    The stop rule: raise `TooManyBadImagesError` when `broken > max_bad_fraction * max(seen, expected_total,
    min_denominator)`. `expected_total` (the dataset size when known) and `min_denominator` keep one early
    broken image from stopping a run before the fraction means anything.
    """

    def __init__(
        self,
        max_bad_fraction: float = 0.01,
        expected_total: int | None = None,
        min_denominator: int = 100,
        max_logged_keys: int = 5,
        name: str = "dataset",
    ) -> None:
        self.max_bad_fraction = max_bad_fraction
        self.expected_total = expected_total or 0
        self.min_denominator = min_denominator
        self.max_logged_keys = max_logged_keys
        self.name = name
        self._seen = multiprocessing.Value("q", 0)
        self._broken = multiprocessing.Value("q", 0)
        self.first_broken_keys: list[str] = []  # per process: the keys this process skipped first

    def __deepcopy__(self, memo: dict) -> BadImageCounter:
        return self  # copies must share the counts

    def __getstate__(self) -> dict[str, Any]:
        # Shared memory travels only to processes being started (spawn/forkserver workers). Any other pickling
        # (datasets fingerprinting a transform) gets a snapshot of the counts, unshared.
        state = self.__dict__.copy()
        if not _spawning():
            state["_seen"], state["_broken"] = self.seen, self.broken
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in ("_seen", "_broken"):
            if isinstance(state[name], int):
                state[name] = multiprocessing.Value("q", state[name])
        self.__dict__.update(state)

    @property
    def seen(self) -> int:
        return self._seen.value

    @property
    def broken(self) -> int:
        return self._broken.value

    def record_ok(self) -> None:
        with self._seen.get_lock():
            self._seen.value += 1

    def record_broken(self, key: str, reason: str) -> None:
        """Count one broken image, warn about it, and raise if the dataset now looks corrupt."""
        with self._seen.get_lock():
            self._seen.value += 1
            seen = self._seen.value
        with self._broken.get_lock():
            self._broken.value += 1
            broken = self._broken.value
        if len(self.first_broken_keys) < self.max_logged_keys:
            self.first_broken_keys.append(key)
        # Warn for the first few, then at powers of two, so a bad dataset cannot flood the log. `broken` is the
        # count shared by all DataLoader workers (each value is seen by one of them), so the rule holds for the run,
        # not per worker; the key list is per process and capped, it cannot say how many there were.
        if broken <= self.max_logged_keys or broken & (broken - 1) == 0:
            logger.warning(
                "%s: skipped broken image %s (%s); %d broken of %d seen so far, first keys: %s",
                self.name, key, reason, broken, seen, ", ".join(self.first_broken_keys),
            )
        allowed = self.max_bad_fraction * max(seen, self.expected_total, self.min_denominator)
        if broken > allowed:
            raise TooManyBadImagesError(
                f"{self.name}: {broken} broken images out of {seen} seen, more than max_bad_fraction="
                f"{self.max_bad_fraction} allows ({allowed:.1f}). First keys: {', '.join(self.first_broken_keys)}. "
                "Check the files (or re-create the shards); raise --max_bad_fraction only if this is expected."
            )

    def record_scan(self, total: int, broken: list[tuple[str, str]]) -> None:
        """Count the result of a validation pass over `total` images, `broken` being (key, reason) pairs."""
        with self._seen.get_lock():
            self._seen.value += total - len(broken)
        for key, reason in broken:
            self.record_broken(key, reason)

    def summary(self) -> str:
        return f"{self.name}: {self.broken} broken images skipped out of {self.seen} seen"


def _spawning() -> bool:
    from multiprocessing.context import get_spawning_popen

    return get_spawning_popen() is not None


def image_key(raw: Any, fallback: str = "<unknown>") -> str:
    """A readable name for an image in warnings: its path when it has one."""
    if isinstance(raw, dict) and raw.get("path"):
        return str(raw["path"])
    if isinstance(raw, str):
        return raw
    return fallback

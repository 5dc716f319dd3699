"""Odd-but-valid images decode to RGB tensors of the configured size; broken ones are skipped and counted exactly;
too many broken images stop the run."""

import io
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_deit.data import (
    BadImageCounter,
    BrokenImageError,
    DataArguments,
    TooManyBadImagesError,
    DeiTCollator,
    build_datasets,
    decode_image,
)

SIZE = 32


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (8-bit gray) and has no pixel data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def odd_valid_images(photo: Path) -> dict[str, bytes]:
    """A real photo in every odd-but-valid encoding we promise to read."""
    rgb = Image.open(photo).convert("RGB").resize((96, 72))
    gray16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)  # mode I;16
    palette_transparent = rgb.convert("P", palette=Image.ADAPTIVE, colors=64)
    palette_transparent.info["transparency"] = 0
    return {
        "gray.jpg": _save(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "rgba.png": _save(rgb.convert("RGBA"), "PNG"),
        "la.png": _save(rgb.convert("LA"), "PNG"),
        "palette.png": _save(rgb.convert("P", palette=Image.ADAPTIVE, colors=64), "PNG"),
        "palette_transparent.png": _save(palette_transparent, "PNG", transparency=0),
        "gray16.png": _save(gray16, "PNG"),
        "bilevel.png": _save(rgb.convert("1"), "PNG"),
    }


def broken_images(photo: Path) -> dict[str, bytes]:
    jpeg = photo.read_bytes()
    return {
        "truncated.JPEG": jpeg[: len(jpeg) // 2],
        "empty.JPEG": b"",
        "text.JPEG": b"this is not an image, just text named .JPEG\n",
        "bomb.png": _png_header_only(30_000, 30_000),  # 900 Mpx: over twice Pillow's limit, Pillow raises
        "bomb_warning.png": _png_header_only(10_000, 10_000),  # 100 Mpx: over the limit, Pillow only warns
    }


def test_gray16_is_scaled_not_clipped(imagenet_photos):
    data = odd_valid_images(imagenet_photos[0][0])["gray16.png"]
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    decoded = np.asarray(decode_image({"bytes": data, "path": None}))
    expected = np.asarray(Image.open(imagenet_photos[0][0]).convert("RGB").resize((96, 72)).convert("L"))
    assert decoded.shape == (72, 96, 3)
    assert np.abs(decoded[..., 0].astype(int) - expected).max() <= 1  # clipping would make it nearly all 255


@pytest.mark.parametrize("name", ["truncated.JPEG", "empty.JPEG", "text.JPEG", "bomb.png", "bomb_warning.png"])
def test_each_broken_file_raises_broken_image_error(imagenet_photos, name):
    with pytest.raises(BrokenImageError):
        decode_image({"bytes": broken_images(imagenet_photos[0][0])[name], "path": None})


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, imagenet_photos):
    """train/<class>/...: every odd-valid image and every broken one, in two classes."""
    root = tmp_path_factory.mktemp("mixed")
    photo = imagenet_photos[0][0]
    files = {**odd_valid_images(photo), **broken_images(photo)}
    for index, (name, data) in enumerate(sorted(files.items())):
        folder = root / "train" / ("class_a" if index % 2 else "class_b")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return root


def _args(root: Path, **overrides) -> DataArguments:
    values = dict(dataset_name=str(root), image_size=SIZE, repeated_aug=1, shuffle_buffer_size=4, max_bad_fraction=0.5,
                  data_cache_dir=str(root / ".cache"))
    values.update(overrides)
    return DataArguments(**values)


@pytest.mark.parametrize("streaming", [False, True])
def test_odd_images_decode_and_broken_ones_are_skipped_and_counted(mixed_folder, imagenet_photos, streaming, caplog):
    num_valid, num_broken = len(odd_valid_images(imagenet_photos[0][0])), len(broken_images(imagenet_photos[0][0]))
    collator = DeiTCollator()
    with caplog.at_level(logging.WARNING, logger="hf_deit.data.decode"):
        data = build_datasets(_args(mixed_folder, streaming=streaming), do_eval=False)
        batches = list(torch.utils.data.DataLoader(data.train_dataset, batch_size=4, collate_fn=collator))
    pixel_values = torch.cat([batch["pixel_values"] for batch in batches])
    assert pixel_values.shape == (num_valid, 3, SIZE, SIZE) and pixel_values.dtype == torch.float32
    assert torch.isfinite(pixel_values).all()
    counter = data.bad_images["train"]
    # Streams decode each image once; map-style datasets also decode each once in the up-front validation scan.
    decodes = num_valid + num_broken if streaming else num_valid + num_broken + num_valid
    assert (counter.broken, counter.seen) == (num_broken, decodes)
    warned = "\n".join(record.getMessage() for record in caplog.records)
    assert f"{num_broken} broken of " in warned
    for name in broken_images(imagenet_photos[0][0]):
        assert name in warned  # the first keys are named


@pytest.mark.parametrize("streaming", [False, True])
def test_too_many_broken_images_stop_the_run(mixed_folder, streaming):
    collator = DeiTCollator()
    with pytest.raises(TooManyBadImagesError, match="max_bad_fraction"):
        data = build_datasets(_args(mixed_folder, streaming=streaming, max_bad_fraction=0.01), do_eval=False)
        list(torch.utils.data.DataLoader(data.train_dataset, batch_size=4, collate_fn=collator))


def test_threshold_rule_uses_a_minimum_denominator():
    counter = BadImageCounter(max_bad_fraction=0.01, min_denominator=100)
    counter.record_broken("first", "test")  # 1 of 1 seen, but 1 <= 0.01 * 100: keep going
    with pytest.raises(TooManyBadImagesError):
        counter.record_broken("second", "test")  # 2 > 1
    assert counter.broken == 2 and counter.first_broken_keys == ["first", "second"]


class _CountWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _record_broken_images(counter: BadImageCounter, names: list[str], warnings) -> None:
    """Record `names` as broken in this process and add the number of warnings it printed to `warnings`."""
    handler = _CountWarnings()
    logging.getLogger("hf_deit.data.decode").addHandler(handler)
    try:
        for name in names:
            counter.record_broken(name, "test")
    finally:
        logging.getLogger("hf_deit.data.decode").removeHandler(handler)
    with warnings.get_lock():
        warnings.value += handler.count


def test_broken_image_warnings_are_throttled_over_all_workers():
    """docs/data.md: a warning for each of the first 5 broken images, then at 8, 16, 32, 64 broken: 9 for 100, in
    one process and across two DataLoader-like worker processes sharing the counts (each one used to warn for every
    skip once its own list of first keys was full)."""
    import multiprocessing

    expected = 5 + len([n for n in range(6, 101) if n & (n - 1) == 0])
    names = [f"img{i}.jpg" for i in range(100)]
    context = multiprocessing.get_context("fork")
    one, two = BadImageCounter(max_bad_fraction=1.0), BadImageCounter(max_bad_fraction=1.0)
    warnings_one, warnings_two = context.Value("q", 0), context.Value("q", 0)
    _record_broken_images(one, names, warnings_one)
    workers = [context.Process(target=_record_broken_images, args=(two, names[i::2], warnings_two)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert one.broken == two.broken == 100
    assert (warnings_one.value, warnings_two.value) == (expected, expected) == (9, 9)

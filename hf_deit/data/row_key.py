"""A training row's identity, the same whether the split is read map-style or streamed: what a teacher cache
(hf_deit.distillation.teacher_cache) is keyed by.

The key is 64 bits of BLAKE2b over the label and the image's identity: its path *inside the dataset* (the last three
path parts, e.g. `train/n01440764/x.JPEG`, so moving or copying the dataset folder keeps every key) or, for an image
without a path (webdataset shards, bytes-only parquet), a SHA-256 of its encoded bytes. Paths are used when there
are any because reading every image's bytes to check a cache would cost an ImageNet epoch of disk reads.
"""

from __future__ import annotations

import hashlib
from typing import Any

ROW_KEY = "example_key"  # the column / batch key that carries it
PATH_PARTS = 3  # split/class/file in an ImageNet-layout folder


def image_identity(raw: Any) -> str:
    """The undecoded image's path inside its dataset, or the SHA-256 of its bytes."""
    if isinstance(raw, dict):
        path, data = raw.get("path"), raw.get("bytes")
    elif isinstance(raw, str):
        path, data = raw, None
    else:  # bytes from a webdataset shard
        path, data = None, raw
    if path:
        parts = str(path).replace("\\", "/").split("/")
        return "/".join(parts[-PATH_PARTS:])
    return hashlib.sha256(data or b"").hexdigest()


def row_key(raw_image: Any, label: int) -> int:
    """Signed 64-bit key of a (label, image) row: fits an int64 tensor, so batches carry it like any other column."""
    digest = hashlib.blake2b(f"{int(label)}|{image_identity(raw_image)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


__all__ = ["ROW_KEY", "image_identity", "row_key"]

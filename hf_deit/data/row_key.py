"""A training row's identity, the same whether the split is read map-style or streamed: what a teacher cache
(hf_deit.distillation.teacher_cache) is keyed by, and what the streams' augmentation seeds (seeding.py) are keyed by.

The key is 64 bits of BLAKE2b over the label and the image's identity: its path *inside the dataset* (the last three
path parts, e.g. `train/n01440764/x.JPEG`, so moving or copying the dataset folder keeps every key) or, for an image
without a path (webdataset shards, bytes-only parquet), a SHA-256 of its encoded bytes. Paths are used when there
are any because reading every image's bytes to check a cache before training would cost an ImageNet epoch of disk
reads. The bytes are checked during training instead, where they are read anyway: each training example also carries
`content_hash` of its encoded bytes, which the cache compares with the hash it stored (a file replaced under the same
path is refused, not distilled from the old image's teacher).
"""

from __future__ import annotations

import hashlib
from typing import Any

import xxhash

ROW_KEY = "example_key"  # the column / batch key that carries it
CONTENT_KEY = "example_content"  # the column / batch key that carries `content_hash`
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


def content_hash(data: bytes) -> int:
    """Signed 64-bit xxHash (XXH64) of an image's encoded bytes: about 1% of decoding them (docs/data.md; BLAKE2b
    cost about 8% and 4% on ImageNet JPEGs here). It detects a changed file; it is no defence against a forged one."""
    return xxhash.xxh64_intdigest(data) - (1 << 63)  # unsigned -> signed 64 bits: fits an int64 column and tensor


__all__ = ["CONTENT_KEY", "ROW_KEY", "content_hash", "image_identity", "row_key"]

"""What the teacher cache's content check costs: hashing each training image's bytes vs decoding them.

    .venv/bin/python benchmarks/bench_content_hash.py                    # ../shared/data: CIFAR-10 and ImageNet JPEGs
    .venv/bin/python benchmarks/bench_content_hash.py --num-images 200 --repeats 3    # a quick look

Training decodes every image from its bytes (hf_deit.data.decode_image, in full: --jpeg_draft is off by default);
with a teacher cache each training example also carries `content_hash` of the same bytes (64-bit xxHash,
hf_deit.data.row_key), which the cache compares with the hash it stored. Printed per data set: microseconds per image
for that hash, for two alternatives (BLAKE2b-64; SHA-256, what `image_identity` uses for images without a path) and
for the decode, and the hash's cost as a share of the decode. The bytes are read into memory first, so disk speed is not part of either figure.
The three run interleaved in rounds (`--repeats`), and the medians over rounds are printed with the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from pathlib import Path

from hf_deit.data import decode_image
from hf_deit.data.row_key import content_hash

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {"CIFAR-10 (32x32 JPEG)": "cifar10/train", "ImageNet sample (~500x375 JPEG)": "imagenet-sample/val"}


def per_image_seconds(function, blobs: list[bytes]) -> float:
    start = time.perf_counter()
    for blob in blobs:
        function(blob)
    return (time.perf_counter() - start) / len(blobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    arms = {"content_hash": content_hash, "blake2b": lambda b: hashlib.blake2b(b, digest_size=8).digest(),
            "sha256": lambda b: hashlib.sha256(b).digest(), "decode": decode_image}
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print("| images | bytes/image | content_hash (xxh64) us | blake2b us | sha256 us | decode us | content_hash / decode |"
          "\n|---|---:|---:|---:|---:|---:|---:|")
    for name, folder in SOURCES.items():
        paths = sorted((args.data / folder).rglob("*.*"))[: args.num_images]
        blobs = [path.read_bytes() for path in paths]
        rounds = {arm: [] for arm in arms}
        for _ in range(args.repeats):
            for arm, function in arms.items():
                rounds[arm].append(per_image_seconds(function, blobs))
        median = {arm: statistics.median(values) * 1e6 for arm, values in rounds.items()}
        print(f"| {name}, {len(blobs)} | {sum(map(len, blobs)) / len(blobs):,.0f} | {median['content_hash']:.1f} | "
              f"{median['blake2b']:.1f} | {median['sha256']:.1f} | {median['decode']:.0f} | "
              f"{median['content_hash'] / median['decode']:.2%} |")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()

"""`hf-deit shard`: turn an ImageNet-layout folder into parquet or webdataset shards.

A streaming dataset can feed only as many DataLoader workers (times ranks) as it has shards, and a folder streams
as a single shard. Files are copied byte for byte (nothing is decoded or re-encoded, so broken files stay broken
and are counted at training time), in a seeded random order so that every shard mixes all classes: a streaming
shuffle only mixes within its buffer, and class-sorted shards would give class-sorted batches. Shard sizes differ
by at most one image (round robin over the shuffled list): the closest to equal N shards of M images can be.

Readers: each training process (rank) reads whole shards, and its DataLoader workers (0 workers: the process
itself, one reader) split those shards again, so a training stream needs a shard count that every rank, and every
worker within a rank, can take an equal share of: `check_stream_shards` refuses uneven ranks before training and lowers uneven
workers (the
ranks would otherwise read different numbers of examples per pass and fall out of step), and `hf-deit shard` says
which reader counts its shards suit (`suited_readers`).

Layout written (both formats load with `load_image_dataset(output_dir)`):
    OUT/classes.tsv                              index, wnid (the label order used)
    OUT/train-00000-of-00016.parquet ...         columns image {bytes, path}, label (ClassLabel in the metadata)
    OUT/validation-00000-of-00016.tar ...        members <key>.jpg (bytes as is) + <key>.cls (label id as text)
"""

from __future__ import annotations

import io
import logging
import random
import tarfile
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import ClassLabel, Features, Image

from .loading import (
    IMAGE_SUFFIXES,
    class_dirs,
    find_class_index_file,
    find_splits,
    folder_class_names,
    read_class_index,
)

logger = logging.getLogger(__name__)

# Images per parquet row group: the unit a streaming reader fetches (datasets reads one whole row group per step), so
# it sets the memory per read and the wait for a worker's first batch. 64 images of ImageNet size are ~7 MB.
ROW_GROUP_SIZE = 64


def _list_examples(split_dir: Path, class_ids: dict[str, int]) -> list[tuple[Path, int]]:
    examples = []
    for class_dir in class_dirs(split_dir):
        if class_dir.name not in class_ids:
            raise ValueError(f"class folder {class_dir} is not in the class list")
        examples += [(path, class_ids[class_dir.name]) for path in sorted(class_dir.iterdir())
                     if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
    return examples


def _write_parquet(path: Path, examples: list[tuple[Path, int]], features: Features, root: Path) -> None:
    schema = features.arrow_schema  # carries datasets' feature metadata, so ClassLabel names survive
    # No dictionary encoding for the image bytes (pyarrow's default tries it on every column): every value is
    # unique, so it saves nothing, and reading such a row group back in a fresh process was several times slower.
    # Measured on a 500-image ImageNet shard: 0.25-0.76 s to the first 256-row group with it, 0.09 s without,
    # 0.04-0.05 s for a 64-row group.
    with pq.ParquetWriter(path, schema, use_dictionary=["label"]) as writer:
        for start in range(0, len(examples), ROW_GROUP_SIZE):
            chunk = examples[start:start + ROW_GROUP_SIZE]
            table = pa.Table.from_pydict({
                "image": [{"bytes": p.read_bytes(), "path": str(p.relative_to(root))} for p, _ in chunk],
                "label": [label for _, label in chunk],
            }, schema=schema)
            writer.write_table(table)


def _write_webdataset(path: Path, examples: list[tuple[Path, int]], root: Path) -> None:
    with tarfile.open(path, "w") as tar:
        for image_path, label in examples:
            # webdataset keys end at the first dot; the member extension names the column ("jpg" for all: PIL
            # identifies the codec from the bytes, and one column name keeps the schema the same for every row).
            key = str(image_path.relative_to(root).with_suffix("")).replace(".", "_")
            for suffix, data in ((".jpg", image_path.read_bytes()), (".cls", str(label).encode())):
                info = tarfile.TarInfo(key + suffix)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def shard_sizes(num_examples: int, num_shards: int) -> list[int]:
    """The size of each shard `shard_dataset` writes: round robin, so the first num_examples % num_shards shards
    hold one image more than the others (13, 13, 12, 12 for 50 images in 4 shards)."""
    return [len(range(index, num_examples, num_shards)) for index in range(num_shards)]


def suited_readers(num_shards: int) -> list[int]:
    """The reader counts (ranks x workers per rank) that can share `num_shards` shards evenly: its divisors."""
    return [readers for readers in range(1, num_shards + 1) if num_shards % readers == 0]


def describe_shards(split: str, sizes: list[int], format: str) -> str:  # noqa: A002 (the CLI's name for it)
    """What `hf-deit shard` says about a split it wrote, e.g. "train: 50 images in 4 parquet shards of 12-13
    images; 4 shards suit 1, 2 or 4 readers (ranks x workers)"."""
    low, high = min(sizes), max(sizes)
    per_shard = f"{low}" if low == high else f"{low}-{high}"
    readers = [str(count) for count in suited_readers(len(sizes))]
    listed = readers[0] if len(readers) == 1 else f"{', '.join(readers[:-1])} or {readers[-1]}"
    return (f"{split}: {sum(sizes)} images in {len(sizes)} {format} shards of {per_shard} images; {len(sizes)} "
            f"shards suit {listed} readers (ranks x workers)")


def _even_split(num_shards: int, readers: int) -> str:
    """e.g. "2, 1" for 3 shards over 2 readers: how many each reads when shards are dealt out whole."""
    return ", ".join(str(len(range(index, num_shards, readers))) for index in range(readers))


def check_stream_shards(num_shards: int, world_size: int, num_workers: int) -> int:
    """Refuse a training stream that the ranks cannot share evenly; return the DataLoader workers per rank that
    share the rank's shards evenly (`num_workers` itself, or the largest divisor of the rank's shard count below it).

    With `dispatch_batches` off, accelerate gives each of `world_size` ranks whole shards when there are at least as
    many shards as ranks (`IterableDataset.shard`: 3 shards on 2 ranks are 2 and 1), else every rank reads the whole
    stream and keeps its slice of each batch (even, only slower: accepted). Unequal ranks read different numbers of
    examples per pass: they end passes, and so epochs, at different steps, and examples are seen 1, 2 or 3 times per
    epoch: refused. Within a rank, datasets deals the rank's shards out to its workers (0 workers: one reader),
    leaving workers beyond the shard count idle. Unequal workers in one rank keep the rank's count but end each pass
    with the busier workers' shards alone in the mix, so the worker count is lowered to one that divides the rank's
    shards (the caller says so): 16 shards with the recipe's 10 workers on one GPU run with 8. Evaluation streams
    are not checked: evaluation dispatches batches from one reader (see hf_deit.distillation.setup).
    """
    if world_size > 1 and num_shards >= world_size and num_shards % world_size:
        raise ValueError(
            f"The training stream has {num_shards} shards, which {world_size} processes cannot share evenly: each "
            f"reads whole shards ({_even_split(num_shards, world_size)}), so the processes would read different "
            "numbers of examples per pass, fall out of step (different epochs at the same step) and see examples "
            f"unequally often. Re-shard with `hf-deit shard SOURCE OUT --num-shards N`, N a multiple of "
            f"{world_size * max(num_workers, 1)} ({world_size} processes x {max(num_workers, 1)} reader(s) each: "
            "the DataLoader workers, or the process itself with 0), or launch a number of processes that divides "
            f"{num_shards} ({', '.join(map(str, suited_readers(num_shards)))})."
        )
    per_rank = num_shards // world_size if num_shards >= world_size else num_shards
    if num_workers <= 1 or num_workers >= per_rank or per_rank % num_workers == 0:
        return num_workers  # one reader, one shard per worker (extra workers idle), or an even deal
    return max(count for count in suited_readers(per_rank) if count <= num_workers)


def shard_dataset(
    source: str | Path,
    output_dir: str | Path,
    num_shards: int = 16,
    format: str = "parquet",  # noqa: A002 (the CLI's name for it)
    *,
    class_index_file: str | Path | None = None,
    seed: int = 0,
    report: Callable[[str], None] | None = None,
) -> list[str]:
    """Write each split of an ImageNet-layout folder as `num_shards` shards; returns the paths written.

    Shard sizes differ by at most one image (`shard_sizes`). `report` (default: the log, at info) gets one line per
    split: its images, shards, shard sizes and the reader counts (ranks x workers) they suit (`describe_shards`).

    Class ids: `class_index_file`, else a classes.tsv / LOC_synset_mapping.txt in `source`, else the sorted union of
    class folder names over all splits (so train and val agree).
    """
    if format not in ("parquet", "webdataset"):
        raise ValueError(f"format must be 'parquet' or 'webdataset', got {format!r}")
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    source, output_dir = Path(source), Path(output_dir)
    splits = find_splits(source)
    index_file = class_index_file or find_class_index_file(str(source))
    if index_file:
        class_names = read_class_index(index_file)
    else:
        class_names = folder_class_names(source)  # the same rule as the folder loader
    class_ids = {name: index for index, name in enumerate(class_names)}
    features = Features({"image": Image(), "label": ClassLabel(names=class_names)})

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "classes.tsv").write_text("index\twnid\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(class_names)))
    written: list[str] = []
    for split, split_dir in splits.items():
        examples = _list_examples(split_dir, class_ids)
        random.Random(seed).shuffle(examples)
        shards = min(num_shards, len(examples))
        if shards < num_shards:
            logger.warning("%s: only %d images, writing %d shards instead of %d", split, len(examples), shards, num_shards)
        for index in range(shards):
            chunk = examples[index::shards]
            extension = "parquet" if format == "parquet" else "tar"
            path = output_dir / f"{split}-{index:05d}-of-{shards:05d}.{extension}"
            if format == "parquet":
                _write_parquet(path, chunk, features, split_dir)
            else:
                _write_webdataset(path, chunk, split_dir)
            written.append(str(path))
        (report or logger.info)(describe_shards(split, shard_sizes(len(examples), shards), format))
    return written

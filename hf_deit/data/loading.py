"""Loading any ImageNet-format source as a `datasets` dataset of `image` (undecoded) + `label` (ClassLabel).

Sources: a Hub id (`ILSVRC/imagenet-1k` parquet, `timm/imagenet-1k-wds` webdataset), or a local folder that holds
an ImageNet layout (`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`), parquet shards, or webdataset `.tar` shards.
Label ids follow a class-index file when there is one (given, or `classes.tsv` / `LOC_synset_mapping.txt` in the
folder), so that they agree with every ImageNet-1k checkpoint even when a folder holds only some classes.
The image column is cast to `Image(decode=False)`: decoding happens once, in `decode.decode_image`, where a
broken file can be skipped instead of crashing the DataLoader.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path
from typing import Union

from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Image,
    IterableDataset,
    IterableDatasetDict,
    load_dataset,
)

from ..sources import require_source
from .remote import builder_for, fetch_files, is_url, origin_metadata, resolve_files, stream_storage_options

logger = logging.getLogger(__name__)

AnyDataset = Union[Dataset, IterableDataset]
AnyDatasetOrDict = Union[Dataset, IterableDataset, DatasetDict, IterableDatasetDict]

IMAGENET_PARQUET_ID = "ILSVRC/imagenet-1k"  # parquet on the Hub, splits train / validation / test
IMAGENET_WDS_ID = "timm/imagenet-1k-wds"  # webdataset tars on the Hub, columns jpg / cls
CLASS_INDEX_FILENAMES = ("classes.tsv", "LOC_synset_mapping.txt", "classes.txt")
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
LABEL_COLUMNS = ("label", "labels", "cls", "class")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                 "validation": "validation", "test": "test"}


def read_class_index(path: str | Path) -> list[str]:
    """Class names in label-id order from `classes.tsv` (columns index, wnid[, name]), `LOC_synset_mapping.txt`
    ("n01440764 tench, Tinca tinca" per line) or a plain file with one name per line."""
    path = Path(path)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".tsv" or "\t" in lines[0]:
        rows = list(csv.DictReader(lines, delimiter="\t"))
        if rows and "wnid" in rows[0]:
            rows.sort(key=lambda row: int(row.get("index", 0)))
            if "index" in rows[0] and [int(r["index"]) for r in rows] != list(range(len(rows))):
                raise ValueError(f"{path}: the index column must be 0..N-1")
            return [row["wnid"] for row in rows]
    # LOC_synset_mapping.txt and plain lists: the first whitespace-separated token, in file order.
    return [line.split()[0] for line in lines]


def find_class_index_file(name_or_path: str) -> Path | None:
    """A class-index file lying in a local dataset folder, if any."""
    folder = Path(name_or_path)
    for name in CLASS_INDEX_FILENAMES if folder.is_dir() else ():
        if (folder / name).is_file():
            return folder / name
    return None


def _split_of(relative_path: Path) -> str:
    """The split a shard belongs to, from a directory name or a file-name prefix (`train-00000-of-00004.tar`)."""
    for part in relative_path.parts:
        token = re.split(r"[-_.]", part.lower())[0]
        if token in SPLIT_ALIASES:
            return SPLIT_ALIASES[token]
    return "train"


def find_splits(folder: Path) -> dict[str, Path]:
    """An image folder's train/ val/ test/ sub-folders; a folder of class folders alone is one 'train' split."""
    splits = {SPLIT_ALIASES[p.name.lower()]: p for p in sorted(folder.iterdir())
              if p.is_dir() and p.name.lower() in SPLIT_ALIASES}
    return splits or {"train": folder}


def class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir())


def folder_class_names(folder: Path) -> list[str]:
    """Class names of an image folder: the sorted union of class folder names over its splits, empty ones included
    (datasets' imagefolder would drop a class folder without images and shift every later label id)."""
    names = set()
    for split_dir in find_splits(folder).values():
        for class_dir in class_dirs(split_dir):
            names.add(class_dir.name)
            if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in class_dir.iterdir()):
                logger.warning("class folder %s holds no images; it keeps its label id", class_dir)
    return sorted(names)


def _local_files(folder: Path) -> tuple[str, dict[str, list[str]]]:
    """(builder, data files per split) for a local folder, typed by what most of its files are: parquet shards,
    webdataset tars or images. A few files of another kind (a stray .tar beside the images) are ignored, with a
    warning, rather than switching the whole folder to another format."""
    found: dict[str, list[Path]] = {"parquet": [], "webdataset": [], "imagefolder": []}
    for root, _, names in os.walk(folder):
        for name in names:
            suffix = os.path.splitext(name)[1].lower()
            kind = {".parquet": "parquet", ".tar": "webdataset"}.get(suffix)
            if kind is None and suffix in IMAGE_SUFFIXES:
                kind = "imagefolder"
            if kind is not None:
                found[kind].append(Path(root) / name)
    # max keeps the first of equal counts: parquet, then webdataset, then images
    builder = max(found, key=lambda kind: len(found[kind]))
    for kind, paths in found.items():
        if kind != builder and paths:
            logger.warning(
                "%s is read as %s (%d files); ignoring %d %s file(s) in it, e.g. %s", folder, builder,
                len(found[builder]), len(paths), kind, paths[0],
            )
    files: dict[str, list[str]] = {}
    for path in sorted(found[builder]):
        files.setdefault(_split_of(path.relative_to(folder)), []).append(str(path))
    return builder, files


def count_local_examples(folder: str | Path, split: str) -> int | None:
    """The number of examples of a local dataset's split without reading any image: parquet footers, image files,
    or webdataset samples (distinct member keys, read from the tar headers). None for a Hub id or an absent split."""
    if not Path(folder).is_dir():
        return None
    builder, files = _local_files(Path(folder))
    paths = files.get(SPLIT_ALIASES.get(split.lower(), split), [])
    if not paths:
        return None
    if builder == "parquet":
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)
    if builder == "webdataset":
        import tarfile

        keys = set()
        for path in paths:
            with tarfile.open(path) as tar:
                # webdataset's key: the member path up to the first dot of its file name
                for name in tar.getnames():
                    directory, _, file_name = name.rpartition("/")
                    keys.add((path, directory, file_name.split(".")[0]))
        return len(keys)
    return len(paths)


def _load_raw(name_or_path: str, config_name: str | None, split: str | None, streaming: bool,
              cache_dir: str | None, local: tuple[str, dict[str, list[str]]] | None) -> AnyDatasetOrDict:
    """`load_dataset` on the right builder. Local folders are typed by their files (see `_local_files`) rather than
    by datasets' extension vote, which a lone classes.tsv next to one shard could swing."""
    kwargs = dict(split=split, streaming=streaming, cache_dir=cache_dir)
    if local is None:
        return load_dataset(name_or_path, config_name, **kwargs)
    builder, data_files = local
    if builder == "imagefolder":
        return load_dataset("imagefolder", data_dir=name_or_path, **kwargs)
    return load_dataset(builder, data_files=data_files, **kwargs)


def _pick_column(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{what} column {wanted!r} not found; columns are {columns}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(f"no {what} column among {columns}; pass image_column / label_column")


def _default_class_names(name_or_path: str, dataset: AnyDataset) -> list[str]:
    """Names for integer labels without a ClassLabel (webdataset `cls`)."""
    if "imagenet-1k" in name_or_path.lower() or "imagenet1k" in name_or_path.lower():
        from timm.data import ImageNetInfo  # ships the 1000 wnids in the standard order, offline

        return list(ImageNetInfo("imagenet-1k").label_names())
    if isinstance(dataset, Dataset):
        return [str(i) for i in range(max(dataset["label"]) + 1)]
    raise ValueError(
        f"{name_or_path}: labels are plain integers and the stream cannot be scanned for the class count; "
        "pass class_index_file (one class name per line, in label-id order)"
    )


def _remap_labels(dataset: AnyDataset, old_names: list[str], new_names: list[str]) -> AnyDataset:
    """Re-number labels from `old_names` order to `new_names` order (for a folder holding a subset of classes)."""
    position = {name: index for index, name in enumerate(new_names)}
    missing = [name for name in old_names if name not in position]
    if missing:
        raise ValueError(f"classes {missing[:5]} are not in the class-index file")
    old_to_new = [position[name] for name in old_names]
    features = dataset.features.copy()
    features["label"] = ClassLabel(names=new_names)

    def remap(batch: dict) -> dict:
        return {"label": [old_to_new[label] for label in batch["label"]]}

    return dataset.map(remap, batched=True, features=features)


def _standardize(dataset: AnyDataset, name_or_path: str, class_names: list[str] | None,
                 image_column: str | None, label_column: str | None) -> AnyDataset:
    """Rename to image/label, stop datasets from decoding images, and give labels their ClassLabel names."""
    columns = list(dataset.column_names or dataset.features)
    image = _pick_column(columns, image_column, IMAGE_COLUMNS, "image")
    label = _pick_column(columns, label_column, LABEL_COLUMNS, "label")
    # Cast first: on a stream, every later step (rename and remove are maps too) decodes with the features it
    # was created with, so a decoding Image feature there would open every file and crash on a broken one.
    dataset = dataset.cast_column(image, Image(decode=False))
    if "__url__" in columns:
        dataset = dataset.remove_columns("__url__")
    renames = {old: new for old, new in ((image, "image"), (label, "label")) if old != new}
    if renames:
        dataset = dataset.rename_columns(renames)
    current = dataset.features["label"]
    current_names = current.names if isinstance(current, ClassLabel) else None
    if class_names is None:
        if current_names is not None:
            return dataset
        class_names = _default_class_names(name_or_path, dataset)
    elif current_names is not None and current_names != class_names:
        if set(current_names) <= set(class_names):
            return _remap_labels(dataset, current_names, class_names)
        if len(current_names) != len(class_names):
            raise ValueError(f"the dataset has {len(current_names)} classes, the class-index file {len(class_names)}")
        logger.warning("class names differ from the class-index file; keeping ids, using the file's names")
    return dataset.cast_column("label", ClassLabel(names=class_names))


def load_image_dataset(
    name_or_path: str = IMAGENET_PARQUET_ID,
    split: str | None = None,
    *,
    streaming: bool = False,
    config_name: str | None = None,
    class_index_file: str | Path | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    cache_dir: str | None = None,
) -> AnyDatasetOrDict:
    """Load a Hub id or local folder/shards as `image` (`Image(decode=False)`) + `label` (`ClassLabel`) columns.

    Other columns (e.g. webdataset's `__key__`) are kept. `split=None` returns a (Iterable)DatasetDict; a folder's
    `val/` is the `validation` split. Class order: `class_index_file`, else a classes.tsv / LOC_synset_mapping.txt
    inside the folder, else the source's ClassLabel (sorted folder names for image folders).
    """
    if is_url(name_or_path) and not name_or_path.startswith("hf://"):
        raise ValueError(url_dataset_name_message(name_or_path))
    require_source(name_or_path, "dataset folder")  # a missing local folder is said so, not sent to the Hub
    index_file = class_index_file or find_class_index_file(name_or_path)
    class_names = read_class_index(index_file) if index_file else None
    local = _local_files(Path(name_or_path)) if Path(name_or_path).is_dir() else None
    if class_names is None and local is not None and local[0] == "imagefolder":
        class_names = folder_class_names(Path(name_or_path))  # the same label set as `hf-deit shard` writes
    raw = _load_raw(name_or_path, config_name, split, streaming, cache_dir, local)
    if isinstance(raw, (DatasetDict, IterableDatasetDict)):
        return type(raw)({
            name: _standardize(part, name_or_path, class_names, image_column, label_column) for name, part in raw.items()
        })
    return _standardize(raw, name_or_path, class_names, image_column, label_column)


def url_dataset_name_message(url: str) -> str:
    return (
        f"--dataset_name takes a Hub id or a local folder, not a URL ({url}). Name data files at URLs with "
        "--train_files and --validation_files (paths, globs or URLs: https://host/imagenet/train-00000-of-00160.parquet "
        "..., or a glob on a store that lists folders, e.g. 's3://bucket/imagenet/train-*.parquet')."
    )


def load_image_files(
    files: list[str],
    split: str = "train",
    *,
    streaming: bool = False,
    class_index_file: str | Path | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    cache_dir: str | None = None,
) -> AnyDataset:
    """Load data files (local paths or globs, or URLs: http(s)://, s3://, gs://, any fsspec protocol) of one format
    (parquet, webdataset .tar or arrow: `hf-deit shard` writes the first two) as split `split`, with the columns of
    `load_image_dataset`. The files are listed by hf_deit with retries (hf_deit.data.remote: datasets' own listing
    neither retries nor names the cause); map-style data is downloaded into the datasets cache first."""
    from datasets.data_files import DataFilesList

    found = resolve_files(list(files))
    builder = builder_for([path for path, _ in found])
    if not streaming:
        found = fetch_files(found, cache_dir)
    data_files = DataFilesList([path for path, _ in found], [origin_metadata(info) for _, info in found])
    # A stream opens its files while it reads: over http(s) with retries (remote.retrying_http_client).
    storage_options = stream_storage_options(list(data_files)) if streaming else None
    raw = load_dataset(builder, data_files={split: data_files}, split=split, streaming=streaming, cache_dir=cache_dir,
                       storage_options=storage_options)
    class_names = read_class_index(class_index_file) if class_index_file else None
    return _standardize(raw, ", ".join(files), class_names, image_column, label_column)

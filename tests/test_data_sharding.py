"""Sharding: 2 simulated ranks x 2 DataLoader workers see every example exactly once per pass (with repeated
augmentation x3, a third of them 3 times); passes reshuffle and draw anew; a stream's state_dict resumes; the
map-style RA sampler gives the paper's epoch, also on one process."""

import io
from collections import Counter

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import ClassLabel, Features, Image, Value
from PIL import Image as PILImage

from hf_deit.data import (
    BadImageCounter,
    DataArguments,
    load_image_dataset,
    prepare_dataset,
    repeat_aug_sampler,
    samples_per_epoch,
    shard_dataset,
    stream_size,
    train_stream_size,
)
from hf_deit.data.shards import ROW_GROUP_SIZE

NUM_SHARDS, PER_SHARD, NUM_CLASSES = 4, 6, 3
ALL_KEYS = {f"s{shard}-e{example}" for shard in range(NUM_SHARDS) for example in range(PER_SHARD)}


@pytest.fixture(autouse=True)
def no_parquet_shutdown_sleep(monkeypatch):
    """datasets sleeps 5 s after each parquet stream ends (a guard against pyarrow issue 45214 at interpreter exit);
    these tests end many short streams."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """4 parquet shards x 6 tiny PNGs, each with a unique `key`."""
    root = tmp_path_factory.mktemp("sharded")
    features = Features({"image": Image(), "label": ClassLabel(names=[f"c{i}" for i in range(NUM_CLASSES)]),
                         "key": Value("string")})
    rng = np.random.default_rng(0)
    for shard in range(NUM_SHARDS):
        rows = {"image": [], "label": [], "key": []}
        for example in range(PER_SHARD):
            buffer = io.BytesIO()
            PILImage.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(buffer, "PNG")
            rows["image"].append({"bytes": buffer.getvalue(), "path": None})
            rows["label"].append(example % NUM_CLASSES)
            rows["key"].append(f"s{shard}-e{example}")
        pq.write_table(pa.Table.from_pydict(rows, schema=features.arrow_schema),
                       root / f"train-{shard:05d}-of-{NUM_SHARDS:05d}.parquet")
    return root


def _args(repeats: int) -> DataArguments:
    return DataArguments(image_size=16, repeated_aug=repeats, shuffle_buffer_size=8, auto_augment=None, reprob=0.0)


def _keys_collate(examples: list[dict]) -> list[str]:
    return [example["key"] for example in examples]


def _epoch_keys(root, repeats: int, epoch: int = 0, world_size: int = 2, workers: int = 2) -> list[list[str]]:
    """Keys each rank sees in one epoch, in order."""
    per_rank = []
    for rank in range(world_size):
        stream = load_image_dataset(str(root), "train", streaming=True)
        assert stream.n_shards == NUM_SHARDS
        stream = prepare_dataset(stream, _args(repeats), train=True, counter=BadImageCounter(), rank=rank,
                                 world_size=world_size, seed=1)
        stream.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(stream, batch_size=5, num_workers=workers, collate_fn=_keys_collate)
        per_rank.append([key for batch in loader for key in batch])
    return per_rank


def test_two_ranks_two_workers_see_each_key_exactly_once_per_pass_without_repeated_augmentation(sharded):
    per_rank = _epoch_keys(sharded, 1)
    seen = [key for keys in per_rank for key in keys]
    assert Counter(seen) == {key: 1 for key in ALL_KEYS}
    assert not set(per_rank[0]) & set(per_rank[1])  # ranks read disjoint shards


def test_a_pass_with_repeated_augmentation_is_the_papers_epoch(sharded):
    """2 ranks x 2 workers, RA x3: one pass is len(dataset) samples over the ranks, a third of the keys (each worker
    keeps every third example its shuffle buffer lets out), each 3 times on one rank."""
    per_rank = _epoch_keys(sharded, 3)
    counts = Counter(key for keys in per_rank for key in keys)
    assert sum(counts.values()) == len(ALL_KEYS) and set(counts.values()) == {3} and set(counts) <= ALL_KEYS
    assert len(counts) == len(ALL_KEYS) // 3
    assert not set(per_rank[0]) & set(per_rank[1])
    (alone,) = _epoch_keys(sharded, 3, world_size=1, workers=0)
    triples = [alone[i:i + 3] for i in range(0, len(alone), 3)]  # the copies in a row: one step, as the paper's
    assert len(alone) == len(ALL_KEYS) and all(len(set(triple)) == 1 for triple in triples)


def test_each_pass_draws_other_examples(sharded):
    drawn = [set(_epoch_keys(sharded, 3, epoch=epoch, world_size=1, workers=0)[0]) for epoch in range(3)]
    assert all(len(keys) == len(ALL_KEYS) // 3 for keys in drawn)
    assert drawn[0] != drawn[1] and drawn[1] != drawn[2] and len(set.union(*drawn)) > len(ALL_KEYS) // 3


def test_set_epoch_reshuffles(sharded):
    first, second = _epoch_keys(sharded, 1, epoch=0, workers=0), _epoch_keys(sharded, 1, epoch=1, workers=0)
    assert sorted(first[0] + first[1]) == sorted(second[0] + second[1]) == sorted(ALL_KEYS)
    assert first != second


def test_stream_state_dict_resumes_where_it_stopped(sharded):
    """Kill-and-resume of a stream: a fresh pipeline loading the state dict yields exactly the remaining keys
    (buffer size 1: datasets' resume drops what sits in the shuffle buffer, see docs/data.md)."""
    args = DataArguments(image_size=16, repeated_aug=3, shuffle_buffer_size=1, auto_augment=None, reprob=0.0)

    def pipeline():
        stream = load_image_dataset(str(sharded), "train", streaming=True)
        return prepare_dataset(stream, args, train=True, counter=BadImageCounter(), seed=3)

    full = [example["key"] for example in pipeline()]
    stream = pipeline()
    iterator = iter(stream)
    head = [next(iterator)["key"] for _ in range(20)]
    state = stream.state_dict()
    resumed = pipeline()
    resumed.load_state_dict(state)
    assert head + [example["key"] for example in resumed] == full


def test_a_training_streams_size_comes_from_the_flag_else_the_files_capped_by_max_train_samples(sharded):
    def size(**values) -> int | None:
        args = DataArguments(dataset_name=str(sharded), streaming=True, **values)
        return train_stream_size(args, load_image_dataset(str(sharded), "train", streaming=True))

    assert size() == len(ALL_KEYS)  # the parquet footers
    assert size(train_dataset_size=100) == 100 and size(max_train_samples=10) == 10
    stream = load_image_dataset(str(sharded), "train", streaming=True)
    prepared = prepare_dataset(stream, _args(3), train=True, counter=BadImageCounter(), dataset_size=len(ALL_KEYS))
    assert stream_size(stream) is None and stream_size(prepared) == len(ALL_KEYS)
    assert stream_size(prepared.shard(num_shards=2, index=1)) == len(ALL_KEYS)  # what accelerate gives a rank


@pytest.mark.parametrize("world_size", [1, 2])
def test_repeat_aug_sampler_gives_the_papers_epoch(world_size):
    """len(dataset) indices over the ranks (a third of the images, each 3 times, on every rank), with a single
    process too (the paper's main.py turns RA off there)."""
    dataset = list(range(12))
    indices = []
    for rank in range(world_size):
        sampler = repeat_aug_sampler(dataset, num_repeats=3, num_replicas=world_size, rank=rank, seed=5)
        sampler.set_epoch(2)
        drawn = list(sampler)
        assert len(sampler) == len(drawn) == samples_per_epoch(len(dataset), world_size)
        indices.append(drawn)
    counts = Counter(index for drawn in indices for index in drawn)
    assert sum(counts.values()) == len(dataset) and set(counts.values()) == {3} and len(counts) == 4
    assert all(set(drawn) == set(counts) for drawn in indices)  # the copies of an image go to different ranks


def test_parquet_shards_keep_image_bytes_plain_in_small_row_groups(tmp_path):
    """`hf-deit shard` writes image bytes without dictionary encoding, in row groups of ROW_GROUP_SIZE images:
    the two choices that keep a worker's first read short (see shards.py). pyarrow's default would dictionary-
    encode the bytes column in one large row group, which a regression to `pq.write_table` defaults brings back."""
    rng = np.random.default_rng(0)
    for index in range(ROW_GROUP_SIZE + 5):
        path = tmp_path / "src" / "train" / f"c{index % 2}" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
    (written,) = shard_dataset(tmp_path / "src", tmp_path / "out", num_shards=1)
    metadata = pq.ParquetFile(written).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [ROW_GROUP_SIZE, 5]
    columns = {metadata.row_group(0).column(i).path_in_schema: metadata.row_group(0).column(i)
               for i in range(metadata.num_columns)}
    assert not columns["image.bytes"].has_dictionary_page
    assert "RLE_DICTIONARY" not in columns["image.bytes"].encodings
    stream = load_image_dataset(str(tmp_path / "out"), "train", streaming=True)
    assert sum(1 for _ in stream) == ROW_GROUP_SIZE + 5

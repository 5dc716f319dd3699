"""Per-image augmentation seeds for a seventh of the host time, with the same numbers (hf_deit/data/seeding.py).

The batched path (global RNG states saved and restored once per batch: `SeededAugmentation.__getitems__`, the batched
stream map) is compared with the per-image path it replaced, kept below verbatim as the reference: the same pixels,
crop boxes and row keys bit for bit, and the same global RNG states after every batch, in the main process (0
DataLoader workers, where drop path and Mixup draw between batches) and in each worker (2 workers). Real JPEGs, the
default recipe (RandomResizedCrop, flip, RandAugment, random erasing, repeated augmentation x3), two epochs.
"""

import contextlib
import hashlib
import pickle
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import hf_deit.data.pipeline as pipeline
import hf_deit.data.seeding as seeding
from hf_deit.data import DataArguments, RepeatAugBatchOrder, build_datasets
from hf_deit.data.seed_words import seed_words
from hf_deit.data.seeding import PositionalSampler, SeededAugmentation, reseeding, seeded_rngs
from hf_deit.data.seeding import _identity  # the streams' image identity, unchanged

BATCH, EPOCHS, SEED = 4, 2, 42


# --- the per-image path as it was (hf_deit/data/seeding.py before the batched path), the reference --------------
@contextlib.contextmanager
def reference_seeded_rngs(*key):
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seeds = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]).generate_state(3, dtype=np.uint32)
    random.seed(int(seeds[0]))
    np.random.seed(int(seeds[1]))
    torch.default_generator.manual_seed(int(seeds[2]))
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


class ReferenceSeededAugmentation(torch.utils.data.Dataset):
    def __init__(self, dataset, seed, rank=0):
        self.dataset, self.seed, self.rank = dataset, seed, rank

    def __getitem__(self, key):
        with reference_seeded_rngs(self.seed, self.rank, key.epoch, key.position):
            return self.dataset[key.index]

    def __len__(self):
        return len(self.dataset)


class ReferenceSeededStreamTransform:
    def __init__(self, transform, seed):
        self.transform, self.seed = transform, seed

    def __call__(self, example, position):
        worker = torch.utils.data.get_worker_info()
        with reference_seeded_rngs(self.seed, worker.id if worker is not None else 0, position, _identity(example)):
            return self.transform(example)


def reference_map_seeded(dataset, transform, seed, remove_columns):
    transform = ReferenceSeededStreamTransform(transform, seed)
    return dataset.map(transform, with_indices=True, remove_columns=remove_columns)


# --- what is compared ----------------------------------------------------------------------------------------------
def global_states():
    """The three global RNG states, numpy's cached Gaussian included."""
    name, key, position, has_gauss, gauss = np.random.get_state()
    return random.getstate(), (name, key.tolist(), position, has_gauss, gauss), torch.get_rng_state().tolist()


def digest_collate(examples):
    """Runs where the batch was fetched (a worker, or the main process): the examples and that process's states."""
    return examples, hashlib.sha256(pickle.dumps(global_states())).hexdigest()


def model_draws():
    """What the main process draws between batches (drop path: torch; Mixup: numpy and random). One Gaussian: numpy
    keeps the other of its pair cached, so batches alternate between a cached Gaussian and none."""
    return random.random(), float(np.random.normal()), np.random.beta(0.8, 0.8), torch.rand(2).tolist()


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def run(loader, set_epoch) -> list:
    """Two epochs from fixed global states; per batch: the examples, the fetching process's states after the fetch,
    and (main process) the states after the model's draws."""
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    np.random.normal()  # start with a cached Gaussian
    record = []
    for epoch in range(EPOCHS):
        set_epoch(epoch)
        for examples, fetch_states in loader:
            record.append((examples, fetch_states, model_draws(), global_states()))
    return record


def assert_same_runs(reference: list, batched: list) -> None:
    assert len(reference) == len(batched) >= EPOCHS * 3
    assert all(example["pixel_values"] is not None for examples, *_ in batched for example in examples)
    for step, (old, new) in enumerate(zip(reference, batched)):
        assert same(old[0], new[0]), f"batch {step}: the examples differ"
        assert old[1:] == new[1:], f"batch {step}: the global RNG states differ"
    # and the augmentation is random: the 3 copies of an image differ (RandAugment, crops, erasing)
    first = [example["pixel_values"] for example in batched[0][0]]
    assert not torch.equal(first[0], first[1])


# --- data ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory, imagenet_photos):
    """12 of foolbox's ImageNet photos at 64 px in 3 class folders, and the same as 4 parquet shards."""
    from hf_deit.data import shard_dataset

    root = tmp_path_factory.mktemp("seeding_photos")
    for index, (path, _) in enumerate(imagenet_photos[:12]):
        target = root / "folder" / "train" / f"class_{index % 3}"
        target.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").resize((64, 64), Image.BICUBIC).save(target / f"{index}.JPEG", quality=90)
    shard_dataset(root / "folder", root / "shards", num_shards=4, format="parquet")
    return root


def data_arguments(folder, streaming: bool) -> DataArguments:
    # the default recipe (RandAugment rand-m9-mstd0.5-inc1, repeated augmentation x3) with erasing on half the images
    return DataArguments(dataset_name=str(folder), streaming=streaming, image_size=48, reprob=0.5,
                         shuffle_buffer_size=8)


def map_style_run(photos, wrapper, workers: int) -> list:
    train = build_datasets(data_arguments(photos / "folder", False), seed=SEED, do_eval=False).train_dataset
    sampler = PositionalSampler(RepeatAugBatchOrder(train, num_repeats=3, num_replicas=1, batch_size=BATCH, seed=SEED))
    loader = torch.utils.data.DataLoader(wrapper(train, seed=SEED), batch_size=BATCH, sampler=sampler,
                                         num_workers=workers, collate_fn=digest_collate)
    return run(loader, sampler.set_epoch)


def stream_run(photos, workers: int, monkeypatch) -> list:
    # 5 examples per batched call: a pass spans several calls, which do not line up with the loader's batches
    monkeypatch.setattr(seeding, "STREAM_SEEDING_BATCH", 5)
    train = build_datasets(data_arguments(photos / "shards", True), seed=SEED, do_eval=False).train_dataset
    loader = torch.utils.data.DataLoader(train, batch_size=BATCH, num_workers=workers, collate_fn=digest_collate)
    return run(loader, train.set_epoch)


# --- tests ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 2])
def test_map_style_batches_match_the_per_image_path(photos, workers, monkeypatch):
    reference = map_style_run(photos, ReferenceSeededAugmentation, workers)
    calls = []
    if workers == 0:  # the DataLoader fetches each batch with one __getitems__ call: the batched path is what runs
        batched_call = SeededAugmentation.__getitems__
        monkeypatch.setattr(SeededAugmentation, "__getitems__", lambda self, keys: calls.append(keys) or
                            batched_call(self, keys))
    batched = map_style_run(photos, SeededAugmentation, workers)
    assert_same_runs(reference, batched)
    assert len(calls) == (EPOCHS * 3 if workers == 0 else 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_streams_match_the_per_example_path(photos, workers, monkeypatch):
    batched = stream_run(photos, workers, monkeypatch)
    monkeypatch.setattr(pipeline, "map_seeded", reference_map_seeded)
    reference = stream_run(photos, workers, monkeypatch)
    assert_same_runs(reference, batched)


def test_seed_words_are_numpys_seed_sequence():
    """The seeds come from SeedSequence's arithmetic on Python ints: equal on keys of 0 to 20 words, of any size
    and sign (each taken modulo 2**32), for 1 to 20 output words."""
    rng = random.Random(0)
    values = [0, 1, 0xFFFFFFFF, 1 << 32, -1, -(1 << 40)]
    for length in range(21):
        for _ in range(40):
            key = [rng.choice(values + [rng.getrandbits(64), rng.getrandbits(32), rng.getrandbits(6)])
                   for _ in range(length)]
            for n_words in (1, 3, 4, 20):
                expected = np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(n_words, np.uint32)
                assert seed_words(key, n_words) == expected.tolist(), (key, n_words)


def draws():
    """Two Gaussians: numpy caches none afterwards, so that the inner block's swap is not undone by a state copy."""
    return random.random(), np.random.normal(size=2).tolist(), torch.rand(1).item(), np.random.randint(1 << 30)


@pytest.mark.parametrize("numpy_generator", ["MT19937", "PCG64"])
def test_nested_blocks_under_any_numpy_generator(numpy_generator):
    """`seeded_rngs` inside `seeded_rngs` (the spare numpy generator already in place: its state is copied instead)
    and under a global numpy generator that is not an MT19937 (no swap either) draw and restore as the reference."""
    def nested(seeded):
        random.seed(3), torch.manual_seed(3)
        np.random.set_bit_generator(getattr(np.random, numpy_generator)(3))
        np.random.normal()  # a cached Gaussian outside
        with seeded(1, 2):
            before = draws()
            with seeded(5, 6):
                inner = draws()
            after = draws()
        outside = np.random.get_state(legacy=False)
        return before, inner, after, random.getstate(), torch.get_rng_state().tolist(), outside["has_gauss"], \
            outside["gauss"], pickle.dumps(outside["state"])

    original = np.random.get_bit_generator()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the reference's legacy get_state on a PCG64
            expected = nested(reference_seeded_rngs)
        assert nested(seeded_rngs) == expected
    finally:
        np.random.set_bit_generator(original)

"""From `DataArguments` to datasets the Trainer can iterate: decode -> augment -> repeat -> shard.

Map-style (`streaming=False`): a `datasets.Dataset` with an on-the-fly transform (`with_transform`), so each
access decodes and augments anew. Ranks are split by the sampler: `repeat_aug_sampler` (timm's RepeatAugSampler)
for repeated augmentation, on one process too (the paper's code silently falls back to a RandomSampler there);
`RepeatAugBatchOrder` lays those per-rank samplers out for a loader that accelerate shards (the Trainer's).

Streaming: a `datasets.IterableDataset` built only from datasets' own operations, so `state_dict()` /
`load_state_dict()` and `set_epoch()` keep working:
    split_dataset_by_node (rank) -> repeat each example m times (RA) -> shuffle(buffer) -> decode + augment -> drop broken
DataLoader workers then split the rank's shards between them (datasets does this by itself). Repeats are made
undecoded and before the shuffle buffer, so the m copies get independent augmentations and land in different,
nearby batches (the paper's sampler puts them on different GPUs in the same step instead).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from datasets import Dataset, IterableDataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import Sampler
from timm.data.distributed_sampler import RepeatAugSampler

from .arguments import DataArguments
from .crop_record import CropRecordingTransform, record_crops
from .decode import BadImageCounter, BrokenImageError, decode_image, image_key
from .device_decode import ENCODED_IMAGE, EncodeForDevice
from .loading import AnyDataset, load_image_dataset
from .row_key import ROW_KEY, row_key
from .seeding import SeededStreamTransform
from .transforms import build_eval_transform, build_train_transform, draft_size

logger = logging.getLogger(__name__)


class DecodeAndTransform:
    """Example (or batch) with an undecoded `image` -> `pixel_values` tensor (None when broken) + `labels`.

    A class rather than a closure so that DataLoader workers can pickle it under any start method.
    """

    def __init__(self, transform: Callable, counter: BadImageCounter, draft: int | None = None) -> None:
        self.transform = transform
        self.counter = counter
        self.draft = draft
        # Training transforms report each crop box and flip; they travel with the example (a cached teacher needs them).
        self.crop_record = transform.crop_record if isinstance(transform, CropRecordingTransform) else None

    def pixel_values(self, raw: Any, fallback_key: str) -> Any:
        try:
            image = decode_image(raw, self.draft)
        except BrokenImageError as error:
            self.counter.record_broken(image_key(raw, fallback_key), str(error))
            return None
        self.counter.record_ok()
        return self.transform(image)

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        """One example (IterableDataset.map): returns the new columns."""
        key = str(example.get("__key__", example.get("key", "<stream>")))
        out = {"pixel_values": self.pixel_values(example["image"], key), "labels": example["label"]}
        if self.crop_record is not None:
            out.update(crop_box=list(self.crop_record.box), crop_flip=self.crop_record.flipped)
            out[ROW_KEY] = row_key(example["image"], example["label"])
        return out

    def batch(self, batch: dict[str, list]) -> dict[str, list]:
        """A batch (Dataset.with_transform): image/label become pixel_values/labels, other columns pass through."""
        keys = batch.get("__key__", batch.get("key", ["<row>"] * len(batch["image"])))
        out = {name: values for name, values in batch.items() if name not in ("image", "label")}
        out["pixel_values"], boxes, flips = [], [], []
        for raw, key in zip(batch["image"], keys):
            out["pixel_values"].append(self.pixel_values(raw, str(key)))
            if self.crop_record is not None:
                boxes.append(list(self.crop_record.box))
                flips.append(self.crop_record.flipped)
        if self.crop_record is not None:
            out["crop_box"], out["crop_flip"] = boxes, flips
            out[ROW_KEY] = [row_key(raw, label) for raw, label in zip(batch["image"], batch["label"])]
        out["labels"] = batch["label"]
        return out


def _is_decoded(example: dict[str, Any]) -> bool:
    """Not broken: decoded (default path) or readable (--device_augment: still encoded)."""
    return example.get("pixel_values", example.get(ENCODED_IMAGE)) is not None


class _Repeat:
    """Batched map function that emits every example `num_repeats` times in a row (undecoded, so cheap)."""

    def __init__(self, num_repeats: int) -> None:
        self.num_repeats = num_repeats

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {name: [v for v in values for _ in range(self.num_repeats)] for name, values in batch.items()}


def repeat_examples(dataset: IterableDataset, num_repeats: int) -> IterableDataset:
    """Streaming repeated augmentation: each example `num_repeats` times. Apply before `shuffle` so that the buffer
    spreads the copies apart, and before decoding so that each copy is augmented independently."""
    if num_repeats == 1:
        return dataset
    return dataset.map(_Repeat(num_repeats), batched=True, batch_size=1)


class _SeededRepeatAugSampler(RepeatAugSampler):
    """timm's RepeatAugSampler seeds its permutation with the epoch alone; this adds a run seed."""

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = self.seed * 1_000_003 + epoch


def repeat_aug_sampler(
    dataset: Any,
    num_repeats: int = 3,
    num_replicas: int = 1,
    rank: int = 0,
    shuffle: bool = True,
    seed: int = 0,
    full_epoch: bool = True,
) -> RepeatAugSampler:
    """timm's `RepeatAugSampler` for a map-style dataset, also on a single process.

    full_epoch=True (default): an epoch yields every index exactly `num_repeats` times over all ranks (each rank
    len * num_repeats / num_replicas indices; a few wrap around when that does not divide), the same epoch as the
    streaming path. full_epoch=False keeps timm's / the paper's epoch: len(dataset) indices over all ranks, i.e.
    a random 1/num_repeats of the images, each num_repeats times, so an epoch costs what it would without RA.
    """
    if full_epoch:
        # timm selects ceil(len / selected_ratio) indices per rank; this ratio selects all len * m / R of them.
        kwargs = dict(selected_round=0, selected_ratio=num_replicas / num_repeats)
    else:
        kwargs = {}
    return _SeededRepeatAugSampler(
        dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, num_repeats=num_repeats, seed=seed, **kwargs
    )


class RepeatAugBatchOrder(Sampler):
    """Repeated augmentation for map-style data behind accelerate's batch sharding: one global index order, the same
    on every rank, in which rank r's k-th batch is what timm's RepeatAugSampler(rank=r) gives it.

    The Trainer wraps its loader in accelerate's BatchSamplerShard, which (split_batches off) batches the sampler's
    order and hands global batch g to rank g % world. So the global order interleaves the per-rank sequences of
    `repeat_aug_sampler` in chunks of `batch_size`: [rank 0 batch 0, rank 1 batch 0, ..., rank 0 batch 1, ...],
    and the m copies of an image land on different ranks in the same step, as in the paper's sampler. With several
    ranks, a last partial batch is completed from the start of the rank's own sequence (as accelerate's even_batches
    does), so that the chunks stay aligned with the ranks; on one process the order is RepeatAugSampler's.
    """

    def __init__(self, dataset: Any, num_repeats: int, num_replicas: int, batch_size: int, seed: int = 0) -> None:
        self.samplers = [
            repeat_aug_sampler(dataset, num_repeats, num_replicas=num_replicas, rank=rank, seed=seed)
            for rank in range(num_replicas)
        ]
        self.batch_size = batch_size
        self.num_replicas = num_replicas

    @property
    def num_repeats(self) -> int:
        return self.samplers[0].num_repeats

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def _per_rank_length(self) -> int:
        length = len(self.samplers[0])
        if self.num_replicas == 1 or length % self.batch_size == 0:
            return length
        return length + self.batch_size - length % self.batch_size

    def __iter__(self) -> Iterator[int]:
        length = self._per_rank_length()
        per_rank = []
        for sampler in self.samplers:
            indices = list(sampler)
            per_rank.append((indices * (length // len(indices) + 1))[:length])
        for start in range(0, length, self.batch_size):
            for indices in per_rank:
                yield from indices[start : start + self.batch_size]

    def __len__(self) -> int:
        return self._per_rank_length() * self.num_replicas


class _DecodeCheck:
    """Batched map function for the validation scan: the decode error of each image ("" when it decodes)."""

    def __call__(self, images: list[Any]) -> dict[str, list]:
        errors, keys = [], []
        for index, raw in enumerate(images):
            keys.append(image_key(raw, f"row {index}"))
            try:
                decode_image(raw, draft_size=1)  # JPEG at 1/8 scale: still reads (and checks) every byte
                errors.append("")
            except BrokenImageError as error:
                errors.append(str(error))
        return {"decode_error": errors, "key": keys}


def drop_broken_images(dataset: Dataset, counter: BadImageCounter, num_proc: int | None = None) -> Dataset:
    """Decode every image once, count and warn about the broken ones (may raise TooManyBadImagesError), and
    return the dataset without them. The scan writes only a small error column (cached by datasets, so a second
    run is instant); the result is an index mapping over the original rows, not a copy of the images."""
    checked = dataset.map(
        _DecodeCheck(), input_columns=["image"], batched=True, batch_size=64, num_proc=num_proc,
        remove_columns=dataset.column_names, desc="Checking images",
    )
    errors, keys = checked["decode_error"], checked["key"]
    broken = [(key, error) for key, error in zip(keys, errors) if error]
    counter.record_scan(len(errors), broken)
    if not broken:
        return dataset
    logger.warning("%s; first keys: %s", counter.summary(), ", ".join(key for key, _ in broken[:5]))
    return dataset.select([index for index, error in enumerate(errors) if not error])


def prepare_dataset(
    dataset: AnyDataset,
    data_args: DataArguments,
    *,
    train: bool,
    counter: BadImageCounter,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
) -> AnyDataset:
    """Attach decoding and augmentation; for streams also rank sharding, repeated augmentation and shuffling.

    Output examples: {"pixel_values": FloatTensor[3,H,W], "labels": int, other columns...}; training examples also
    carry "crop_box" and "crop_flip" (hf_deit.data.crop_record) and "example_key" (hf_deit.data.row_key). With
    `device_augment`, training examples are {"encoded_image": EncodedImage, "labels", "example_key"} instead
    (hf_deit.data.device_decode): the training step decodes and augments them.
    Map-style datasets drop broken images up front (`validate_images`); one that still fails later comes out with pixel_values None
    and the collator drops it. Streams filter broken images out as they come.
    """
    if train and data_args.device_augment:  # workers only read the bytes; the step decodes and augments
        decode: DecodeAndTransform | EncodeForDevice = EncodeForDevice(counter)
    else:
        transform = record_crops(build_train_transform(data_args)) if train else build_eval_transform(data_args)
        decode = DecodeAndTransform(transform, counter, draft_size(data_args, train))
    if isinstance(dataset, Dataset):
        if data_args.validate_images:
            dataset = drop_broken_images(dataset, counter, data_args.preprocessing_num_workers)
        return dataset.with_transform(decode.batch)
    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    if train:
        dataset = repeat_examples(dataset, data_args.repeated_aug)
        dataset = dataset.shuffle(seed=seed, buffer_size=data_args.shuffle_buffer_size)
    if train:
        # Each example is augmented under its own seed (position in the pass): a resumed run, which replays the
        # pass up to its checkpoint, augments it again identically (see seeding.py).
        dataset = dataset.map(SeededStreamTransform(decode, seed), with_indices=True, remove_columns=["image", "label"])
    else:
        dataset = dataset.map(decode, remove_columns=["image", "label"])
    return dataset.filter(_is_decoded)


@dataclass
class PreparedData:
    """What `build_datasets` returns; unpacks as `train_dataset, eval_dataset, label_names = ...`."""

    train_dataset: AnyDataset | None
    eval_dataset: AnyDataset | None
    label_names: list[str]
    bad_images: dict[str, BadImageCounter] = field(default_factory=dict)  # "train"/"eval" -> shared counts

    def __iter__(self) -> Iterator[Any]:
        return iter((self.train_dataset, self.eval_dataset, self.label_names))


def _load_split(data_args: DataArguments, split: str, max_samples: int | None) -> AnyDataset:
    dataset = load_image_dataset(
        data_args.dataset_name,
        split,
        streaming=data_args.streaming,
        config_name=data_args.dataset_config_name,
        class_index_file=data_args.class_index_file,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        cache_dir=data_args.data_cache_dir,
    )
    if max_samples is not None:
        dataset = dataset.take(max_samples) if isinstance(dataset, IterableDataset) else dataset.select(
            range(min(max_samples, len(dataset)))
        )
    return dataset


def build_datasets(
    data_args: DataArguments,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    do_train: bool = True,
    do_eval: bool = True,
    check_labels: Callable[[list[str]], None] | None = None,
) -> PreparedData:
    """Load, decode and augment the train (augmented) and eval (resize + center crop) splits.

    Streaming train data is sharded for `rank` of `world_size` (leave them at 0 / 1 under the Trainer: with
    `dispatch_batches` off, accelerate itself gives each process whole shards, and splitting here as well would
    leave each rank 1/world_size^2 of the data; pass them for a hand-written loop), repeated `repeated_aug` times and
    shuffled (call `set_epoch` each epoch to reshuffle). Map-style train data needs `repeat_aug_sampler(...)`
    for RA and rank sharding. The Trainer must run with `remove_unused_columns=False` (the transform needs the
    `image` column that the Trainer would otherwise drop) and `accelerator_config={"dispatch_batches": False}`
    for streams (each rank reads its own shards).
    `check_labels(label_names)` runs once the label set is known and before the image scan (minutes on ImageNet), so
    that a label set the model or teacher cannot take stops the run early.
    """
    train = _load_split(data_args, data_args.train_split, data_args.max_train_samples) if do_train else None
    evaluation = _load_split(data_args, data_args.eval_split, data_args.max_eval_samples) if do_eval else None
    reference = train if train is not None else evaluation
    if reference is None:
        raise ValueError("nothing to build: do_train and do_eval are both False")
    label_names = list(reference.features["label"].names)
    if check_labels is not None:
        check_labels(label_names)
    prepared = PreparedData(None, None, label_names)
    for name, dataset, is_train in (("train", train, True), ("eval", evaluation, False)):
        if dataset is None:
            continue
        counter = BadImageCounter(
            data_args.max_bad_fraction,
            expected_total=len(dataset) if isinstance(dataset, Dataset) else None,
            name=f"{data_args.dataset_name} [{name}]",
        )
        prepared.bad_images[name] = counter
        dataset = prepare_dataset(
            dataset, data_args, train=is_train, counter=counter, rank=rank, world_size=world_size, seed=seed
        )
        if is_train:
            prepared.train_dataset = dataset
        else:
            prepared.eval_dataset = dataset
    return prepared

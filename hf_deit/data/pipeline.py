"""From `DataArguments` to datasets the Trainer can iterate: decode -> augment -> repeat -> shard.

An epoch is the paper's (hf_deit.data.epoch): len(dataset) samples over all ranks, a random 1/m of the images each
repeated m times (m = repeated_aug).

Map-style (`streaming=False`): a `datasets.Dataset` with an on-the-fly transform (`with_transform`), so each
access decodes and augments anew. Ranks are split by the sampler: `repeat_aug_sampler` (timm's RepeatAugSampler)
for repeated augmentation, on one process too (the official main.py, started without a distributed launcher,
falls back to a RandomSampler there); `RepeatAugBatchOrder` lays those per-rank samplers out for a loader that
accelerate shards (the Trainer's), in full batches.

Streaming: a `datasets.IterableDataset` built only from datasets' own operations, so `state_dict()` /
`load_state_dict()` and `set_epoch()` keep working:
    split_dataset_by_node (rank) -> shuffle(buffer) -> keep every m-th (RA draw) -> repeat each kept example m
    times -> decode + augment -> drop broken
DataLoader workers then split the rank's shards between them (datasets does this by itself). The draw and the
repeats are made undecoded, so the examples left out cost no decoding and the m copies get independent
augmentations; the copies come in a row, so in one step (the paper's sampler puts them in one step on m GPUs).
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
from .decode import BadImageCounter, BrokenImageError, decode_image, image_key, read_image_bytes
from .device_decode import ENCODED_IMAGE, EncodeForDevice
from .epoch import record_stream_size, stream_size
from .loading import IMAGENET_PARQUET_ID, AnyDataset, count_local_examples, load_image_dataset, load_image_files
from .remote import builder_for, count_parquet_rows, resolve_files
from .row_key import CONTENT_KEY, ROW_KEY, content_hash, row_key
from .seeding import map_seeded
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

    def decode(self, raw: Any, fallback_key: str) -> tuple[Any, int]:
        """(pixel_values, or None when the image is broken; the content hash of its bytes, 0 unless training)."""
        try:
            data = read_image_bytes(raw)
            image = decode_image(data, self.draft)
        except BrokenImageError as error:
            self.counter.record_broken(image_key(raw, fallback_key), str(error))
            return None, 0
        self.counter.record_ok()
        # Training examples carry the hash of the bytes they were decoded from: a cached teacher checks it.
        return self.transform(image), content_hash(data) if self.crop_record is not None else 0

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        """One example (IterableDataset.map): returns the new columns."""
        key = str(example.get("__key__", example.get("key", "<stream>")))
        pixel_values, content = self.decode(example["image"], key)
        out = {"pixel_values": pixel_values, "labels": example["label"]}
        if self.crop_record is not None:
            out.update(crop_box=list(self.crop_record.box), crop_flip=self.crop_record.flipped)
            out[ROW_KEY], out[CONTENT_KEY] = row_key(example["image"], example["label"]), content
        return out

    def batch(self, batch: dict[str, list]) -> dict[str, list]:
        """A batch (Dataset.with_transform): image/label become pixel_values/labels, other columns pass through."""
        keys = batch.get("__key__", batch.get("key", ["<row>"] * len(batch["image"])))
        out = {name: values for name, values in batch.items() if name not in ("image", "label")}
        out["pixel_values"], contents, boxes, flips = [], [], [], []
        for raw, key in zip(batch["image"], keys):
            pixel_values, content = self.decode(raw, str(key))
            out["pixel_values"].append(pixel_values)
            contents.append(content)
            if self.crop_record is not None:
                boxes.append(list(self.crop_record.box))
                flips.append(self.crop_record.flipped)
        if self.crop_record is not None:
            out["crop_box"], out["crop_flip"], out[CONTENT_KEY] = boxes, flips, contents
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
    """Streaming repeated augmentation: each example `num_repeats` times in a row. Apply before decoding, so that
    each copy is augmented independently (and after `draw_examples`, for the paper's epoch)."""
    if num_repeats == 1:
        return dataset
    return dataset.map(_Repeat(num_repeats), batched=True, batch_size=1)


class _EveryNth:
    """Filter function (with_indices): keeps the examples at positions 0, n, 2n, ... of the stream it sees."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, example: dict[str, Any], position: int) -> bool:
        return position % self.n == 0


def draw_examples(dataset: IterableDataset, num_repeats: int) -> IterableDataset:
    """Keep one example in `num_repeats` (every n-th of what a shuffle buffer lets out, so a random 1/n that changes
    with the epoch's shuffle): with `repeat_examples` after it, RASampler's epoch of a random 1/n of the images,
    each n times. Undecoded, so the others cost a read and no decoding."""
    if num_repeats == 1:
        return dataset
    return dataset.filter(_EveryNth(num_repeats), with_indices=True)


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
) -> RepeatAugSampler:
    """timm's `RepeatAugSampler` (the paper's RASampler) for a map-style dataset, also on a single process.

    Each epoch it yields `samples_per_epoch(len(dataset), num_replicas)` indices on each rank (hf_deit.data.epoch):
    len(dataset) over all ranks, a random 1/num_repeats of the images, each num_repeats times, so an epoch costs
    what it would without RA. `set_epoch(epoch)` reshuffles (the permutation is seeded by `seed` and the epoch).
    """
    return _SeededRepeatAugSampler(
        dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, num_repeats=num_repeats, seed=seed
    )


class RepeatAugBatchOrder(Sampler):
    """Repeated augmentation for map-style data behind accelerate's batch sharding: one global index order, the same
    on every rank, in which rank r's k-th batch is what timm's RepeatAugSampler(rank=r) gives it.

    The Trainer wraps its loader in accelerate's BatchSamplerShard, which (split_batches off) batches the sampler's
    order and hands global batch g to rank g % world. So the global order interleaves the per-rank sequences of
    `repeat_aug_sampler` in chunks of `batch_size`: [rank 0 batch 0, rank 1 batch 0, ..., rank 0 batch 1, ...],
    and the m copies of an image land on different ranks in the same step, as in the paper's sampler. Each rank's
    last partial batch is dropped, as the paper's DataLoader does (drop_last=True): an epoch is
    `samples_per_epoch(len(dataset), world) // batch_size` steps on every rank, whatever `dataloader_drop_last` says.
    """

    def __init__(self, dataset: Any, num_repeats: int, num_replicas: int, batch_size: int, seed: int = 0) -> None:
        self.samplers = [
            repeat_aug_sampler(dataset, num_repeats, num_replicas=num_replicas, rank=rank, seed=seed)
            for rank in range(num_replicas)
        ]
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        if self._per_rank_length() == 0:
            raise ValueError(
                f"An epoch gives each of the {num_replicas} process(es) {len(self.samplers[0])} of the {len(dataset)} "
                f"images (samples_per_epoch), fewer than one batch of {batch_size}: lower the per-device batch size."
            )

    @property
    def num_repeats(self) -> int:
        return self.samplers[0].num_repeats

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def _per_rank_length(self) -> int:
        return len(self.samplers[0]) // self.batch_size * self.batch_size

    def __iter__(self) -> Iterator[int]:
        length = self._per_rank_length()
        per_rank = [list(sampler)[:length] for sampler in self.samplers]
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
    dataset_size: int | None = None,
) -> AnyDataset:
    """Attach decoding and augmentation; for streams also rank sharding, repeated augmentation and shuffling.

    A training stream draws a random 1/repeated_aug of what it reads and repeats each drawn example repeated_aug
    times (`draw_examples`, `repeat_examples`): one pass over it is about len(dataset) samples, the paper's epoch.
    `dataset_size` (its number of examples over all ranks) is recorded on it (hf_deit.data.stream_size), so that
    `hf_deit.data.EpochLoader` can cut epochs of exactly the paper's length out of its loader.

    Output examples: {"pixel_values": FloatTensor[3,H,W], "labels": int, other columns...}; training examples also
    carry "crop_box" and "crop_flip" (hf_deit.data.crop_record), "example_key" and "example_content"
    (hf_deit.data.row_key). With `device_augment`, training examples are {"encoded_image": EncodedImage, "labels",
    "example_key"} instead (hf_deit.data.device_decode): the training step decodes and augments them.
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
    if not train:
        return dataset.map(decode, remove_columns=["image", "label"]).filter(_is_decoded)
    # The paper's epoch (hf_deit.data.epoch): a random 1/m of the examples, each m times in a row (one step, as the
    # paper's sampler puts the copies in one step, on m ranks).
    dataset = dataset.shuffle(seed=seed, buffer_size=data_args.shuffle_buffer_size)
    dataset = repeat_examples(draw_examples(dataset, data_args.repeated_aug), data_args.repeated_aug)
    # Each example is augmented under its own seed (position in the epoch's stream): a resumed run, which replays
    # the epoch up to its checkpoint, augments it again identically (see seeding.py).
    dataset = map_seeded(dataset, decode, seed, remove_columns=["image", "label"])
    dataset = dataset.filter(_is_decoded)
    if dataset_size is not None:
        record_stream_size(dataset, dataset_size)
    return dataset


@dataclass
class PreparedData:
    """What `build_datasets` returns; unpacks as `train_dataset, eval_dataset, label_names = ...`."""

    train_dataset: AnyDataset | None
    eval_dataset: AnyDataset | None
    label_names: list[str]
    bad_images: dict[str, BadImageCounter] = field(default_factory=dict)  # "train"/"eval" -> shared counts

    def __iter__(self) -> Iterator[Any]:
        return iter((self.train_dataset, self.eval_dataset, self.label_names))


def _load_split(data_args: DataArguments, split: str, max_samples: int | None, train: bool) -> AnyDataset:
    """One split: from --train_files / --validation_files when given (hf_deit.data.remote), else --dataset_name."""
    options = dict(streaming=data_args.streaming, class_index_file=data_args.class_index_file,
                   image_column=data_args.image_column, label_column=data_args.label_column,
                   cache_dir=data_args.data_cache_dir)
    files = data_args.files_for(train)
    if files:
        dataset = load_image_files(files, split, **options)
    else:
        dataset = load_image_dataset(data_args.dataset_name, split, config_name=data_args.dataset_config_name, **options)
    if max_samples is not None:
        dataset = dataset.take(max_samples) if isinstance(dataset, IterableDataset) else dataset.select(
            range(min(max_samples, len(dataset)))
        )
    return dataset


def count_train_files(data_args: DataArguments) -> int | None:
    """Examples in --train_files without reading them: parquet footers (URLs too); None for other formats."""
    found = resolve_files(data_args.train_files)
    paths = [path for path, _ in found]
    if builder_for(paths) == "parquet":
        return count_parquet_rows(paths)
    return None


def train_stream_size(data_args: DataArguments, stream: IterableDataset) -> int | None:
    """How many examples a training stream holds, which sets its epoch: `--train_dataset_size`, else the split's
    size in the Hub metadata, else what the local files say (`count_local_examples`); `max_train_samples` caps it.
    None when nothing says (logged: the stream then has no epochs of the paper's length)."""
    size = data_args.train_dataset_size or stream_size(stream)
    if size is None:
        size = count_train_files(data_args) if data_args.train_files else count_local_examples(
            data_args.dataset_name, data_args.train_split)
    if data_args.max_train_samples is not None:
        size = min(size, data_args.max_train_samples) if size else data_args.max_train_samples
    if size is None:
        logger.warning(
            "The size of the training stream %s is unknown: it has no epoch of the paper's length, a pass over it "
            "(about len(dataset) samples) counts as one, and the Trainer needs --max_steps. Pass "
            "--train_dataset_size N to train by epochs (the examples of parquet files, local or at URLs, are counted "
            "from their footers; webdataset tars at URLs are not).", data_args.source,
        )
    return size


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
    leave each rank 1/world_size^2 of the data; pass them for a hand-written loop), shuffled, drawn and repeated for
    the paper's epoch (`prepare_dataset`; call `set_epoch` each epoch to reshuffle); when its size is known
    (`train_stream_size`), `hf_deit.data.EpochLoader` cuts epochs of exactly
    `batches_per_epoch(size, world_size, batch_size, repeated_aug)` batches out of its loader (DistillationTrainer
    does). Map-style train data needs `repeat_aug_sampler(...)` for RA and rank sharding. The Trainer must run with
    `remove_unused_columns=False` (the transform needs the `image` column that the Trainer would otherwise drop) and
    `accelerator_config={"dispatch_batches": False}` for streams (each rank reads its own shards).
    `check_labels(label_names)` runs once the label set is known and before the image scan (minutes on ImageNet), so
    that a label set the model or teacher cannot take stops the run early.
    """
    if do_eval and data_args.train_files and not data_args.validation_files and data_args.dataset_name == IMAGENET_PARQUET_ID:
        raise ValueError(
            f"--train_files without --validation_files: the evaluation split would be read from --dataset_name's "
            f"default, the Hub's {IMAGENET_PARQUET_ID}. Pass --validation_files (or --dataset_name for the evaluation "
            "data), or run without evaluation."
        )
    train = _load_split(data_args, data_args.train_split, data_args.max_train_samples, True) if do_train else None
    evaluation = _load_split(data_args, data_args.eval_split, data_args.max_eval_samples, False) if do_eval else None
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
            name=f"{data_args.source if is_train else (data_args.validation_files or [data_args.dataset_name])[0]} "
            f"[{name}]",
        )
        prepared.bad_images[name] = counter
        size = train_stream_size(data_args, dataset) if is_train and isinstance(dataset, IterableDataset) else None
        dataset = prepare_dataset(
            dataset, data_args, train=is_train, counter=counter, rank=rank, world_size=world_size, seed=seed,
            dataset_size=size,
        )
        if is_train:
            prepared.train_dataset = dataset
        else:
            prepared.eval_dataset = dataset
    return prepared

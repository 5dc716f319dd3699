"""ImageNet-format data for DeiT on `datasets` + timm: loading, robust decoding, the DeiT augmentation recipe,
repeated augmentation, rank/worker sharding and batching. See docs/data.md.

    data_args = DataArguments(dataset_name="../shared/data/imagenet-sample", eval_split="validation")
    train_dataset, eval_dataset, label_names = build_datasets(data_args)
    collator = DeiTCollator()   # stacks; Mixup/CutMix run in the training step (hf_deit.distillation.mixing)
"""

from .arguments import DataArguments
from .collate import DeiTCollator
from .device_augment import DeviceAugment, DeviceAugmentConfig, build_device_augment
from .device_finish import DeviceFinish, build_device_finish
from .epoch import EpochLoader, batches_per_epoch, samples_per_epoch, stream_size
from .decode import BadImageCounter, BrokenImageError, TooManyBadImagesError, decode_image, to_rgb
from .loading import (
    IMAGENET_PARQUET_ID,
    IMAGENET_WDS_ID,
    count_local_examples,
    find_class_index_file,
    load_image_dataset,
    load_image_files,
    read_class_index,
)
from .pipeline import (
    DecodeAndTransform,
    PreparedData,
    RepeatAugBatchOrder,
    build_datasets,
    draw_examples,
    drop_broken_images,
    prepare_dataset,
    repeat_aug_sampler,
    repeat_examples,
    train_stream_size,
)
from .shards import shard_dataset
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transform,
    build_train_transform,
    draft_size,
    fix_timm_posterize,
)

__all__ = [
    "DataArguments",
    "DeiTCollator",
    "DeviceAugment",
    "DeviceAugmentConfig",
    "build_device_augment",
    "DeviceFinish",
    "build_device_finish",
    "BadImageCounter",
    "BrokenImageError",
    "TooManyBadImagesError",
    "decode_image",
    "to_rgb",
    "EpochLoader",
    "batches_per_epoch",
    "samples_per_epoch",
    "stream_size",
    "IMAGENET_PARQUET_ID",
    "IMAGENET_WDS_ID",
    "count_local_examples",
    "find_class_index_file",
    "load_image_dataset",
    "load_image_files",
    "read_class_index",
    "DecodeAndTransform",
    "PreparedData",
    "RepeatAugBatchOrder",
    "build_datasets",
    "draw_examples",
    "drop_broken_images",
    "prepare_dataset",
    "repeat_aug_sampler",
    "repeat_examples",
    "train_stream_size",
    "shard_dataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_eval_transform",
    "build_train_transform",
    "draft_size",
    "fix_timm_posterize",
]

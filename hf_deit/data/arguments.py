"""`DataArguments`: how the data is loaded and augmented per image, with DeiT's defaults, parsed by
`transformers.HfArgumentParser`.

Defaults are the paper's recipe (DeiT Table 9 / its `main.py`): RandomResizedCrop (bicubic), flip, RandAugment
`rand-m9-mstd0.5-inc1`, random erasing 0.25 (pixel mode), repeated augmentation x3. No field name clashes with
`transformers.TrainingArguments`, so they can be parsed together.
Mixup/CutMix are applied in the training step, not by the data pipeline: `hf_deit.DeiTTrainingArguments` inherits
`hf_deit.distillation.mixing.MixupArguments` (the trainer owns them, with label smoothing as its
`label_smoothing_factor`); a hand-written loop (examples/train_teacher.py) parses `MixupArguments` itself and calls
`build_mixup` + `mix_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Resize interpolations the transforms (timm) accept.
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "random")


@dataclass
class DataArguments:
    # --- where the data comes from
    dataset_name: str = field(
        default="ILSVRC/imagenet-1k",
        metadata={
            "help": "Hub dataset id (ILSVRC/imagenet-1k: parquet; timm/imagenet-1k-wds: webdataset) or a local path: "
            "an ImageNet-layout folder (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG), a folder of parquet shards, "
            "or a folder of webdataset .tar shards (as written by `hf-deit shard`)."
        },
    )
    train_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "Training data files instead of --dataset_name's train split: local paths or globs, or URLs "
            "(http(s)://, s3://, gs://: any fsspec protocol; s3/gs need s3fs/gcsfs), of parquet or webdataset .tar "
            "shards (as `hf-deit shard` writes) or .arrow files. Globs on URLs need a store that lists folders "
            "(s3, gs). Listed at start-up with retries; map-style data is downloaded into the datasets cache first."
        },
    )
    validation_files: list[str] | None = field(
        default=None,
        metadata={"help": "Evaluation data files instead of --dataset_name's eval split (as --train_files)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str = field(default="validation", metadata={"help": "Split to evaluate on (a folder's val/ is 'validation')."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the data (datasets.IterableDataset) instead of preparing an Arrow copy first."},
    )
    class_index_file: str | None = field(
        default=None,
        metadata={
            "help": "File giving the class order (classes.tsv with index/wnid columns, LOC_synset_mapping.txt, or one "
            "name per line). Default: a classes.tsv / LOC_synset_mapping.txt found in the dataset folder, else the "
            "dataset's own ClassLabel, else sorted folder names."
        },
    )
    image_column: str | None = field(
        default=None, metadata={"help": "Image column (default: 'image', or jpg/jpeg/png/webp for webdataset)."}
    )
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: 'label', or 'cls')."})
    data_cache_dir: str | None = field(default=None, metadata={"help": "datasets cache directory."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation examples."})
    # --- augmentation (timm create_transform)
    image_size: int = field(default=224, metadata={"help": "Training and evaluation resolution (square)."})
    interpolation: str = field(default="bicubic", metadata={"help": f"Resize interpolation: one of {INTERPOLATIONS}."})
    train_crop_scale: list[float] = field(
        default_factory=lambda: [0.08, 1.0], metadata={"help": "RandomResizedCrop area range (two numbers)."}
    )
    small_image_padding: int | None = field(
        default=None,
        metadata={
            "help": "For image_size <= 32 (CIFAR-like), training uses a reflect-padded random crop with this padding "
            "instead of RandomResizedCrop (default image_size // 8, i.e. 4 px at 32 px)."
        },
    )
    hflip: float = field(default=0.5, metadata={"help": "Horizontal flip probability."})
    auto_augment: str | None = field(
        default="rand-m9-mstd0.5-inc1",
        metadata={"help": "timm auto-augment policy string ('none' or empty disables)."},
    )
    color_jitter: float = field(
        default=0.3,
        metadata={
            "help": "Colour jitter strength. As in the paper's code (timm), it is NOT applied while RandAugment is on "
            "unless --force_color_jitter."
        },
    )
    force_color_jitter: bool = field(default=False, metadata={"help": "Apply colour jitter on top of RandAugment."})
    reprob: float = field(default=0.25, metadata={"help": "Random erasing probability."})
    remode: str = field(default="pixel", metadata={"help": "Random erasing fill: 'pixel', 'rand' or 'const'."})
    recount: int = field(default=1, metadata={"help": "Random erasing count."})
    eval_crop_pct: float | None = field(
        default=None,
        metadata={"help": "Eval resize = image_size / eval_crop_pct then center crop. Default 0.875, or 1.0 at <= 32 px."},
    )
    jpeg_draft: bool = field(
        default=False,
        metadata={
            "help": "Let libjpeg decode large JPEGs at 1/2-1/8 scale when the result still has >= the pixels the "
            "transform keeps (eval: the resize target; training: the smallest RandomResizedCrop side)."
        },
    )
    uint8_batches: bool = field(
        default=False,
        metadata={
            "help": "Workers return uint8 training images; normalisation and random erasing run in the training step "
            "on the accelerator, before Mixup/CutMix (timm's prefetcher design; hf_deit.data.device_finish). Less "
            "worker CPU per image and 4x smaller batches to move. Normalisation is bit-identical; erasing has the "
            "same distribution but draws from the main process's RNG."
        },
    )
    device_augment: bool = field(
        default=False,
        metadata={
            "help": "Workers return the training images still encoded (JPEG bytes) with a per-image seed; the training "
            "step decodes them on the training device (nvjpeg on CUDA) and runs the DeiT augmentation there on tensors "
            "(RandomResizedCrop, flip, RandAugment rand-*, normalisation, random erasing; hf_deit.data.device_augment). "
            "Same distributions as timm's transform, not the same pixels (docs/data.md)."
        },
    )
    # --- sampling
    repeated_aug: int = field(
        default=3,
        metadata={
            "help": "Repeated augmentation factor (1 = off), with the paper's epoch: len(dataset) samples over all "
            "processes (rounded as the paper's RASampler: floor(N // 256 * 256 / processes) per process), i.e. a "
            "random 1/repeated_aug of the images each epoch, each used repeated_aug times with independent "
            "augmentations (map-style: timm RepeatAugSampler, the copies on different processes in one step; "
            "streaming: the copies in a row on one process). With 1, an epoch uses every image once."
        },
    )
    train_dataset_size: int | None = field(
        default=None,
        metadata={
            "help": "Streaming only: the number of training examples, which sets the epoch (see repeated_aug). "
            "Default: the dataset's split metadata (Hub datasets), the footers of local parquet shards, or the "
            "images or tar members of a local folder. A stream of unknown size needs --max_steps (a pass over it, "
            "about len(dataset) samples, is then an epoch)."
        },
    )
    shuffle_buffer_size: int = field(
        default=10_000,
        metadata={
            "help": "Streaming shuffle buffer (examples, held undecoded, per worker). With repeated augmentation, "
            "each epoch draws every repeated_aug-th example it lets out: the draw is as random as the buffer."
        },
    )
    validate_images: bool = field(
        default=True,
        metadata={
            "help": "Map-style only: decode every image once before training (JPEGs at 1/8 scale; cached by datasets) "
            "and drop the broken ones, so that batches never shrink. Streams skip broken images as they come."
        },
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for the validation scan (datasets.map num_proc)."}
    )
    max_bad_fraction: float = field(
        default=0.01,
        metadata={"help": "Stop with an error when more than this fraction of images is broken (broken ones are skipped)."},
    )

    def __post_init__(self) -> None:
        if "://" in self.dataset_name and not self.dataset_name.startswith(("hf://", "file://")):
            from .loading import url_dataset_name_message

            raise ValueError(url_dataset_name_message(self.dataset_name))
        if self.auto_augment in ("", "none", "None"):
            self.auto_augment = None
        self.train_crop_scale = [float(s) for s in self.train_crop_scale]
        if not (len(self.train_crop_scale) == 2 and 0 < self.train_crop_scale[0] <= self.train_crop_scale[1] <= 1):
            raise ValueError(f"train_crop_scale must be (low, high) with 0 < low <= high <= 1, got {self.train_crop_scale}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.remode not in ("pixel", "rand", "const"):
            raise ValueError(f"remode must be 'pixel', 'rand' or 'const', got {self.remode!r}")
        for name in ("hflip", "reprob", "max_bad_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.repeated_aug < 1:
            raise ValueError(f"repeated_aug must be >= 1 (1 = off), got {self.repeated_aug}")
        if self.eval_crop_pct is None:
            self.eval_crop_pct = 1.0 if self.image_size <= 32 else 0.875
        if not 0 < self.eval_crop_pct <= 1:
            raise ValueError(f"eval_crop_pct must be in (0, 1], got {self.eval_crop_pct}")
        if self.shuffle_buffer_size < 1:
            raise ValueError("shuffle_buffer_size must be >= 1")
        if self.train_dataset_size is not None and self.train_dataset_size < 1:
            raise ValueError(f"train_dataset_size must be >= 1 (or unset), got {self.train_dataset_size}")
        if self.device_augment:
            self.check_device_augment()

    def files_for(self, train: bool) -> list[str] | None:
        """The data files named for the train or evaluation split (None: that split comes from --dataset_name)."""
        return self.train_files if train else self.validation_files

    @property
    def source(self) -> str:
        """Where the training data comes from, in words (logs, model cards)."""
        if self.train_files:
            return self.train_files[0] + (f" (+{len(self.train_files) - 1} more)" if len(self.train_files) > 1 else "")
        return self.dataset_name

    def check_device_augment(self) -> None:
        """Refuse what --device_augment does not implement (each message says what to use instead)."""
        if self.uint8_batches:
            raise ValueError("--device_augment already finishes batches on the device: drop --uint8_batches.")
        if self.interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(
                f"--device_augment resizes with bicubic, bilinear or nearest on tensors, got --interpolation "
                f"{self.interpolation}: pick one of those, or train without --device_augment."
            )
        if self.auto_augment is not None and not self.auto_augment.startswith("rand"):
            raise ValueError(
                f"--device_augment implements timm's RandAugment ('rand-...') only, got --auto_augment "
                f"{self.auto_augment}: use a rand-* policy or none, or train without --device_augment."
            )
        if self.force_color_jitter or (self.auto_augment is None and self.color_jitter):
            raise ValueError(
                "--device_augment has no colour jitter (timm applies it when RandAugment is off or with "
                "--force_color_jitter): set --color_jitter 0 and drop --force_color_jitter, or train without "
                "--device_augment."
            )


"""What the table trains: its configurations (a typed record each), its command-line arguments, and the one place
that says which regularisers every run uses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Configuration:
    """One row of the table: how it is trained and what the page calls it."""

    name: str
    label: str  # what the page calls it
    role: Literal["teacher", "student", "peer"]
    kind: Literal["plain", "distilled"] | None  # DeiT without / with the distillation token; None: the CNN teacher
    distillation: Literal["none", "soft", "hard"] | None  # None: the CNN teacher (examples/train_teacher.py)
    teacher: str | None = None  # name of the configuration that teaches this one

    @property
    def token(self) -> bool:
        return self.kind == "distilled"


_ALL = [
    Configuration("teacher_cnn", "Teacher: CNN (timm)", "teacher", None, None),
    Configuration("teacher_vit", "Teacher: transformer (larger plain DeiT)", "teacher", "plain", "none"),
    Configuration("no_distillation", "DeiT, no distillation", "student", "plain", "none"),
    Configuration("soft", "DeiT, soft distillation", "student", "plain", "soft", "teacher_cnn"),
    Configuration("hard", "DeiT, hard distillation", "student", "plain", "hard", "teacher_cnn"),
    Configuration("soft_token", "DeiT with distillation token, soft", "student", "distilled", "soft", "teacher_cnn"),
    Configuration("hard_token", "DeiT with distillation token, hard", "student", "distilled", "hard", "teacher_cnn"),
    Configuration("hard_token_cached", "DeiT with distillation token, hard, cached teacher (dense label maps)",
                  "student", "distilled", "hard", "teacher_cnn"),
    Configuration("hard_token_vit", "DeiT with distillation token, hard, transformer teacher", "student", "distilled",
                  "hard", "teacher_vit"),
    Configuration("timm_hard_token", "timm TokenDistillationTask (peer), hard", "peer", "distilled", "hard",
                  "teacher_cnn"),
]
# name -> configuration, in the order the page lists them.
CONFIGURATIONS: dict[str, Configuration] = {configuration.name: configuration for configuration in _ALL}
# Run order: the main comparisons first, so that a run cut short still answers them (the page is rewritten after
# every finished run); the page itself lists runs in CONFIGURATIONS order.
DEFAULT_CONFIGURATIONS = ["teacher_cnn", "no_distillation", "hard", "soft", "hard_token", "timm_hard_token",
                          "teacher_vit", "hard_token_vit"]


@dataclass
class TableArguments:
    dataset_name: str = field(
        default=str(REPO_ROOT.parent / "shared" / "data" / "cifar10"),
        metadata={"help": "ImageNet-layout folder (train/<class>/*, <eval_split>/<class>/*)."},
    )
    eval_split: str = field(default="test", metadata={"help": "Folder of the evaluation images (CIFAR-10: test)."})
    train_per_class: int = field(default=500, metadata={"help": "Training images per class (the first N, sorted)."})
    eval_per_class: int = field(default=200, metadata={"help": "Evaluation images per class (the first N, sorted)."})
    image_size: int = field(default=32, metadata={"help": "Resolution (32: CIFAR's own; padded-crop augmentation)."})
    patch_size: int = field(default=4, metadata={"help": "Student patch side: 32 px / 4 = 8 x 8 = 64 patches."})
    hidden_size: int = field(default=96, metadata={"help": "Student width (DeiT-Ti: 192)."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Student depth (DeiT-Ti: 12)."})
    num_attention_heads: int = field(default=3, metadata={"help": "Student heads (DeiT-Ti: 3)."})
    teacher_cnn: str = field(default="resnet18", metadata={"help": "timm architecture of the CNN teacher."})
    teacher_vit_hidden_size: int = field(default=144, metadata={"help": "Width of the transformer teacher."})
    teacher_vit_num_hidden_layers: int = field(default=4, metadata={"help": "Depth of the transformer teacher."})
    teacher_vit_num_attention_heads: int = field(default=3, metadata={"help": "Heads of the transformer teacher."})
    epochs: int = field(default=6, metadata={"help": "Epochs of every student and of the transformer teacher."})
    teacher_epochs: int = field(default=12, metadata={"help": "Epochs of the CNN teacher."})
    batch_size: int = field(default=128, metadata={"help": "Images per optimizer step (every run)."})
    learning_rate: float = field(
        default=1e-3, metadata={"help": "AdamW peak lr of every run (the paper's 5e-4 x batch/512 is for 300 epochs)."}
    )
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (the paper's)."})
    warmup_epochs: float = field(default=1.0, metadata={"help": "Linear warmup, then cosine decay to 0."})
    drop_path_rate: float = field(default=0.0, metadata={"help": "Stochastic depth of the students (paper: 0.1)."})
    hard_alpha: float = field(default=0.5, metadata={"help": "Distillation weight of hard distillation (paper: 0.5)."})
    soft_alpha: float = field(default=0.1, metadata={"help": "Distillation weight of soft distillation (paper: 0.1)."})
    soft_tau: float = field(default=3.0, metadata={"help": "Temperature of soft distillation (paper: 3.0)."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers (0: decode in the training process)."})
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2],
        metadata={"help": "Seeds: every student (and the timm peer) is trained once per seed and reported as the mean; "
                          "the teachers use the first. Two or more give the seed noise the verdicts are judged by."},
    )
    configurations: list[str] = field(
        default_factory=lambda: list(DEFAULT_CONFIGURATIONS),
        metadata={"help": f"Which runs, in order; teachers are added when a student needs them. Known: "
                          f"{', '.join(CONFIGURATIONS)}."},
    )
    output_dir: str = field(default="runs/reproduce_table", metadata={"help": "Runs, data subset and caches."})
    docs_dir: str = field(default=str(REPO_ROOT / "docs"), metadata={"help": "Where results.md + PNG + json go."})
    overwrite: bool = field(default=False, metadata={"help": "Re-train runs whose result.json exists."})
    device_augment: bool = field(
        default=False,
        metadata={"help": "hf_deit's runs use the GPU data path (DataArguments.device_augment: decode and augment "
                          "on the device) when this hf_deit has it; ignored with a note when it does not. The CNN "
                          "teacher (train_teacher.py) and timm's peer keep the CPU path."},
    )
    gpu_h200: bool = field(
        default=False,
        metadata={"help": "The table on the full CIFAR-10 training set at a budget sized to about 8 minutes on one "
                          "H200 (benchmarks/gpu_check.sh --stages table; the estimate is in docs/benchmarks.md): "
                          "5,000 train / 200 test images per class, width-192 depth-6 students for 4 epochs, a 288x6 "
                          "transformer teacher, resnet18 for 8 epochs, batch 256, the first two seeds, DataLoader "
                          "workers on all cores but one, --device_augment, and the cached-teacher row added last. "
                          "Overrides those settings above; --smoke on top shrinks the same configuration to a quick "
                          "check."},
    )
    smoke: bool = field(
        default=False,
        metadata={"help": "Tiny budget for a quick check of every configuration: 10 train / 5 eval images per class, "
                          "1 epoch, batch 50, depth-1 width-32 DeiTs, timm's test_resnet as CNN teacher, the first "
                          "two seeds (overrides the sizes, epochs, teacher and seeds above)."},
    )

    def __post_init__(self) -> None:
        if self.gpu_h200:
            self.apply_gpu_h200()
        if self.smoke:
            self.train_per_class, self.eval_per_class, self.epochs, self.teacher_epochs = 10, 5, 1, 1
            self.hidden_size, self.num_hidden_layers, self.num_attention_heads, self.batch_size = 32, 1, 2, 50
            self.teacher_vit_hidden_size, self.teacher_vit_num_hidden_layers = 48, 1
            self.teacher_vit_num_attention_heads, self.teacher_cnn = 2, "test_resnet"  # timm's 0.4 M test net
            self.seeds = self.seeds[:2]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds={self.seeds}: give one or more distinct seeds")
        unknown = [name for name in self.configurations if name not in CONFIGURATIONS]
        if unknown:
            raise ValueError(f"unknown configurations {unknown}; choose from {list(CONFIGURATIONS)}")
        self.configurations = with_teachers(self.configurations)
        if min(self.train_per_class, self.eval_per_class, self.epochs, self.teacher_epochs, self.batch_size) < 1:
            raise ValueError("sizes, epochs and batch_size must be >= 1")
        if (self.hidden_size % self.num_attention_heads
                or self.teacher_vit_hidden_size % self.teacher_vit_num_attention_heads):
            raise ValueError("hidden sizes must be divisible by their numbers of heads")

    def apply_gpu_h200(self) -> None:
        """The --gpu_h200 budget, sized by benchmarks/size_gpu_table.py (docs/benchmarks.md, "The table on a GPU").
        The data loader sets the pace on a GPU: at 32 px a width-192 depth-6 student costs about 1 GFLOP per training
        image, so an epoch of 50,000 images is about 2 s of fp32 compute, while hf_deit's loader prepares 500-680
        CIFAR images/s per CPU core (measured on the 2-core dev machine), 5-7 s per epoch with 15 workers. The
        teachers once, 7 students x 2 seeds x 4 epochs: 68 passes over the training images, 7-9.5 minutes with
        start-up. The page is rewritten after every run, so a cut loses the last rows (the cached teacher's)."""
        self.train_per_class, self.eval_per_class = 5000, 200
        self.hidden_size, self.num_hidden_layers, self.num_attention_heads = 192, 6, 3
        self.teacher_vit_hidden_size, self.teacher_vit_num_hidden_layers = 288, 6
        self.teacher_vit_num_attention_heads = 6
        self.epochs, self.teacher_epochs, self.batch_size, self.seeds = 4, 8, 256, self.seeds[:2]
        self.num_workers = max(0, min(15, (os.cpu_count() or 1) - 1))
        if "hard_token_cached" not in self.configurations:  # the cache's row last: the first one a cut loses
            self.configurations = [*self.configurations, "hard_token_cached"]
        self.device_augment = True


def with_teachers(names: list[str]) -> list[str]:
    """`names` as given, each teacher moved (or added) just before its first student."""
    ordered: list[str] = []
    for name in names:
        for needed in (CONFIGURATIONS[name].teacher, name):
            if needed is not None and needed not in ordered:
                ordered.append(needed)
    return ordered


# The DeiT recipe's heavy regularisers are off at this budget (a few epochs of 5k images: they slow convergence
# far more than they prevent over-fitting); see docs/results.md. Padded random crop + flip + label smoothing stay.
LABEL_SMOOTHING = 0.1


def regularisers(args: TableArguments) -> dict[str, dict[str, Any]]:
    """Every regulariser setting of the table's runs, keyed by where it is passed today: "data" (DataArguments and
    examples/train_teacher.py's data flags: per-image augmentation, repeated augmentation), "mixing" (Mixup/CutMix:
    DeiTTrainingArguments and train_teacher.py's MixupArguments flags; label smoothing is LABEL_SMOOTHING, passed as
    DeiTTrainingArguments' label_smoothing_factor, train_teacher.py's --label_smoothing and timm's peer's criterion)
    and "model" (stochastic depth: DeiTConfig and timm's peer). The only function that says where they go."""
    # --device_augment (the GPU preset) has no colour jitter, which timm applies when RandAugment is off: that
    # preset turns it off for every run, so that its rows stay comparable with each other.
    jitter = {"color_jitter": 0.0} if getattr(args, "device_augment", False) else {}
    return {
        "data": dict(auto_augment="none", reprob=0.0, repeated_aug=1, **jitter),
        "mixing": dict(mixup=0.0, cutmix=0.0),
        "model": dict(drop_path_rate=args.drop_path_rate),
    }

"""Train a timm CNN teacher for distillation when none is at hand, and save it where `load_teacher` finds it.

    python examples/train_teacher.py --dataset_name ../shared/data/cifar10 --eval_split test --image_size 32 \
        --model_name resnet18 --epochs 30 --output_dir runs/teacher_cifar10
    accelerate launch --multi_gpu --num_processes 2 examples/train_teacher.py ...   # 2 DDP processes

The output folder is timm's own Hub format (`timm.models.save_for_hf`): `model.safetensors` + `config.json` with
`architecture`, `num_classes`, `label_names` and `pretrained_cfg` (input size, mean/std, crop). It loads with
`timm.create_model("local-dir:runs/teacher_cifar10", pretrained=True)`, with transformers'
`AutoModelForImageClassification` (TimmWrapper), and is what `--teacher_name_or_path` of examples/distill.py expects.
`eval_results.json` beside it records the final and per-epoch top-1.

The recipe: AdamW from timm's `create_optimizer_v2` (no weight decay on norms and biases, as timm and the DeiT paper),
transformers' cosine schedule after a linear warm-up, and hf_deit's data pipeline and augmentations; Mixup/CutMix
and label smoothing are applied in the training step (`hf_deit.distillation.mixing`: `build_mixup` + `mix_batch`). All are
switchable with flags, e.g. `--mixup 0 --cutmix 0 --repeated_aug 1 --auto_augment none` (Mixup/CutMix flags are
`hf_deit.distillation.mixing.MixupArguments`, the same as examples/distill.py's; label smoothing is `--label_smoothing`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from timm.models import save_for_hf
from timm.optim import create_optimizer_v2
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_scheduler

from hf_deit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataArguments,
    DeiTCollator,
    build_datasets,
    repeat_aug_sampler,
)
from hf_deit.distillation.mixing import MixupArguments, build_mixup, mix_batch

# What eval_results.json (and experiments/reproduce_table.py's page) says of the optimizer.
OPTIMIZER = "AdamW with no weight decay on norms and biases, from timm's create_optimizer_v2"


@dataclass
class TeacherArguments:
    model_name: str = field(default="resnet18", metadata={"help": "timm architecture of the teacher."})
    pretrained: bool = field(
        default=False, metadata={"help": "Start from timm's pretrained weights (needs them in the local HF cache)."}
    )
    output_dir: str = field(default="runs/teacher", metadata={"help": "Where model.safetensors + config.json go."})
    epochs: int = field(default=10, metadata={
        "help": "Epochs, the paper's: len(dataset) samples over all processes (with repeated_aug, a random "
        "1/repeated_aug of the images, each repeated_aug times; hf_deit.data.samples_per_epoch)."
    })
    batch_size: int = field(default=128, metadata={"help": "Images per process and step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate (cosine decay to 0)."})
    weight_decay: float = field(
        default=0.05, metadata={"help": "AdamW weight decay (not on norms and biases, as timm and the DeiT paper)."}
    )
    warmup_epochs: float = field(default=0.0, metadata={"help": "Linear warm-up length in epochs."})
    drop_path_rate: float | None = field(default=None, metadata={"help": "Stochastic depth (None: timm's default)."})
    label_smoothing: float = field(default=0.1, metadata={"help": "Label smoothing, folded into the Mixup targets."})
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers per process."})
    seed: int = field(default=0, metadata={"help": "Seed for weights, sampling and augmentation."})

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if timm.list_models(self.model_name) == []:
            raise ValueError(f"{self.model_name!r} is not a timm architecture; see timm.list_models('resnet*').")


def batch_mixing(mixup_args: MixupArguments, label_smoothing: float, num_classes: int) -> Callable:
    """The training step's `(pixel_values, labels) -> (pixel_values, soft targets)`: timm's Mixup/CutMix (when on)
    and label smoothing. The one place that reads those settings."""
    mixup = build_mixup(mixup_args, num_classes, label_smoothing)
    return functools.partial(mix_batch, mixup, num_classes=num_classes, label_smoothing=label_smoothing)


def build_loaders(teacher_args: TeacherArguments, data_args: DataArguments, accelerator: Accelerator):
    """(sampler, train loader, eval loader, number of eval images, label names). Both loaders stack integer labels:
    Mixup and smoothing happen in the training step."""
    if data_args.streaming:
        raise ValueError("train_teacher.py reads map-style data; drop --streaming (distill.py streams).")
    if data_args.uint8_batches or data_args.device_augment:
        raise ValueError("train_teacher.py trains on float batches; drop --uint8_batches / --device_augment "
                         "(distill.py takes them).")
    train_dataset, eval_dataset, label_names = build_datasets(data_args, seed=teacher_args.seed)
    collate = DeiTCollator()
    # timm's RepeatAugSampler is already rank-aware, so this loader is not passed through accelerator.prepare
    # (which would shard it a second time); batches are moved to the device by hand in the training step.
    sampler = repeat_aug_sampler(
        train_dataset, data_args.repeated_aug, num_replicas=accelerator.num_processes,
        rank=accelerator.process_index, seed=teacher_args.seed,
    )
    train_loader = DataLoader(train_dataset, batch_size=teacher_args.batch_size, sampler=sampler, drop_last=True,
                              num_workers=teacher_args.num_workers, collate_fn=collate)
    eval_loader = DataLoader(eval_dataset, batch_size=teacher_args.batch_size, num_workers=teacher_args.num_workers,
                             collate_fn=collate)
    if len(train_loader) == 0:
        raise ValueError(f"fewer training images per process than --batch_size {teacher_args.batch_size}")
    return sampler, train_loader, eval_loader, len(eval_dataset), list(label_names)


def build_model(teacher_args: TeacherArguments, num_classes: int, steps_per_epoch: int):
    """The timm model, its optimizer (no weight decay on norms and biases) and the warm-up + cosine schedule."""
    extra = {} if teacher_args.drop_path_rate is None else {"drop_path_rate": teacher_args.drop_path_rate}
    model = timm.create_model(teacher_args.model_name, pretrained=teacher_args.pretrained, num_classes=num_classes,
                              **extra)
    optimizer = create_optimizer_v2(model, "adamw", lr=teacher_args.learning_rate,
                                    weight_decay=teacher_args.weight_decay)
    scheduler = get_scheduler(
        "cosine", optimizer, num_warmup_steps=int(teacher_args.warmup_epochs * steps_per_epoch),
        num_training_steps=teacher_args.epochs * steps_per_epoch,
    )
    return model, optimizer, scheduler


def evaluate(model, loader, accelerator) -> float:
    """Top-1 accuracy (%) over the whole eval split (gathered across processes, duplicates from padding dropped)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc="eval", disable=not accelerator.is_main_process, leave=False):
            predictions = model(batch["pixel_values"]).argmax(-1)
            predictions, labels = accelerator.gather_for_metrics((predictions, batch["labels"]))
            correct += (predictions == labels).sum().item()
            total += labels.numel()
    model.train()
    return 100.0 * correct / max(total, 1)


def train_epoch(model, optimizer, scheduler, loader, mix: Callable, accelerator, progress) -> None:
    """One pass over `loader`: `mix` the batch (batch_mixing), cross-entropy on the soft targets, a step each."""
    for batch in loader:
        pixel_values, labels = batch["pixel_values"].to(accelerator.device), batch["labels"].to(accelerator.device)
        pixel_values, targets = mix(pixel_values, labels)
        loss = F.cross_entropy(model(pixel_values), targets)  # targets: (batch, classes) rows that sum to 1
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        progress.update()
        progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")


def save_teacher(model, teacher_args: TeacherArguments, data_args: DataArguments, label_names: list[str]) -> None:
    """timm's Hub format: pretrained_cfg records the preprocessing this teacher was trained with, so the
    distillation trainer can feed it its own normalisation and size."""
    save_for_hf(
        model,
        teacher_args.output_dir,
        # tag: these weights are ours, not the timm release the architecture's default config names.
        model_config={"label_names": label_names, "pretrained_cfg": {"tag": "hf_deit_teacher"}},
        data_config={
            "input_size": (3, data_args.image_size, data_args.image_size),
            "interpolation": "bicubic" if data_args.interpolation == "random" else data_args.interpolation,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "crop_pct": data_args.eval_crop_pct,
        },
        safe_serialization=True,
    )
    # timm >= 1.0.20 repeats num_classes inside model_args, and transformers' TimmWrapper, which passes num_labels
    # itself, then fails ("multiple values for keyword argument 'num_classes'"). timm reads the root num_classes.
    config_path = Path(teacher_args.output_dir) / "config.json"
    config = json.loads(config_path.read_text())
    config.get("model_args", {}).pop("num_classes", None)
    config_path.write_text(json.dumps(config, indent=2))


def main() -> None:
    parser = HfArgumentParser((TeacherArguments, DataArguments, MixupArguments))
    teacher_args, data_args, mixup_args = parser.parse_args_into_dataclasses()
    accelerator = Accelerator()
    set_seed(teacher_args.seed)
    sampler, train_loader, eval_loader, eval_count, label_names = build_loaders(teacher_args, data_args, accelerator)
    model, optimizer, scheduler = build_model(teacher_args, len(label_names), len(train_loader))
    mix = batch_mixing(mixup_args, teacher_args.label_smoothing, len(label_names))
    model, optimizer, scheduler, eval_loader = accelerator.prepare(model, optimizer, scheduler, eval_loader)

    total_steps = teacher_args.epochs * len(train_loader)
    progress = tqdm(total=total_steps, desc=f"train {teacher_args.model_name}", disable=not accelerator.is_main_process)
    curve = []
    for epoch in range(teacher_args.epochs):
        sampler.set_epoch(epoch)
        train_epoch(model, optimizer, scheduler, train_loader, mix, accelerator, progress)
        curve.append([epoch + 1, evaluate(model, eval_loader, accelerator)])
        accelerator.print(f"epoch {epoch}: eval top-1 {curve[-1][1]:.2f}% on {eval_count} images")
    progress.close()

    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        save_teacher(unwrapped, teacher_args, data_args, label_names)
        # The final accuracy, the curve and the recipe next to the weights, for summaries (examples/demo.py,
        # experiments/reproduce_table.py) and the record.
        results = {"eval_top1": curve[-1][1], "eval_samples": eval_count, "epochs": teacher_args.epochs,
                   "curve": curve, "params": sum(p.numel() for p in unwrapped.parameters()), "optimizer": OPTIMIZER}
        Path(teacher_args.output_dir, "eval_results.json").write_text(json.dumps(results, indent=2))
        print(f"eval top-1 {curve[-1][1]:.2f}%; teacher saved to {teacher_args.output_dir}")
    # The process group and DDP torn down now, not at interpreter exit (as DistillationTrainer.close: left to exit, a
    # gloo rank now and then aborted with "terminate called without an active exception" after its work was done).
    accelerator.wait_for_everyone()
    accelerator.end_training()
    model, optimizer, scheduler, eval_loader = accelerator.free_memory(model, optimizer, scheduler, eval_loader)


if __name__ == "__main__":
    main()

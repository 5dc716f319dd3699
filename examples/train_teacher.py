"""Train a timm CNN teacher for distillation when none is at hand, and save it where `load_teacher` finds it.

    python examples/train_teacher.py --dataset_name ../shared/data/cifar10 --eval_split test --image_size 32 \
        --model_name resnet18 --epochs 30 --output_dir runs/teacher_cifar10
    accelerate launch --multi_gpu --num_processes 2 examples/train_teacher.py ...   # 2 DDP processes

The output folder is timm's own Hub format (`timm.models.save_for_hf`): `model.safetensors` + `config.json` with
`architecture`, `num_classes`, `label_names` and `pretrained_cfg` (input size, mean/std, crop). It loads with
`timm.create_model("local-dir:runs/teacher_cifar10", pretrained=True)` and is what `--teacher_name_or_path` of
examples/distill.py expects. The data pipeline, augmentations and Mixup/CutMix are hf_deit's (the DeiT recipe,
all switchable with the data flags, e.g. `--mixup 0 --cutmix 0 --repeated_aug 1 --auto_augment none`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from timm.models import save_for_hf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from hf_deit.data import (
    IMAGENET_MEAN, IMAGENET_STD, DataArguments, DeiTCollator, MixupArguments, build_datasets, build_mixup, mix_batch,
    repeat_aug_sampler,
)


@dataclass
class TeacherArguments:
    model_name: str = field(default="resnet18", metadata={"help": "timm architecture of the teacher."})
    pretrained: bool = field(
        default=False, metadata={"help": "Start from timm's pretrained weights (needs them in the local HF cache)."}
    )
    output_dir: str = field(default="runs/teacher", metadata={"help": "Where model.safetensors + config.json go."})
    epochs: int = field(default=10, metadata={"help": "Passes over the training data (each repeated_aug x its size)."})
    batch_size: int = field(default=128, metadata={"help": "Images per process and step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate (cosine decay to 0)."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
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


def main() -> None:
    parser = HfArgumentParser((TeacherArguments, DataArguments, MixupArguments))
    teacher_args, data_args, mixup_args = parser.parse_args_into_dataclasses()
    accelerator = Accelerator()
    set_seed(teacher_args.seed)

    train_dataset, eval_dataset, label_names = build_datasets(data_args, seed=teacher_args.seed)
    if data_args.streaming:
        raise ValueError("train_teacher.py reads map-style data; drop --streaming (distill.py streams).")
    # timm's RepeatAugSampler is already rank-aware, so this loader is not passed through accelerator.prepare
    # (which would shard it a second time); batches are moved to the device by hand below.
    sampler = repeat_aug_sampler(
        train_dataset, data_args.repeated_aug, num_replicas=accelerator.num_processes,
        rank=accelerator.process_index, seed=teacher_args.seed,
    )
    train_loader = DataLoader(
        train_dataset, batch_size=teacher_args.batch_size, sampler=sampler, drop_last=True,
        num_workers=teacher_args.num_workers, collate_fn=DeiTCollator(),
    )
    eval_loader = DataLoader(
        eval_dataset, batch_size=teacher_args.batch_size, num_workers=teacher_args.num_workers,
        collate_fn=DeiTCollator(),
    )
    mixup = build_mixup(mixup_args, len(label_names), teacher_args.label_smoothing)
    if len(train_loader) == 0:
        raise ValueError(f"fewer training images per process than --batch_size {teacher_args.batch_size}")

    extra = {} if teacher_args.drop_path_rate is None else {"drop_path_rate": teacher_args.drop_path_rate}
    model = timm.create_model(
        teacher_args.model_name, pretrained=teacher_args.pretrained, num_classes=len(label_names), **extra
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=teacher_args.learning_rate, weight_decay=teacher_args.weight_decay
    )
    total_steps = teacher_args.epochs * len(train_loader)
    warmup_steps = int(teacher_args.warmup_epochs * len(train_loader))

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine to 0
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model, optimizer, scheduler, eval_loader = accelerator.prepare(model, optimizer, scheduler, eval_loader)

    progress = tqdm(total=total_steps, desc=f"train {teacher_args.model_name}", disable=not accelerator.is_main_process)
    for epoch in range(teacher_args.epochs):
        sampler.set_epoch(epoch)
        for batch in train_loader:
            pixel_values, labels = batch["pixel_values"].to(accelerator.device), batch["labels"].to(accelerator.device)
            # Mixup/CutMix + label smoothing -> soft targets (B, C), on the device, as DistillationTrainer does.
            pixel_values, labels = mix_batch(
                mixup, pixel_values, labels, len(label_names), teacher_args.label_smoothing
            )
            loss = F.cross_entropy(model(pixel_values), labels)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            progress.update()
            progress.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        accuracy = evaluate(model, eval_loader, accelerator)
        accelerator.print(f"epoch {epoch}: eval top-1 {accuracy:.2f}% on {len(eval_dataset)} images")
    progress.close()

    if accelerator.is_main_process:
        # timm's Hub format: pretrained_cfg records the preprocessing this teacher was trained with, so the
        # distillation trainer can feed it its own normalisation and size.
        save_for_hf(
            accelerator.unwrap_model(model),
            teacher_args.output_dir,
            # tag: these weights are ours, not the timm release the architecture's default config names.
            model_config={"label_names": list(label_names), "pretrained_cfg": {"tag": "hf_deit_teacher"}},
            data_config={
                "input_size": (3, data_args.image_size, data_args.image_size),
                "interpolation": "bicubic" if data_args.interpolation == "random" else data_args.interpolation,
                "mean": IMAGENET_MEAN,
                "std": IMAGENET_STD,
                "crop_pct": data_args.eval_crop_pct,
            },
            safe_serialization=True,
        )
        # The final accuracy next to the weights, for summaries (examples/demo.py) and the record.
        results = {"eval_top1": accuracy, "eval_samples": len(eval_dataset), "epochs": teacher_args.epochs}
        Path(teacher_args.output_dir, "eval_results.json").write_text(json.dumps(results, indent=2))
        print(f"eval top-1 {accuracy:.2f}%; teacher saved to {teacher_args.output_dir}")


if __name__ == "__main__":
    main()

"""Distil a DeiT student from a frozen teacher (Touvron et al. 2021) with hf_deit's DistillationTrainer.

    # CIFAR-10 at 32 px from a teacher made by examples/train_teacher.py (one process, CPU or GPU)
    python examples/distill.py --dataset_name ../shared/data/cifar10 --eval_split test --image_size 32 \
        --patch_size 4 --teacher_name_or_path runs/teacher_cifar10 --output_dir runs/deit_tiny_cifar10 \
        --num_train_epochs 100 --per_device_train_batch_size 128 --eval_strategy epoch --logging_steps 20
    # the same without running the teacher: one teacher pass stored first (dense label maps; docs/method.md)
    hf-deit cache-teacher runs/teacher_cifar10 ../shared/data/cifar10 runs/teacher_cifar10/cache-train.parquet
    python examples/distill.py <the same flags> --teacher_cache runs/teacher_cifar10/cache-train.parquet
    # the same with 2 DDP processes; on a machine without GPU add `--use_cpu --ddp_backend gloo` (without
    # --use_cpu transformers would not run DDP: each process would train its own copy, so the run is refused)
    accelerate launch --multi_gpu --num_processes 2 examples/distill.py <the same flags>
    # the paper's recipe on ImageNet-1k (DeiT-B distilled, RegNetY-16GF teacher), 8 GPUs, then publish: the
    # defaults are the official code's (global batch 1024, 300 epochs = 375,300 steps, bf16, EMA; `hf-deit recipe
    # --world_size 8` prints them first)
    accelerate launch --num_processes 8 examples/distill.py --dataset_name ./imagenet \
        --student_preset deit_base_distilled_patch16_224 --output_dir runs/deit_base_distilled \
        --push_to_hub --hub_model_id <you>/deit_base_distilled
    # then the paper's fine-tuning at 384 (30 epochs, batch 512, lr 5e-6; the teacher at 384)
    accelerate launch --num_processes 8 examples/distill.py --dataset_name ./imagenet --recipe finetune \
        --model_name_or_path runs/deit_base_distilled --image_size 384 --output_dir runs/deit_base_distilled_384

Flags come from three dataclasses, one owner per setting: `hf_deit.StudentArguments` (the student: preset or
checkpoint, architecture overrides, drop path), `hf_deit.data.DataArguments` (dataset, per-image augmentation,
evaluation crop, repeated augmentation) and `hf_deit.DeiTTrainingArguments` (transformers' TrainingArguments with
the paper's defaults + distillation type/alpha/tau, teacher, Mixup/CutMix, label smoothing, EMA). `--help` lists
them all.
The output directory holds model.safetensors, config.json (+ the model code), preprocessor_config.json and a
model card (README.md + training_curves.png); it loads with AutoModelForImageClassification and `pipeline`.
"""

from __future__ import annotations

import os

from transformers import HfArgumentParser, set_seed

from hf_deit import DeiTConfig, DeiTTrainingArguments, StudentArguments, build_student
from hf_deit.data import DataArguments, build_datasets
from hf_deit.distillation.recipe_cli import describe_run
from hf_deit.distillation.run_folder import claim_output_dir
from hf_deit.distillation.setup import check_launch, data_seed
from hf_deit.distillation.storage import check_room, parameter_bytes
from hf_deit.distillation.student import student_config
from hf_deit.distillation.teacher import check_teacher_source, load_teacher
from hf_deit.distillation.teacher_cache import StaleTeacherCacheError, check_cache_teacher, read_cache_info
from hf_deit.distillation.trainer import DistillationTrainer


def check_before_data(student_args: StudentArguments, data_args: DataArguments, args: DeiTTrainingArguments):
    """What can fail without the data is checked before it is read (an ImageNet scan takes minutes): the student's
    configuration at this image size; the output folder (writable, not in use by another run, not holding another
    run's outputs unless resuming or --overwrite_output_dir: it stays this run's, see
    hf_deit.distillation.run_folder); the teacher's name or path, or the teacher cache and the teacher named beside
    it; and, once the labels are known, room on disk for a checkpoint of the student and the teacher's (or the
    cache's) class count. The flags themselves were checked when parsed (each
    dataclass' __post_init__). Returns the `check_labels` callback for build_datasets."""
    check_launch(args)  # a launch the Trainer would see as one process: refused before the data, on every process
    if args.recipe == "finetune" and student_args.model_name_or_path is None:
        raise ValueError("--recipe finetune fine-tunes a checkpoint: give --model_name_or_path (e.g. a 224 model to "
                         "fine-tune at --image_size 384).")
    if student_args.model_name_or_path is None:
        student_config(student_args, data_args)
    claim_output_dir(args, args.resume_from_checkpoint)
    distils = args.distillation_type != "none"
    check_cache_classes = check_cache_before_data(args) if distils and args.teacher_cache else None
    teacher = args.teacher_name_or_path if distils and not args.teacher_cache else None
    if teacher:
        check_teacher_source(teacher)

    def check_labels(labels: list[str]) -> None:
        path = student_args.model_name_or_path
        if path is None:
            check_room(args, parameter_bytes(student_config(student_args, data_args, num_labels=len(labels))))
        elif os.path.isdir(path):  # a Hub id's size is checked by the trainer, which has the model
            check_room(args, parameter_bytes(DeiTConfig.from_pretrained(path, num_labels=len(labels))))
        if check_cache_classes is not None:
            check_cache_classes(labels)
        if teacher:
            # Loaded once here only to compare class counts (TeacherMismatchError); the trainer loads it for training.
            load_teacher(teacher, num_labels=len(labels), checkpoint_path=args.teacher_checkpoint_path)

    return check_labels


def check_cache_before_data(args: DeiTTrainingArguments):
    """--teacher_cache: the file and its format now, the teacher only if one is named beside it (no download of the
    default teacher), its class count once the labels are known. The trainer checks every row when it loads it."""
    info = read_cache_info(args.teacher_cache)
    if args.teacher_name_or_path:
        check_cache_teacher(info, args.teacher_cache, args.teacher_name_or_path, args.teacher_checkpoint_path)

    def check_cache_classes(labels: list[str]) -> None:
        if info.num_classes != len(labels):
            raise StaleTeacherCacheError(
                f"{args.teacher_cache} holds {info.num_classes} classes but the training data has {len(labels)}: it "
                "was made for another dataset."
            )

    return check_cache_classes


def main() -> None:
    parser = HfArgumentParser((StudentArguments, DataArguments, DeiTTrainingArguments))
    student_args, data_args, training_args = parser.parse_args_into_dataclasses()
    check_labels = check_before_data(student_args, data_args, training_args)

    # No rank split here: with dispatch_batches off, accelerate gives each process whole shards of a stream
    # (`IterableDataset.shard`), and the trainer's (repeated-augmentation) sampler splits map-style data.
    # One data seed (--data_seed, else --seed) for streams here and map-style data in the trainer.
    train_dataset, eval_dataset, labels = build_datasets(data_args, seed=data_seed(training_args), check_labels=check_labels)
    if training_args.should_log and hasattr(train_dataset, "__len__"):
        # What this run is, beside the paper's recipe (the same as `hf-deit recipe` prints before a run).
        print(describe_run(training_args, data_args, student_args, dataset_size=len(train_dataset)))
    # Seed before the student exists: the Trainer seeds only in its __init__, after the weights were drawn, so
    # the same command would start from different weights each run.
    set_seed(training_args.seed)
    model = build_student(student_args, data_args, labels)  # at the data's resolution and evaluation crop
    trainer = DistillationTrainer(
        model=model,
        args=training_args,
        data_args=data_args,  # collator (stacks), repeated augmentation; Mixup and smoothing are in training_args
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )

    # --resume_from_checkpoint True: the newest checkpoint-* in output_dir; or a checkpoint path (checked first).
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()  # weights + config + model code + image processor
    trainer.log_metrics("train", train_result.metrics)

    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_state()  # trainer_state.json: the whole log (final evaluation included) the card is drawn from
    if trainer.is_world_process_zero():
        print(f"{'head':<14}{'top-1':>8}{'top-5':>8}")
        for head in ("fused", "cls", "distillation"):
            if f"eval_{head}_top1" in metrics:
                print(f"{head:<14}{metrics[f'eval_{head}_top1']:>8.2f}{metrics[f'eval_{head}_top5']:>8.2f}")

    trainer.create_model_card()  # README.md + training_curves.png in output_dir
    if training_args.push_to_hub:
        trainer.push_to_hub()
    trainer.close()  # the process group and DDP torn down now, not at interpreter exit (DistillationTrainer.close)


if __name__ == "__main__":
    main()

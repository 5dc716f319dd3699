"""The distillation step with a cached teacher vs the live teacher: images/s, interleaved in one process.

    python benchmarks/bench_teacher_cache.py                                   # ResNet-50 teacher, DeiT-Ti, 224 px
    python benchmarks/bench_teacher_cache.py --threads 2 --clock wall          # wall clock on a quiet machine
    python benchmarks/bench_teacher_cache.py --teacher resnet18 --repeats 2    # a quick look

Figures and the commands that produced them: docs/benchmarks.md, "## Teacher cache".

Both arms are `DistillationTrainer.training_step` (student forward, teacher logits, hard-distillation loss,
backward) + the AdamW step, on the same pre-collated batches of real ImageNet photos (../shared/data/imagenet-sample,
the DeiT recipe: RandAugment, Mixup/CutMix, erasing), with the same student initialisation:
  * live:   the teacher (timm, random weights: speed does not depend on them) runs on every batch;
  * cached: the teacher's dense top-k label maps were stored once by `hf_deit.distillation.teacher_cache.cache_teacher`
            (timed separately: the one-off pass), and each step pools them over the batch's crop boxes.
The arms alternate per repeat (live, cached, live, ...), so background load hits both alike; the ratio is
median(live time per image) / median(cached time per image). Data loading is excluded from both (the batches are
collated before timing), so the ratio is the step's, not the whole run's.
`--clock cpu` (default, with --threads 1) times this process's CPU time, which other jobs on a shared machine barely
move; `--clock wall` times wall clock.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data" / "imagenet-sample"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="resnet50", help="timm CNN teacher architecture (random weights)")
    parser.add_argument("--student", default="deit_tiny_distilled_patch16_224", help="hf_deit student preset")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="training steps per arm per repeat")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--images", type=int, default=64, help="images of imagenet-sample to use (and cache)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--data", default=str(SHARED), help="an ImageNet-layout folder with a val/ split")
    return parser.parse_args()


def build_trainer(args, teacher, data, data_args, output_dir):
    from hf_deit import DeiTTrainingArguments, DistillationTrainer
    from hf_deit.distillation.student import prepare_student

    torch.manual_seed(0)
    student = prepare_student(args.student, num_labels=1000, drop_path_rate=0.1)
    training_args = DeiTTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=args.batch_size, distillation_type="hard",
        use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, max_steps=1000,
    )
    trainer = DistillationTrainer(model=student, args=training_args, teacher=teacher, data_args=data_args,
                                  train_dataset=data)
    trainer.create_optimizer_and_scheduler(num_training_steps=1000)
    trainer.current_gradient_accumulation_steps = 1  # set by train(); training_step reads it
    return trainer


def timed_steps(trainer, batches, clock) -> float:
    """Seconds for one training step + optimizer step over each batch."""
    model = trainer.model
    model.train()
    start = clock()
    for batch in batches:
        trainer.training_step(model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    return clock() - start


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from hf_deit.data import DataArguments, build_datasets, load_image_dataset
    from hf_deit.distillation.teacher import load_teacher
    from hf_deit.distillation.teacher_cache import CachedTeacher, cache_teacher

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    data_args = DataArguments(dataset_name=args.data, train_split="validation", max_train_samples=args.images,
                              image_size=224)
    train = build_datasets(data_args, do_eval=False).train_dataset
    live = load_teacher(args.teacher, num_labels=1000, pretrained=False)

    with tempfile.TemporaryDirectory() as tmp:
        raw = load_image_dataset(args.data, "validation").select(range(args.images))
        start = time.perf_counter()
        info = cache_teacher(live, raw, os.path.join(tmp, "cache.parquet"), teacher_name=args.teacher, top_k=5,
                             input_size=224, batch_size=args.batch_size)
        cache_seconds = time.perf_counter() - start
        cached = CachedTeacher.load(os.path.join(tmp, "cache.parquet"), num_labels=1000, dataset=train)
        arms = {"live": build_trainer(args, live, train, data_args, tmp),
                "cached": build_trainer(args, cached, train, data_args, tmp)}
        loader = arms["live"].get_train_dataloader()
        batches = [arms["live"]._prepare_inputs(batch) for _, batch in zip(range(args.steps), loader)]
        for trainer in arms.values():  # warm-up: first-call allocations, kernel selection
            timed_steps(trainer, batches[:1], clock)
        per_image = {name: [] for name in arms}
        for repeat in range(args.repeats):
            for name, trainer in arms.items():
                seconds = timed_steps(trainer, batches, clock)
                per_image[name].append(seconds / (len(batches) * args.batch_size))
            print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(
                f"{name} {1 / values[-1]:.2f} img/s" for name, values in per_image.items()))

    live_s, cached_s = statistics.median(per_image["live"]), statistics.median(per_image["cached"])
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.clock} clock, load average {os.getloadavg()[0]:.1f}")
    print(f"teacher {args.teacher} ({info.map_size[0]}x{info.map_size[1]} label maps, top-{info.top_k}), student "
          f"{args.student}, batch {args.batch_size}, 224 px, {args.repeats} repeats x {args.steps} steps")
    print(f"| arm | images/s (median) |\n|---|---:|\n| live teacher | {1 / live_s:.2f} |\n| cached teacher | {1 / cached_s:.2f} |")
    print(f"speed-up of the step (cached / live images/s): {live_s / cached_s:.2f}x")
    print(f"one-off cache pass: {args.images} images in {cache_seconds:.1f} s wall "
          f"({args.images / cache_seconds:.1f} img/s, decode + teacher + parquet)")


if __name__ == "__main__":
    main()

"""Decoded + augmented training images per second per DataLoader worker: hf_deit.data vs a plain baseline.

    .venv/bin/python benchmarks/bench_data.py                       # ../shared/data/imagenet-sample, 1 and 2 workers
    .venv/bin/python benchmarks/bench_data.py --num-images 200 --workers 1 --repeats 3   # a quick look
    .venv/bin/python benchmarks/bench_data.py --num-images 500 --repeats 5 --variants baseline map uint8  # uint8 vs float
    .venv/bin/python benchmarks/bench_data.py --num-images 500 --repeats 5 --variants baseline map device  # --device_augment

Baseline: torchvision `ImageFolder` + timm `create_transform` with the same DeiT training recipe (RRC bicubic, flip,
RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 pixel) and torch's default collate.
Ours: `build_datasets` on the same folder and images (map-style: datasets Arrow table of paths, `Image(decode=False)`,
our robust decoder, the same timm transform) and `DeiTCollator` without mixing (mixing is not part of the baseline),
plus the streaming path from `hf-deit shard` parquet shards (one shard per worker), and the map-style path with
`uint8_batches` (workers return uint8 images; normalisation and erasing move into the training step, whose CPU
cost per image is printed separately), and the map-style path with `device_augment` (workers only read the files;
decode + augmentation run where the training step would run them: here in the main process, on CPU tensors, timed
as part of the pass and printed per image as "step CPU").
Variants run interleaved in rounds (one full pass of each per round, `--repeats` rounds). Ratios ours / baseline
are taken within each round and summarised by their median and range: this machine's speed drifts by 10-20% over
minutes (other tenants), and pairing passes that ran seconds apart cancels most of that drift, where a ratio of
two medians would not. Printed per variant: whole-pass rate, steady rate after the first batch (each pass's
start-up excluded), time to the first batch, and the workers' CPU time per image (from the OS's accounting of
the finished worker processes: what a worker spends per image, less sensitive to waiting than wall time).
The one-time work (datasets' Arrow table, the image validation scan, sharding) is done before timing.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402
from timm.data import create_transform  # noqa: E402
from torchvision.datasets import ImageFolder  # noqa: E402

from hf_deit.data import (  # noqa: E402
    DataArguments,
    DeiTCollator,
    DeviceFinish,
    build_datasets,
    build_device_augment,
    fix_timm_posterize,
    shard_dataset,
)

SHORT_NAMES = {"baseline": "baseline (ImageFolder)", "map": "ours, map-style folder",
               "stream": "ours, streaming parquet", "uint8": "ours, map-style, uint8",
               "device": "ours, map-style, device aug"}
SHORT_NAMES_BY_LABEL = {label: short for short, label in SHORT_NAMES.items()}
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"


def baseline_dataset(root: Path, num_images: int, image_size: int) -> torch.utils.data.Dataset:
    transform = create_transform(
        image_size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic",
        color_jitter=0.3, re_prob=0.25, re_mode="pixel",
    )
    fix_timm_posterize(transform)  # else Pillow 13 raises now and then on timm's 0-bit posterize (see transforms.py)
    folder = ImageFolder(str(root / "val"), transform=transform)
    return torch.utils.data.Subset(folder, range(num_images))  # same first N files as max_train_samples


def ours_args(source: Path, num_images: int, image_size: int, streaming: bool, cache_dir: str,
              uint8_batches: bool = False, device_augment: bool = False) -> DataArguments:
    return DataArguments(
        dataset_name=str(source), train_split="validation", streaming=streaming, max_train_samples=num_images,
        image_size=image_size, repeated_aug=1, shuffle_buffer_size=64, data_cache_dir=cache_dir,
        uint8_batches=uint8_batches, device_augment=device_augment,
    )


def device_variant(args: argparse.Namespace, cache_dir: str) -> tuple:
    """(dataset, collator, step) for --device_augment: the step decodes and augments each batch on CPU tensors."""
    data_args = ours_args(args.data, args.num_images, args.image_size, False, cache_dir, device_augment=True)
    return build_datasets(data_args, do_eval=False).train_dataset, DeiTCollator(), build_device_augment(data_args)


def finish_ms_per_image(image_size: int, batch_size: int, rounds: int = 20) -> float:
    """CPU ms per image of what uint8 batches move out of the workers into the step (normalise + erase 0.25)."""
    finish = DeviceFinish(reprob=0.25)
    batch = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8)
    finish(batch)
    start = time.process_time()
    for _ in range(rounds):
        finish(batch)
    return 1000 * (time.process_time() - start) / (rounds * batch_size)


@dataclass
class Pass:
    whole: float  # images/s over the whole pass
    steady: float  # images/s after the first batch
    first_batch: float  # seconds from the start to the first batch
    worker_ms: float  # DataLoader workers' CPU milliseconds per image
    step_ms: float  # main-process CPU milliseconds per image spent in `step` (--device_augment's decode + augment)


def one_pass(dataset, workers: int, batch_size: int, collate_fn=None, step=None) -> Pass:
    """One full pass over `dataset` through a fresh DataLoader (fresh workers, as in every training epoch).

    The whole-pass rate counts each pass's start-up (workers, opening files or shards): on a few hundred images
    that is a large share, while a training epoch over ImageNet pays it once per 1.28 M images. The rate after
    the first batch is the steady state that decides an epoch's length. `step(batch)` (--device_augment's
    augmentation) runs on each batch inside the timed loop, as the training step would run it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    loader = iter(torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                              collate_fn=collate_fn))
    start, count, first, step_cpu = time.perf_counter(), 0, None, 0.0
    for batch in loader:
        if step is not None:
            step_start = time.process_time()
            batch = step(batch)
            step_cpu += time.process_time() - step_start
        size = len(batch["pixel_values"] if isinstance(batch, dict) else batch[0])
        if first is None:
            first, first_size = time.perf_counter(), size
        count += size
    end = time.perf_counter()
    del loader  # the workers have been joined at the end of the pass, so their CPU time is now accounted
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    steady = (count - first_size) / (end - first) if count > first_size else float("nan")
    worker_ms = 1000 * cpu / count if workers else float("nan")
    return Pass(count / (end - start), steady, first - start, worker_ms, 1000 * step_cpu / count)


def _ratio_summary(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):4.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageNet-layout folder with val/<wnid>/")
    parser.add_argument("--num-images", type=int, default=1000, help="first N images (imagenet-sample has 1,000)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7, help="rounds of interleaved passes")
    parser.add_argument("--variants", nargs="+", choices=list(SHORT_NAMES), default=list(SHORT_NAMES),
                        help="loaders to run (the baseline always runs: it is the reference of the ratios)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    datasets.disable_progress_bars()
    # datasets sleeps 5 s when a parquet stream ends (a guard for pyarrow issue 45214 at interpreter exit): once
    # per epoch in training, but it would dominate these short passes.
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        subset = Path(tmp) / "subset" / "validation"  # the same N files, for sharding
        for path, _ in ImageFolder(str(args.data / "val")).samples[: args.num_images]:
            target = subset / Path(path).parent.name / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
        shard_dataset(subset.parent, shards, num_shards=max(args.workers), class_index_file=args.data / "classes.tsv")
        variants = {
            "baseline (ImageFolder)": (baseline_dataset(args.data, args.num_images, args.image_size), None, None),
            "ours, map-style folder": (build_datasets(ours_args(args.data, args.num_images, args.image_size, False, tmp),
                                                      do_eval=False).train_dataset, DeiTCollator(), None),
            "ours, streaming parquet": (build_datasets(ours_args(shards, args.num_images, args.image_size, True, tmp),
                                                       do_eval=False).train_dataset, DeiTCollator(), None),
            # --uint8_batches: workers stop before ToTensor/Normalize/erasing; the step finishes (time printed below)
            "ours, map-style, uint8": (build_datasets(ours_args(args.data, args.num_images, args.image_size, False, tmp,
                                                                uint8_batches=True), do_eval=False).train_dataset,
                                       DeiTCollator(), None),
            # --device_augment: workers read the files; decode + augmentation run in the step (here: main process, CPU)
            "ours, map-style, device aug": device_variant(args, tmp),
        }
        print(f"{args.num_images} images from {args.data}, {args.image_size}px DeiT train transform, "
              f"batch {args.batch_size}, {args.repeats} rounds of interleaved passes, torch {torch.__version__}, "
              f"{os.cpu_count()} CPUs. Ratios: ours / baseline within each round, median (min-max) over rounds.")
        variants = {name: value for name, value in variants.items()
                    if name == "baseline (ImageFolder)" or SHORT_NAMES_BY_LABEL[name] in args.variants}
        print(f"uint8 batches: normalise + erase (0.25) in the main process, CPU, 1 thread: "
              f"{finish_ms_per_image(args.image_size, args.batch_size):.3f} ms/img (on a GPU: in the step, on the GPU)")
        baseline = "baseline (ImageFolder)"
        for workers in args.workers:
            passes: dict[str, list[Pass]] = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, (dataset, collate_fn, step) in variants.items():
                    passes[name].append(one_pass(dataset, workers, args.batch_size, collate_fn, step))
            for name, runs in passes.items():
                paired = list(zip(runs, passes[baseline]))
                whole = statistics.median(run.whole for run in runs)
                line = (f"workers={workers}  {name:28s} whole pass {whole:6.1f} img/s ({whole / max(workers, 1):5.1f}"
                        f"/worker), 1st batch {statistics.median(run.first_batch for run in runs):4.2f} s, worker CPU "
                        f"{statistics.median(run.worker_ms for run in runs):5.2f} ms/img")
                if variants[name][2] is not None:
                    line += f", step CPU {statistics.median(run.step_ms for run in runs):5.2f} ms/img"
                if name != baseline:
                    line += (f" | ratio whole {_ratio_summary([o.whole / b.whole for o, b in paired])}, after 1st batch "
                             f"{_ratio_summary([o.steady / b.steady for o, b in paired])}, per CPU-second (workers + "
                             f"step) {_ratio_summary([b.worker_ms / (o.worker_ms + o.step_ms) for o, b in paired])}")
                print(line)
                print(f"    whole-pass runs (img/s): {', '.join(f'{run.whole:.0f}' for run in runs)}")

if __name__ == "__main__":
    main()

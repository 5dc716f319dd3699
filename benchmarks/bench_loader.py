"""Does the data loader or the training step limit training? Loader images/s (float, uint8 or device-augmented
batches) vs step images/s.

    python benchmarks/bench_loader.py --workers 2                          # ../shared/data/imagenet-sample, CPU
    python benchmarks/bench_loader.py --synthetic 512 --workers 4 8 15 --step-images-per-s 1800   # a GPU machine
    python benchmarks/bench_loader.py --dry-run                            # 48 tiny synthetic JPEGs (CI)

The loader is hf_deit's map-style pipeline (`build_datasets` on an ImageNet-layout folder: decode + the DeiT
training transform in DataLoader workers, `DeiTCollator`) with its default float batches (PIL), with
`--uint8_batches` (workers stop before normalisation and erasing; `DeviceFinish` does them in the step, timed
here too), and with `--device_augment` (workers only read the files; `DeviceAugment` decodes (nvjpeg on CUDA) and
augments each batch on the device, timed as the finish). On CUDA each batch is copied to the device from pinned
memory, as the Trainer's DataLoader does.
Rate: images/s after the first batch (steady state). With --step-images-per-s (from bench_distill.py, same batch
size), each loader rate is compared with the step's: the slower one limits, and the workers needed for the step's
rate are estimated from the per-worker rate. Without a folder (--synthetic N), N photo-like 500x375 JPEGs are
written to a temporary folder (the size of a typical ImageNet photo).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"


def write_synthetic_folder(root: Path, count: int, size: tuple[int, int] = (500, 375), classes: int = 4) -> Path:
    """`count` JPEGs under root/val/class_k/: smooth gradients plus noise, so JPEG decoding costs what a photo does."""
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size[0])[None, :, None] + np.linspace(0, 55, size[1])[:, None, None]
    for index in range(count):
        folder = root / "val" / f"class_{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        noise = rng.normal(0, 20, (size[1] // 8, size[0] // 8, 3)).repeat(8, 0).repeat(8, 1)
        array = np.clip(ramp + noise + rng.integers(0, 60, 3), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{index:05d}.jpg", quality=90)
    return root


def loader_rate(dataset, workers: int, batch_size: int, device: torch.device, finish) -> tuple[float, float]:
    """(images/s after the first batch, ms per image of on-device finishing) for one pass over `dataset`."""
    from hf_deit.data import DeiTCollator

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=DeiTCollator(), pin_memory=device.type == "cuda")
    count, first, finish_seconds = 0, None, 0.0
    for batch in loader:
        encoded = "pixel_values" not in batch  # --device_augment: decoded and augmented by `finish`
        pixels = batch["labels" if encoded else "pixel_values"].to(device, non_blocking=True)
        if first is None:
            first, first_size = time.perf_counter(), len(pixels)
            continue
        count += len(pixels)
        if pixels.dtype == torch.uint8 or encoded:
            start = time.perf_counter()
            finish(pixels) if not encoded else finish({**batch, "labels": pixels})
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            finish_seconds += time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - first
    return count / elapsed, 1000 * finish_seconds / max(count, 1)


# Data paths: the flags of DataArguments that choose where decoding and augmentation happen.
PATHS = {"float32": {}, "uint8": {"uint8_batches": True}, "device": {"device_augment": True}}


def measure(args, folder: Path, device: torch.device) -> list[dict]:
    import datasets

    from hf_deit.data import DataArguments, build_datasets, build_device_augment, build_device_finish

    datasets.disable_progress_bars()
    rows = []
    for path in args.paths:
        flags = PATHS[path]
        if not set(flags) <= set(DataArguments.__dataclass_fields__):
            print(f"# {path}: skipped, this hf_deit's DataArguments has no {', '.join(flags)} flag yet")
            continue
        data_args = DataArguments(dataset_name=str(folder), train_split="validation", image_size=args.image_size,
                                  repeated_aug=1, data_cache_dir=args.cache_dir, **flags)
        dataset = build_datasets(data_args, do_eval=False).train_dataset
        finish = build_device_augment(data_args) if path == "device" else build_device_finish(data_args)
        for workers in args.workers:
            runs = [loader_rate(dataset, workers, args.batch_size, device, finish) for _ in range(args.repeats)]
            rate = statistics.median(r[0] for r in runs)
            rows.append({"batches": path, "workers": workers, "loader_images_per_s": rate,
                         "per_worker": rate / max(workers, 1),
                         "finish_ms_per_image": statistics.median(r[1] for r in runs)})
    return rows


def verdict(rows: list[dict], step_rate: float | None) -> str:
    lines = ["| batches | workers | loader images/s | per worker | device finish ms/img | step images/s | limit "
             "| workers for the step |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        step = f"{step_rate:.1f}" if step_rate else "n/a"
        limit = ("loader" if r["loader_images_per_s"] < step_rate else "step") if step_rate else "n/a"
        needed = f"{math.ceil(step_rate / r['per_worker'])}" if step_rate else "n/a"
        if r["batches"] == "device":  # the workers only read files; decode + augmentation share the step's device
            needed = "- (the step's device time grows by the finish)"
        lines.append(f"| {r['batches']} | {r['workers']} | {r['loader_images_per_s']:.1f} | {r['per_worker']:.1f} | "
                     f"{r['finish_ms_per_image']:.3f} | {step} | {limit} | {needed} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="ImageNet-layout folder with val/<class>/ images")
    parser.add_argument("--synthetic", type=int, default=None, help="write this many synthetic JPEGs instead")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=3, help="passes per configuration (median)")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS),
                        help="data paths to time; one whose flag DataArguments lacks is skipped with a note")
    parser.add_argument("--step-images-per-s", type=float, default=None, help="the training step's rate to compare")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None, help="append the rows as JSON lines to this file")
    parser.add_argument("--dry-run", action="store_true", help="48 tiny synthetic images, 1 worker, 1 pass")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.synthetic, args.image_size, args.batch_size, args.workers, args.repeats = 48, 32, 8, [1], 1
    torch.set_num_threads(1)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        args.cache_dir = tmp
        if args.synthetic or args.data is None and not DEFAULT_DATA.is_dir():
            size = (64, 48) if args.dry_run else (500, 375)
            folder = write_synthetic_folder(Path(tmp) / "images", args.synthetic or 512, size)
        else:
            folder = args.data or DEFAULT_DATA
        rows = measure(args, folder, device)
    print(f"# loader: {folder if not args.synthetic else f'{args.synthetic} synthetic JPEGs'}, {args.image_size} px, "
          f"batch {args.batch_size}, {device}, {os.cpu_count()} CPUs\n{verdict(rows, args.step_images_per_s)}", flush=True)
    if args.json:
        with args.json.open("a") as f:
            for row in rows:
                f.write(json.dumps({"bench": "loader", "step_images_per_s": args.step_images_per_s, **row}) + "\n")
    return rows


if __name__ == "__main__":
    main()

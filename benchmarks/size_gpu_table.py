"""How long the paper's table at `--gpu_h200` (experiments/configurations.py) takes on one H200, estimated from
figures that can be checked: FLOPs counted per image, images per run, a stated GPU throughput, and the data loader's
per-core rate measured on this machine.

    python benchmarks/size_gpu_table.py                         # counts FLOPs, measures the loader on ../shared/data
    python benchmarks/size_gpu_table.py --loader-per-worker 680 --tflops 30 --host-ms-per-step 10

Per run: time = epochs x max(GPU compute, data loading, host work per step) + evaluation, where
  GPU compute  = training images x (student forward+backward + teacher forward FLOPs) / --tflops
  data loading = training images / (--workers x per-worker images/s), the loader of hf_deit's pipeline at 32 px
  host work    = optimizer steps x --host-ms-per-step (Python + kernel launches per step; benchmarks/bench_overhead.py)
and the three overlap (loader workers and the GPU run beside the training process), so the slowest one sets the pace.
The table runs in fp32 (as on CPU): an H200's fp32 peak is 67 TFLOP/s without tensor cores, so --tflops defaults
to 30, under half of it for these small matrices (width 192-288, 66 tokens per image).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.configurations import CONFIGURATIONS, TableArguments  # noqa: E402

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def training_flops(model: torch.nn.Module, side: int, forward_only: bool = False) -> float:
    """FLOPs per image of one training step (forward + backward), or of a forward pass, counted by torch."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 3, side, side)  # 2 images: BatchNorm in training mode needs more than one
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        with torch.set_grad_enabled(not forward_only):
            out = model(x) if not hasattr(model, "deit") else model(pixel_values=x).logits
            out = out if isinstance(out, torch.Tensor) else out.logits
            if not forward_only:
                out.sum().backward()
    return counter.get_total_flops() / 2


def flops_per_image(args: TableArguments) -> dict[str, float]:
    """Training FLOPs per image: each DeiT kind, the transformer teacher, the CNN teacher; forwards of the teachers."""
    import timm

    from experiments.runner import student_config
    from hf_deit import DeiTForImageClassification

    labels = [str(i) for i in range(10)]
    side = args.image_size
    models = {kind: DeiTForImageClassification(student_config(args, kind, labels)) for kind in ("plain", "distilled")}
    vit = DeiTForImageClassification(student_config(args, "plain", labels, teacher=True))
    cnn = timm.create_model(args.teacher_cnn, num_classes=10)
    return {"plain": training_flops(models["plain"], side), "distilled": training_flops(models["distilled"], side),
            "teacher_vit": training_flops(vit, side), "teacher_cnn": training_flops(cnn, side),
            "teacher_vit forward": training_flops(vit.eval(), side, True),
            "teacher_cnn forward": training_flops(cnn.eval(), side, True)}


def measure_loader(images: int = 600) -> float:
    """Training images/s of one loader worker (CPU time of this process): hf_deit's pipeline on CIFAR-10 at 32 px."""
    import datasets

    from experiments.runner import balanced_subset, data_arguments
    from hf_deit.data import build_datasets

    datasets.disable_progress_bars()
    torch.set_num_threads(1)
    table = TableArguments(dataset_name=str(SHARED_CIFAR), train_per_class=images // 10, eval_per_class=1, seeds=[0],
                           output_dir="/tmp/size_gpu_table")
    train = build_datasets(data_arguments(table, balanced_subset(table)), seed=0).train_dataset
    for index in range(20):  # warm-up
        train[index]
    start = time.process_time()
    for index in range(len(train)):
        train[index]
    return len(train) / (time.process_time() - start)


def estimate(args: TableArguments, flops: dict[str, float], options) -> list[tuple[str, int, float]]:
    """(configuration, runs, seconds for all its runs)."""
    images, steps = 10 * args.train_per_class, -(-10 * args.train_per_class // args.batch_size)
    eval_images = 10 * args.eval_per_class
    rows = []
    for name in args.configurations:
        configuration = CONFIGURATIONS[name]
        runs = 1 if configuration.role == "teacher" else len(args.seeds)
        epochs = args.teacher_epochs if name == "teacher_cnn" else args.epochs
        per_image = flops["teacher_cnn"] if name == "teacher_cnn" else flops["teacher_vit"] \
            if name == "teacher_vit" else flops[configuration.kind]
        if configuration.teacher is not None and name != "hard_token_cached":
            per_image += flops[f"{configuration.teacher} forward"]
        compute = images * per_image / (options.tflops * 1e12)
        loading = images / (options.workers * options.loader_per_worker)
        host = steps * options.host_ms_per_step / 1000
        evaluation = eval_images / (options.workers * options.loader_per_worker)  # the eval transform is no dearer
        seconds = runs * epochs * (max(compute, loading, host) + evaluation)
        if name == "hard_token_cached":  # one teacher pass over the training images to make the cache
            seconds += images / (options.workers * options.loader_per_worker)
        rows.append((name, runs, seconds))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tflops", type=float, default=30.0, help="sustained fp32 TFLOP/s of these small models")
    parser.add_argument("--workers", type=int, default=15, help="DataLoader workers (--gpu_h200: cores - 1)")
    parser.add_argument("--loader-per-worker", type=float, default=None, help="images/s per worker (default: measure)")
    parser.add_argument("--host-ms-per-step", type=float, default=10.0, help="host time per optimizer step, ms")
    parser.add_argument("--startup-s", type=float, default=90.0, help="imports, dataset building, report")
    options = parser.parse_args(argv)
    args = TableArguments(gpu_h200=True)
    if options.loader_per_worker is None:
        options.loader_per_worker = measure_loader()
    flops = flops_per_image(args)
    print(f"# --gpu_h200: {10 * args.train_per_class} training images, batch {args.batch_size}, seeds {args.seeds}; "
          f"{options.tflops:g} TFLOP/s, {options.workers} workers x {options.loader_per_worker:.0f} images/s, "
          f"{options.host_ms_per_step:g} ms host per step, {options.startup_s:g} s start-up")
    print("# training GFLOP per image: " + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in flops.items()))
    rows = estimate(args, flops, options)
    print("| configuration | runs | estimated s |\n|---|---:|---:|")
    for name, runs, seconds in rows:
        print(f"| {name} | {runs} | {seconds:.0f} |")
    total = options.startup_s + sum(seconds for *_, seconds in rows)
    print(f"| total, with start-up | | {total:.0f} ({total / 60:.1f} min) |")


if __name__ == "__main__":
    main()

"""Every GPU figure of docs/benchmarks.md in one process, cheapest and most important first; run by gpu_check.sh.

    bash benchmarks/gpu_check.sh                 # on a fresh GPU machine: installs what is missing, then this
    python benchmarks/gpu_check.py --dry-run     # tiny models on CPU in seconds (tests/test_benchmarks.py)

Stages (each appends its table to the figures file as soon as it finishes, so a run cut short keeps what it has):
  1. distillation step, DeiT-S distilled student + RegNetY-16GF teacher (random weights), 224 px, batch 128,
     bf16 autocast, eager: hf_deit (with its fast paths) vs timm's TokenDistillationTask
  2. the DeiT-B distilled student alone, bf16 eager, batch 256: MFU
  3. loader images/s (float vs uint8 batches, 4-15 workers, synthetic 500x375 JPEGs) vs stage 1's step images/s
  4. stage 1 compiled (student and teacher torch.compile'd on both sides)
  5. stage 2 compiled, hf_deit only (the MFU target)
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_distill  # noqa: E402
import bench_loader  # noqa: E402

PAIR = ["--student", "deit_small_distilled_patch16_224", "--teacher", "regnety_160", "--batch-size", "128"]
BASE = ["--student", "deit_base_distilled_patch16_224", "--teacher", "none", "--batch-size", "256"]


def stages(dry_run: bool, workers: list[int]) -> list[tuple[str, object, list[str]]]:
    if dry_run:  # the same code paths with tiny models, eager only (compiling on a 2-core CPU takes minutes)
        return [
            ("1. distillation step (dry run)", bench_distill.main, ["--dry-run", "--fast-paths"]),
            ("2. student alone (dry run)", bench_distill.main, ["--dry-run", "--teacher", "none", "--only", "hf_deit"]),
            ("3. loader vs step (dry run)", bench_loader.main, ["--dry-run"]),
        ]
    common = ["--dtype", "bf16", "--fast-paths", "--repeats", "5", "--steps", "5"]
    return [
        ("1. distillation step, bf16 eager", bench_distill.main, PAIR + common + ["--compile", "none"]),
        ("2. DeiT-B student, bf16 eager (MFU)", bench_distill.main, BASE + common + ["--compile", "none"]),
        ("3. loader vs step", bench_loader.main,
         ["--synthetic", "1024", "--workers", *map(str, workers), "--repeats", "1", "--batch-size", "128"]),
        ("4. distillation step, bf16 compiled", bench_distill.main, PAIR + common + ["--compile", "both"]),
        ("5. DeiT-B student, bf16 compiled (MFU)", bench_distill.main,
         BASE + common + ["--compile", "both", "--only", "hf_deit"]),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_figures.md"), help="figures file (markdown; + .jsonl)")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 2
    workers = sorted({min(4, cpus - 1), max(1, cpus // 2), max(1, cpus - 1)})
    jsonl = args.out.with_suffix(".jsonl")
    with args.out.open("a") as f:
        now = datetime.datetime.now(datetime.timezone.utc)
        f.write(f"\n# gpu_check {'(dry run) ' if args.dry_run else ''}{now:%Y-%m-%d %H:%M} UTC\n")
    step_rate = None
    for title, run, stage_argv in stages(args.dry_run, workers):
        if run is bench_loader.main and step_rate:
            stage_argv = [*stage_argv, "--step-images-per-s", f"{step_rate:.1f}"]
        start, buffer = time.perf_counter(), io.StringIO()
        with redirect_stdout(buffer):
            rows = run([*stage_argv, "--json", str(jsonl)])
        if step_rate is None and run is bench_distill.main:
            step_rate = rows[0]["images_per_s"]  # hf_deit's distillation step: what the loader must keep up with
        report = f"\n## {title} ({time.perf_counter() - start:.0f} s)\n\n```\n{buffer.getvalue().strip()}\n```\n"
        print(report, flush=True)
        with args.out.open("a") as f:
            f.write(report)
    print(f"figures written to {args.out} and {jsonl}")


if __name__ == "__main__":
    main()

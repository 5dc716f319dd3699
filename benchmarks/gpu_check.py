"""Every GPU figure of docs/benchmarks.md, stage by stage, most valuable first; run by gpu_check.sh.

    bash benchmarks/gpu_check.sh                          # on a GPU machine: installs what is missing, then this
    python benchmarks/gpu_check.py --stages syncs loader  # chosen stages only
    python benchmarks/gpu_check.py --dry-run --stages all # every stage on CPU, tiny models (tests/test_benchmarks.py)

Each stage is one benchmark script in its own process, stopped at the stage's own time cut (printed with its
figures), so that one slow stage cannot eat the others' time; its table is appended to the figures file as soon as it
ends, and a stage cut short keeps what it printed. On the GPU (cuts in seconds; the default stages add up to 490 s,
inside the 540 s that gpu_check.sh allows the whole command with its installs):
  1. distill_eager     70  hf_deit's distillation step vs timm's TokenDistillationTask, DeiT-S + RegNetY-16GF (random
                           weights), 224 px, batch 128, bf16 autocast, eager (target >= 1.2x)
  2. mfu              120  the DeiT-B distilled student alone, bf16, batch 256, eager and compiled (target >= 45% MFU)
  3. distill_compiled 170  stage 1 with student and teacher torch.compile'd on both sides (target >= 1.2x)
  4. syncs             60  host syncs per DistillationTrainer step on CUDA (Python-side count + CUDA's own sync debug
                           mode) and ms/step vs transformers' Trainer and bare loops (bench_overhead.py)
  5. loader            70  loader images/s per data path (PIL float32, --uint8_batches, --device_augment when
                           DataArguments has it) vs stage 1's step images/s
  6. table            540  the paper's table on the full CIFAR-10 training set (experiments, --gpu_h200; about 8 min):
                           not in the default stages, run it alone (--stages table)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
PACKED_CIFAR = ROOT / ".gpu_data" / "cifar10.tgz"  # see gpu_check.sh: how the images travel to a GPU machine
PAIR = ["--student", "deit_small_distilled_patch16_224", "--teacher", "regnety_160", "--batch-size", "128"]
BASE = ["--student", "deit_base_distilled_patch16_224", "--teacher", "none", "--batch-size", "256"]
TIMED = ["--dtype", "bf16", "--fast-paths", "--repeats", "5", "--steps", "5"]
DRY_COMPILE = ["--compile-backend", "aot_eager"]  # dynamo + autograd tracing in seconds; inductor takes minutes on CPU


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    cut_s: int  # on the GPU; a dry run allows DRY_RUN_CUT_S per stage
    script: str  # benchmarks/<script>.py, or "-m experiments.reproduce_table"
    argv: tuple[str, ...]
    dry_argv: tuple[str, ...]


STAGES = [
    Stage("distill_eager", "distillation step vs timm's task, bf16 eager", 70, "bench_distill",
          (*PAIR, *TIMED, "--compile", "none"), ("--dry-run", "--fast-paths")),
    Stage("mfu", "DeiT-B student, bf16 eager and compiled (MFU)", 120, "bench_distill",
          (*BASE, *TIMED, "--compile", "none", "both", "--only", "hf_deit"),
          ("--dry-run", "--teacher", "none", "--only", "hf_deit", "--compile", "none", "both", *DRY_COMPILE)),
    Stage("distill_compiled", "distillation step vs timm's task, bf16 compiled", 170, "bench_distill",
          (*PAIR, *TIMED, "--compile", "both"), ("--dry-run", "--fast-paths", "--compile", "both", *DRY_COMPILE)),
    Stage("syncs", "host syncs and host overhead per training step", 60, "bench_overhead",
          ("--device", "cuda", "--repeats", "3", "--clock", "wall"), ("--dry-run",)),
    Stage("loader", "loader images/s per data path vs the step", 70, "bench_loader",
          ("--synthetic", "1024", "--repeats", "1", "--batch-size", "128"), ("--dry-run",)),
    Stage("table", "the paper's table on the full CIFAR-10 training set", 540, "-m experiments.reproduce_table",
          ("--gpu_h200",),
          ("--gpu_h200", "--smoke", "--seeds", "0", "--configurations", "hard_token", "timm_hard_token")),
]
DEFAULT_STAGES = [stage.name for stage in STAGES if stage.name != "table"]
DRY_RUN_CUT_S = 240


def loader_workers() -> list[str]:
    cpus = os.cpu_count() or 2
    return ["--workers", *map(str, sorted({min(4, cpus - 1), max(1, cpus // 2), max(1, cpus - 1)}))]


def step_rate(jsonl: Path) -> float | None:
    """hf_deit's latest distillation-step images/s (stage 1 or 3; the rate the loader must keep up with)."""
    if not jsonl.is_file():
        return None
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    rates = [row["images_per_s"] for row in rows if row.get("bench") == "distill"
             and row["implementation"] == "hf_deit" and row["teacher"] != "none"]
    return rates[-1] if rates else None


def write_cifar_like(root: Path, train: int = 12, test: int = 6) -> Path:
    """A tiny ImageNet-layout folder of generated 32 px JPEGs (10 classes), for a dry run without ../shared/data."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for label in range(10):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) // 2 + label * 12
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index:04d}.jpg", quality=75)
    return root


def table_data(args, scratch: Path) -> tuple[Path | None, str]:
    """(CIFAR-10 folder, note): ../shared/data/cifar10, or the packed archive unpacked, or (dry run) generated."""
    if args.table_data is None:
        args.table_data = SHARED_CIFAR if SHARED_CIFAR.is_dir() else PACKED_CIFAR
    source = Path(args.table_data)
    if source.is_dir():
        return source, f"images from {source}"
    if source.is_file():
        subprocess.run(["tar", "xzf", str(source), "-C", str(scratch)], check=True)
        return scratch / "cifar10", f"images unpacked from {source}"
    if args.dry_run:
        return write_cifar_like(scratch / "cifar10"), f"{source} is absent: generated images"
    return None, f"skipped: no CIFAR-10 at {source} (pack it as gpu_check.sh says and carry .gpu_data)"


def command(stage: Stage, args, out: Path, scratch: Path) -> tuple[list[str] | None, str]:
    """The stage's command line, or None and the reason it is skipped."""
    argv = list(stage.dry_argv if args.dry_run else stage.argv)
    note = ""
    if stage.name == "loader":
        argv += [] if args.dry_run else loader_workers()
        rate = step_rate(out.with_suffix(".jsonl"))
        argv += ["--step-images-per-s", f"{rate:.1f}"] if rate else []
    if stage.name == "table":
        folder, note = table_data(args, scratch)
        if folder is None:
            return None, note
        runs = scratch / "table_runs" if args.dry_run else ROOT / "runs" / "gpu_table"
        argv += ["--dataset_name", str(folder), "--output_dir", str(runs), "--docs_dir", str(out.parent / "gpu_table")]
        return [sys.executable, "-m", "experiments.reproduce_table", *argv], note
    return [sys.executable, str(ROOT / "benchmarks" / f"{stage.script}.py"), *argv,
            "--json", str(out.with_suffix(".jsonl"))], note


def run_in_own_group(argv: list[str], cut: float) -> tuple[str, str]:
    """Run `argv` in a new process group (its DataLoader and compile workers too), stopped with all of them at the
    cut or when this process is interrupted. Returns (stdout, status)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=cut)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as stop:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()  # what it printed before the cut is kept
        if isinstance(stop, KeyboardInterrupt):
            return stdout, "interrupted (gpu_check.sh's --limit)"
        return stdout, f"cut at its {cut:g} s limit"
    if process.returncode != 0:
        return stdout, f"failed (exit {process.returncode}):\n{stderr[-3000:]}"
    return stdout, "finished"


def run_stage(stage: Stage, args, out: Path, scratch: Path) -> bool:
    """Run one stage under its cut; append what it printed. True when it finished cleanly."""
    cut = args.cut_s or (DRY_RUN_CUT_S if args.dry_run else stage.cut_s)
    argv, note = command(stage, args, out, scratch)
    start = time.perf_counter()
    text, status, interrupted = "", note, False
    if argv is not None:
        text, status = run_in_own_group(argv, cut)
        interrupted = status.startswith("interrupted")
        status += f"; {note}" if note else ""
    seconds = time.perf_counter() - start
    report = (f"\n## {STAGES.index(stage) + 1}. {stage.title} [{stage.name}] ({seconds:.0f} s, {status})\n\n"
              f"```\n{' '.join(argv or [])}\n{text.strip()}\n```\n")
    print(report, flush=True)
    with out.open("a") as f:
        f.write(report)
    if interrupted:
        raise KeyboardInterrupt
    return status.startswith("finished")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_figures.md"), help="figures file (markdown; + .jsonl)")
    parser.add_argument("--stages", nargs="+", choices=[stage.name for stage in STAGES], default=DEFAULT_STAGES,
                        help=f"stages to run, in the order given (default: {' '.join(DEFAULT_STAGES)})")
    parser.add_argument("--table-data", default=None,
                        help=f"CIFAR-10 folder or .tgz for the table (default: {SHARED_CIFAR} or {PACKED_CIFAR})")
    parser.add_argument("--dry-run", action="store_true", help="every stage on CPU with tiny models")
    parser.add_argument("--cut-s", type=float, default=None, help="one cut (seconds) for every stage, replacing theirs")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    with args.out.open("a") as f:
        now = datetime.datetime.now(datetime.timezone.utc)
        dry = "(dry run) " if args.dry_run else ""
        f.write(f"\n# gpu_check {dry}{now:%Y-%m-%d %H:%M} UTC: {' '.join(args.stages)}\n")
    by_name = {stage.name: stage for stage in STAGES}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        finished = [run_stage(by_name[name], args, args.out, Path(scratch)) for name in args.stages]
    print(f"figures written to {args.out} and {args.out.with_suffix('.jsonl')}")
    return 0 if all(finished) else 3


if __name__ == "__main__":
    sys.exit(main())

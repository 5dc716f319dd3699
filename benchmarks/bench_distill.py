"""The full distillation step, hf_deit vs timm's `TokenDistillationTask`: teacher forward + student forward/backward
+ loss + optimizer step, same student architecture and weights, same teacher, same batch, in one process.

    python benchmarks/bench_distill.py                                   # CPU fp32, DeiT-Ti + RegNetY-1.6GF, batch 16
    python benchmarks/bench_distill.py --threads 1 --clock cpu           # on a shared, busy CPU
    python benchmarks/bench_distill.py --device cuda --dtype bf16 --compile both \\
        --student deit_small_distilled_patch16_224 --teacher regnety_160 --batch-size 128 --fast-paths   # the paper's pair
    python benchmarks/bench_distill.py --device cuda --dtype bf16 --compile both \\
        --student deit_base_distilled_patch16_224 --teacher none --batch-size 128 --fast-paths         # DeiT-B MFU
    python benchmarks/bench_distill.py --dry-run                         # tiny models, seconds (CI)
    python benchmarks/bench_distill.py --compile-ratio --threads 1 --clock cpu   # hf_deit compiled vs eager, CPU

hf_deit's step is `DistillationTrainer.training_step` (its compute_loss: teacher, DistillationLoss, autocast,
accelerate's backward) + the Trainer's optimizer (`create_optimizer`: AdamW, no decay on norms/biases/tokens).
timm's step is what its train.py does with a task: `task(input, target)` under autocast, `loss.backward()`,
`optimizer.step()` (torch AdamW, the same fused setting). Both: hard distillation, alpha 0.5, label smoothing 0.1,
drop path 0.1, random weights (speed does not depend on them), no Mixup (a data-side cost, equal for both).
With --fast-paths hf_deit also runs its optional flags (teacher channels_last, pinned SDPA backend); timm runs as
its task offers (its `task.compile()` compiles student and teacher; teacher under no_grad).
--teacher none: the student alone (both heads against the labels); timm's side is the same step on its model.

--compile-ratio: hf_deit's step eager vs compiled (student torch.compile'd as --torch_compile does, teacher as
--teacher_torch_compile), same weights and batch, interleaved; prints the speed-up over eager and, separately, the
compile time (the first compiled call minus the first eager call, wall clock).

The two run interleaved (each repeat: hf_deit, then timm) so that background load hits both alike; printed are
medians over repeats of step time, images/s, peak device memory, and MFU = model FLOPs per step (counted by
torch's FlopCounterMode on one step: student forward + backward, teacher forward; attention counted through the
math kernel) / step time / the device's dense bf16 peak (--peak-tflops, or a table of NVIDIA datasheet figures).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from NVIDIA's datasheets; first matching substring wins.
PEAK_BF16_TFLOPS = (
    ("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("GH200", 989.4), ("A100", 312.0), ("L40S", 362.1),
    ("L4", 121.0), ("A10", 125.0), ("4090", 165.2),
)
DRY_RUN = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def build_pair(args, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module | None]:
    """(hf_deit student, timm student with the same weights, teacher or None)."""
    import timm

    from hf_deit import to_timm
    from hf_deit.distillation.student import prepare_student

    overrides = DRY_RUN if args.dry_run else {"image_size": args.image_size}
    torch.manual_seed(args.seed)
    ours = prepare_student(args.student, num_labels=args.num_labels, drop_path_rate=args.drop_path, **overrides)
    theirs = to_timm(ours).train()
    theirs.set_distilled_training(True)
    teacher = None
    if args.teacher != "none":
        teacher = timm.create_model(args.teacher, pretrained=False, num_classes=args.num_labels).eval()
    return ours.to(device), theirs.to(device), teacher.to(device) if teacher is not None else None


def hf_deit_step(args, student, teacher, device, autocast_dtype, batch) -> Callable[[], None]:
    from hf_deit import DeiTTrainingArguments, DistillationTrainer, load_teacher

    training_args = DeiTTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench_distill_"), report_to="none", save_strategy="no",
        use_cpu=device.type == "cpu", bf16=autocast_dtype is torch.bfloat16, label_smoothing_factor=0.1,
        mixup=0.0, cutmix=0.0,  # no Mixup (see the module docstring)
        distillation_type="hard" if teacher is not None else "none", teacher_name_or_path=None,
        optim="adamw_torch_fused" if args.fused else "adamw_torch", learning_rate=1e-4,
        teacher_torch_compile=args.compile in ("both", "teacher"), teacher_channels_last=args.fast_paths,
        torch_compile_backend=args.compile_backend if args.compile in ("both", "teacher") else None,
        sdpa_backend=("flash" if device.type == "cpu" or autocast_dtype else "efficient") if args.fast_paths else None,
        disable_tqdm=True,
    )
    frozen = None
    if teacher is not None:  # the student's own size: timm's task does not resize either
        frozen = load_teacher(teacher, num_labels=args.num_labels, input_size=batch[0].shape[-1])
    trainer = DistillationTrainer(model=student, args=training_args, teacher=frozen)
    trainer.current_gradient_accumulation_steps = 1  # what Trainer.train() sets before its first step
    trainer.create_optimizer()
    compiled = args.compile in ("both", "student")
    model = torch.compile(student, backend=args.compile_backend) if compiled else student  # as --torch_compile
    inputs = {"pixel_values": batch[0], "labels": batch[1]}

    def step() -> None:
        trainer.training_step(model, inputs)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    return step


def timm_step(args, student, teacher, device, autocast_dtype, batch) -> Callable[[], None]:
    from timm.task import DistillationTeacher, TokenDistillationTask

    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    if teacher is not None:
        task = TokenDistillationTask(student, DistillationTeacher(teacher, device=device), criterion=criterion,
                                     distill_type="hard", task_loss_weight=0.5, device=device, verbose=False)
        if args.compile == "both":
            task.compile(backend=args.compile_backend)
        forward = task.train()
    else:
        compiled = args.compile in ("both", "student")
        model = torch.compile(student, backend=args.compile_backend) if compiled else student

        def forward(x, y):
            cls_logits, dist_logits = model(x)
            return {"loss": (criterion(cls_logits, y) + criterion(dist_logits, y)) / 2}

    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.05, fused=args.fused or None)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss = forward(*batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def count_flops(step: Callable[[], None]) -> float:
    """FLOPs of one step (matmuls and convolutions; attention through the math kernel so that it is counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        step()
    return float(counter.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(steps: dict[str, Callable], args, device, clock) -> dict[str, dict[str, list[float]]]:
    results = {name: {"seconds": [], "peak_bytes": []} for name in steps}
    for name, step in steps.items():
        for _ in range(args.warmup):  # compiles, autotunes, allocates optimizer state
            step()
    sync(device)
    for _ in range(args.repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            start = clock()
            for _ in range(args.steps):
                step()
            sync(device)
            results[name]["seconds"].append((clock() - start) / args.steps)
            if device.type == "cuda":
                results[name]["peak_bytes"].append(torch.cuda.max_memory_allocated(device))
    return results


def make_batch(args, device) -> tuple[torch.Tensor, torch.Tensor]:
    side = DRY_RUN["image_size"] if args.dry_run else args.image_size
    g = torch.Generator().manual_seed(args.seed)
    return (torch.randn(args.batch_size, 3, side, side, generator=g).to(device),
            torch.randint(0, args.num_labels, (args.batch_size,), generator=g).to(device))


def run_variant(args, device, autocast_dtype, label: str, clock) -> list[dict]:
    ours, theirs, teacher = build_pair(args, device)
    batch = make_batch(args, device)
    flops = {}
    if not args.no_flops:  # on eager copies, so that compiled graphs are not traced by the counter
        eager = argparse.Namespace(**{**vars(args), "compile": "none", "fast_paths": False})
        flops["hf_deit"] = count_flops(
            hf_deit_step(eager, copy.deepcopy(ours), copy.deepcopy(teacher), device, autocast_dtype, batch))
        flops["timm"] = flops["hf_deit"]  # the same model FLOPs by construction (same architectures and batch)
    steps = {"hf_deit": hf_deit_step(args, ours, copy.deepcopy(teacher), device, autocast_dtype, batch)}
    if "timm" in args.only:
        timm_name = "timm TokenDistillationTask" if teacher is not None else "timm"
        steps[timm_name] = timm_step(args, theirs, copy.deepcopy(teacher), device, autocast_dtype, batch)
    results = time_interleaved(steps, args, device, clock)
    peak = peak_flops(device, args.peak_tflops)
    rows, ours_time = [], statistics.median(results["hf_deit"]["seconds"])
    for name, result in results.items():
        seconds = statistics.median(result["seconds"])
        model_flops = flops.get("hf_deit")
        rows.append({
            "variant": label, "implementation": name, "step_ms": 1000 * seconds,
            "step_ms_range": [1000 * min(result["seconds"]), 1000 * max(result["seconds"])],
            "images_per_s": args.batch_size / seconds, "speedup_of_hf_deit": seconds / ours_time,
            "peak_memory_gib": max(result["peak_bytes"]) / 2**30 if result["peak_bytes"] else None,
            "tflops_per_step": model_flops / 1e12 if model_flops else None,
            "mfu": model_flops / seconds / peak if model_flops and peak else None,
        })
    return rows


def run_compile_ratio(args, device, autocast_dtype, label: str, clock) -> list[dict]:
    """hf_deit's step eager vs compiled (student as --torch_compile, teacher as --teacher_torch_compile), the same
    weights and batch, interleaved in one loop. The first call of each is timed on its own (wall clock): the
    compiled one's minus the eager one's is the compile time (both first calls also allocate optimizer state)."""
    ours, _, teacher = build_pair(args, device)
    batch = make_batch(args, device)
    steps, first_s = {}, {}
    for mode, name in (("none", "hf_deit eager"), ("both", "hf_deit compiled")):
        variant = argparse.Namespace(**{**vars(args), "compile": mode})
        steps[name] = hf_deit_step(variant, copy.deepcopy(ours), copy.deepcopy(teacher), device, autocast_dtype, batch)
        sync(device)
        start = time.perf_counter()
        steps[name]()
        sync(device)
        first_s[name] = time.perf_counter() - start
    results = time_interleaved(steps, args, device, clock)  # its warm-up calls follow the first call above
    eager = statistics.median(results["hf_deit eager"]["seconds"])
    rows = []
    for name, result in results.items():
        seconds = statistics.median(result["seconds"])
        rows.append({
            "variant": label, "implementation": name, "step_ms": 1000 * seconds,
            "step_ms_range": [1000 * min(result["seconds"]), 1000 * max(result["seconds"])],
            "images_per_s": args.batch_size / seconds, "speedup_over_eager": eager / seconds,
            "first_step_s": first_s[name], "compile_s": first_s[name] - first_s["hf_deit eager"],
        })
    return rows


def format_compile_rows(rows: list[dict]) -> str:
    lines = ["| variant | step | step ms (min-max) | images/s | speed-up over eager | first step s | compile s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lo, hi = r["step_ms_range"]
        lines.append(f"| {r['variant']} | {r['implementation']} | {r['step_ms']:.1f} ({lo:.1f}-{hi:.1f}) | "
                     f"{r['images_per_s']:.1f} | {r['speedup_over_eager']:.3f}x | {r['first_step_s']:.1f} | "
                     f"{r['compile_s']:.1f} |")
    return "\n".join(lines)


def format_rows(rows: list[dict]) -> str:
    lines = ["| variant | implementation | step ms (min-max) | images/s | hf_deit speed-up | peak GiB | GFLOP/step "
             "| MFU |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        peak = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "n/a"
        gflops = f"{1000 * r['tflops_per_step']:.4g}" if r["tflops_per_step"] is not None else "n/a"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lo, hi = r["step_ms_range"]
        lines.append(f"| {r['variant']} | {r['implementation']} | {r['step_ms']:.1f} ({lo:.1f}-{hi:.1f}) | "
                     f"{r['images_per_s']:.1f} | {r['speedup_of_hf_deit']:.3f}x | {peak} | {gflops} | {mfu} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", default="deit_tiny_distilled_patch16_224", help="hf_deit preset (distilled)")
    parser.add_argument("--teacher", default="regnety_016", help="timm architecture (random weights), or 'none'")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-labels", type=int, default=1000)
    parser.add_argument("--drop-path", type=float, default=0.1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="+", choices=["fp32", "bf16"], default=None,
                        help="default: fp32 on CPU, bf16 on CUDA (autocast, fp32 weights)")
    parser.add_argument("--compile", nargs="+", choices=["none", "student", "teacher", "both"], default=None,
                        help="variants to run (default: none on CPU; none and both on CUDA)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend of every compiled model (aot_eager: a quick check on CPU)")
    parser.add_argument("--fast-paths", action="store_true", help="hf_deit: teacher channels_last + pinned SDPA kernel")
    parser.add_argument("--no-fused", dest="fused", action="store_false", help="foreach AdamW instead of fused, both")
    parser.add_argument("--compile-ratio", action="store_true",
                        help="instead of hf_deit vs timm: hf_deit eager vs compiled (student + teacher), interleaved, "
                        "with the compile time")
    parser.add_argument("--only", nargs="+", choices=["hf_deit", "timm"], default=["hf_deit", "timm"],
                        help="implementations to time (hf_deit always runs: it is the reference of the ratios)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed sample")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per implementation (1; 3 compiled)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: process CPU time (--threads 1)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak for MFU")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (and MFU)")
    parser.add_argument("--json", type=Path, default=None, help="append the rows as JSON lines to this file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="tiny models and 1 step: checks that it runs")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.teacher = "test_resnet" if args.teacher != "none" else "none"
        args.batch_size, args.repeats, args.steps, args.num_labels = 4, 2, 1, 10
    return args


def compile_ratio_main(args, device, dtypes: list[str], clock, hardware: str) -> list[dict]:
    args.warmup = args.warmup if args.warmup is not None else 2  # after the timed first call (which compiles)
    rows = []
    for dtype in dtypes:
        autocast_dtype = torch.bfloat16 if dtype == "bf16" else None
        rows += run_compile_ratio(args, device, autocast_dtype, dtype, clock)
    print("\n" + format_compile_rows(rows))
    append_json(args, "distill_compile", hardware, rows)
    return rows


def append_json(args, bench: str, hardware: str, rows: list[dict]) -> None:
    """With --json, append each row as a JSON line, with what was run."""
    if args.json:
        with args.json.open("a") as f:
            for row in rows:
                f.write(json.dumps({"bench": bench, "device": hardware, "student": args.student,
                                    "teacher": args.teacher, "batch": args.batch_size, **row}) + "\n")


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    dtypes = args.dtype or (["bf16"] if cuda else ["fp32"])
    compiles = args.compile or (["none", "both"] if cuda else ["none"])
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for both
        torch.backends.cudnn.allow_tf32 = False
    hardware = torch.cuda.get_device_name(device) if cuda else f"CPU, {os.cpu_count()} cores"
    print(f"# {hardware}, torch {torch.__version__}; {' '.join(sys.argv)}\n# student {args.student}, teacher "
          f"{args.teacher}, batch {args.batch_size}, {args.repeats} repeats x {args.steps} steps, {args.clock} clock",
          flush=True)
    if args.compile_ratio:
        return compile_ratio_main(args, device, dtypes, clock, hardware)
    rows = []
    for dtype in dtypes:
        for compile_mode in compiles:
            variant = argparse.Namespace(**{**vars(args), "compile": compile_mode})
            variant.warmup = args.warmup if args.warmup is not None else (1 if compile_mode == "none" else 3)
            label = f"{dtype} {'eager' if compile_mode == 'none' else 'compiled (' + compile_mode + ')'}"
            autocast_dtype = torch.bfloat16 if dtype == "bf16" else None
            rows += run_variant(variant, device, autocast_dtype, label, clock)
            print(format_rows(rows[-len(args.only):]), flush=True)
    print("\n" + format_rows(rows))
    append_json(args, "distill", hardware, rows)
    return rows


if __name__ == "__main__":
    main()

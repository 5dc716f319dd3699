"""Train-step and inference throughput: hf_deit vs timm vs transformers on the identical DeiT architecture.

    python benchmarks/bench_model.py                                        # DeiT-Ti + DeiT-S distilled, CPU fp32
    python benchmarks/bench_model.py --models tiny --repeats 3 --steps 2    # a quick look
    python benchmarks/bench_model.py --threads 1 --clock cpu --repeats 5 --steps 1      # on a shared, busy CPU
    python benchmarks/bench_model.py --device cuda --dtype bf16 --compile --models small base --steps 20

Figures and the commands that produced them: docs/benchmarks.md, "## Model".

What is compared (the same for all three, so that only the implementations differ):
  * architecture: timm `deit_{size}_distilled_patch16_224` (pretrained=False, img_size=--image-size), transformers
    `DeiTForImageClassificationWithTeacher` with a matching `DeiTConfig` (LayerNorm eps 1e-6, exact GELU, qkv bias,
    attn_implementation="sdpa"), and `hf_deit.DeiTForImageClassification(DeiTConfig.from_preset(...))` (sdpa).
    Parameter counts are checked equal before timing. Dropout and drop path are 0 everywhere.
  * train step: forward in train mode returning both heads, loss = mean of the two heads' cross-entropy against
    random labels (computed here, outside every model: transformers' teacher model has no loss), backward, AdamW
    step, zero_grad(set_to_none=True).
  * inference: eval mode, torch.inference_mode(), fused logits; reported as images/s.
  * bf16 is autocast (fp32 weights, bf16 matmuls), i.e. what Trainer(bf16=True) does; --compile wraps each model
    in torch.compile (the optimizer step stays eager).
The three run interleaved in one process (for each repeat: ours, timm, transformers), so background load hits all
of them alike; the table gives medians over repeats, and ratio = other's time / ours (> 1: ours is faster).
On a CPU shared with other jobs, wall-clock samples of a multi-threaded run swing by 2x or more (a preempted
thread stalls the others at every barrier); `--threads 1 --clock cpu` times this process's CPU time instead, which
such load barely moves.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}  # name -> (hidden_size, heads); depth 12 for all


def build_models(size: str, image_size: int, num_labels: int) -> dict[str, torch.nn.Module]:
    """The same distilled DeiT three times; each returns (cls_logits, distillation_logits) via `heads` below."""
    import timm
    import transformers

    from hf_deit import DeiTConfig, DeiTForImageClassification

    hidden, heads = SIZES[size]
    ours_config = DeiTConfig.from_preset(
        f"deit_{size}_distilled_patch16_224", image_size=image_size, num_labels=num_labels, attn_implementation="sdpa"
    )
    ours = DeiTForImageClassification(ours_config)
    theirs_timm = timm.create_model(
        f"deit_{size}_distilled_patch16_224",
        pretrained=False,
        img_size=image_size,
        num_classes=num_labels,
        drop_rate=0.0,
        drop_path_rate=0.0,
    )
    theirs_timm.set_distilled_training(True)  # train mode returns (cls, dist) instead of their mean
    hf_config = transformers.DeiTConfig(
        hidden_size=hidden,
        num_hidden_layers=12,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
        image_size=image_size,
        patch_size=16,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    hf_config._attn_implementation = "sdpa"
    theirs_hf = transformers.DeiTForImageClassificationWithTeacher(hf_config)
    models = {"hf_deit": ours, "timm": theirs_timm, "transformers": theirs_hf}
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"the three models differ in size, so the comparison would be unfair: {counts}")
    return models


def heads(name: str, outputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(cls_logits, distillation_logits) from each implementation's train-mode output."""
    if name == "timm":
        return outputs  # a tuple (x, x_dist) when distilled_training and training
    return outputs.cls_logits, outputs.distillation_logits


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_train_step(name: str, model: torch.nn.Module, autocast: Callable, images, labels) -> Callable[[], None]:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

    def step() -> None:
        with autocast():
            cls_logits, distillation_logits = heads(name, model(images))
            loss = (F.cross_entropy(cls_logits, labels) + F.cross_entropy(distillation_logits, labels)) / 2
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def make_infer_step(model: torch.nn.Module, autocast: Callable, images) -> Callable[[], None]:
    model.eval()  # the train-step timing is over by the time the inference steps are built

    def step() -> None:
        with torch.inference_mode(), autocast():
            model(images)

    return step


def time_interleaved(
    steps: dict[str, Callable[[], None]],
    repeats: int,
    k: int,
    warmup: int,
    device: torch.device,
    label: str,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per call of each step, one sample per repeat, the implementations interleaved within a repeat."""
    for name, step in steps.items():
        for _ in range(warmup):
            step()
        sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(repeats):
        for name, step in steps.items():
            sync(device)
            start = clock()
            for _ in range(k):
                step()
            sync(device)
            times[name].append((clock() - start) / k)
        line = "  ".join(f"{n} {t[-1] * 1e3:.0f} ms" for n, t in times.items())
        print(f"  {label} repeat {r + 1}/{repeats}: {line}", flush=True)
    return times


def table(title: str, times: dict[str, list[float]], batch_size: int) -> str:
    ours = statistics.median(times["hf_deit"])
    rows = [
        f"| {title} | median ms / batch | min-max ms | images/s | time / hf_deit's |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append(
            f"| {name} | {median * 1e3:.1f} | {min(samples) * 1e3:.0f}-{max(samples) * 1e3:.0f} | "
            f"{batch_size / median:.1f} | {median / ours:.3f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SIZES), default=["tiny", "small"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-labels", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7, help="timed samples per implementation (median reported)")
    parser.add_argument("--steps", type=int, default=2, help="calls per timed sample")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed calls per implementation before timing (1; 3 with --compile)"
    )
    parser.add_argument("--modes", nargs="+", choices=["train", "infer"], default=["train", "infer"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast, fp32 weights")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (warmup compiles)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads on CPU")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time (what users see). cpu: this process's CPU time, which other jobs on a shared machine "
        "barely disturb; only meaningful with --threads 1 (idle threads spinning would count) on --device cpu",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import timm
    import transformers

    if args.warmup is None:
        args.warmup = 3 if args.compile else 1
    device = torch.device(args.device)
    if args.clock == "cpu" and (device.type != "cpu" or args.threads != 1):
        parser.error("--clock cpu measures CPU time, which equals compute time only with --device cpu --threads 1")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in all three
        torch.backends.cudnn.allow_tf32 = False
    if args.dtype == "bf16":
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext

    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(
        f"# {datetime.date.today()}  {hardware}, {args.threads} threads  torch {torch.__version__}  timm "
        f"{timm.__version__}  transformers {transformers.__version__}\n# {' '.join(sys.argv)}\n"
        f"# batch {args.batch_size}, {args.image_size} px, {args.dtype}, compile={args.compile}, "
        f"{args.repeats} repeats x {args.steps} steps (+{args.warmup} warmup), {args.clock} clock",
        flush=True,
    )
    for size in args.models:
        torch.manual_seed(args.seed)
        models = build_models(size, args.image_size, args.num_labels)
        models = {name: m.to(device) for name, m in models.items()}
        if args.compile:
            models = {name: torch.compile(m) for name, m in models.items()}
        images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
        labels = torch.randint(0, args.num_labels, (args.batch_size,), device=device)
        results = {}
        if "train" in args.modes:
            train_steps = {n: make_train_step(n, m, autocast, images, labels) for n, m in models.items()}
            results["train step"] = time_interleaved(
                train_steps, args.repeats, args.steps, args.warmup, device, f"DeiT-{size} train", clock
            )
        if "infer" in args.modes:
            infer_steps = {n: make_infer_step(m, autocast, images) for n, m in models.items()}
            results["inference"] = time_interleaved(
                infer_steps, args.repeats, args.steps, args.warmup, device, f"DeiT-{size} infer", clock
            )
        for mode, times in results.items():
            print(f"\nDeiT-{size} distilled, {mode}\n{table('implementation', times, args.batch_size)}\n", flush=True)
        del models


if __name__ == "__main__":
    main()

"""Host overhead per training step: hf_deit's DistillationTrainer vs transformers' Trainer vs bare PyTorch loops doing
the same math, and the host syncs each makes per step.

    python benchmarks/bench_overhead.py                    # 7 repeats x 60 steps (+10 warm-up), CPU time, 1 thread
    python benchmarks/bench_overhead.py --profile          # + cProfile: where DistillationTrainer's extra time goes
    python benchmarks/bench_overhead.py --device cuda --repeats 3 --clock wall   # on a GPU (+ CUDA's own sync count)
    python benchmarks/bench_overhead.py --dry-run          # a few steps, seconds

A tiny student (DeiT, 32 px, patch 8, 2 blocks of width 32) and a tiny teacher (timm's test_resnet) on batches of 8,
so that the host's Python work, not the arithmetic, decides the step time. Every variant has the same weights, the
same in-memory dataset (no DataLoader workers), and the optimizer and schedule the Trainer builds (AdamW, fused as
transformers' default on torch >= 2.8; weight-decay groups; cosine) with the same --max-grad-norm:

  ours                    DistillationTrainer, hard distillation, DeiTTrainingArguments' defaults (Mixup, EMA off)
  bare distill            a plain loop: batch -> run_teacher -> student -> DistillationLoss -> backward -> [clip] ->
                          optimizer.step -> scheduler.step -> zero_grad
  hf Trainer, filter off  transformers.Trainer, the model's own loss (CE on both heads), logging_nan_inf_filter=False
  hf Trainer, filter on   the same with the filter on (transformers' default)
  bare plain              a plain loop: model(pixel_values, labels).loss -> backward -> [clip] -> step -> ...

Timing: in each repeat every variant runs warm-up + N steps, interleaved (ABCDE ABCDE ...), each on a fresh trainer
built before its clock starts. The clock runs from the end of the last warm-up step to the end of the last step (a
TrainerCallback's on_step_end; the bare loops read it at the same point). Printed: median ms/step over repeats, and
the paired differences ours - bare distill and hf Trainer - bare plain (median over repeats of the within-repeat
difference). --clock cpu (the default, with --threads 1) counts this process's CPU time, which other jobs on a
shared machine barely move; host overhead is CPU time. --clock wall is what a user sees (use it on a GPU).
Host syncs: one more untimed run per variant counts Tensor.item/__bool__/tolist/__float__/__int__ calls in the N
steps (benchmarks/host_syncs.py) and names the lines that make them (on CUDA, of CUDA tensors only), and on CUDA
also the syncs CUDA itself reports (torch.cuda.set_sync_debug_mode), which include those made from C++.
--profile: what ours does that the bare loop does not, each part timed alone; then cProfile (CPU clock) over the N
steps of ours and of bare distill: the loop's calls per step, four levels deep.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from host_syncs import HostSyncCounter, short_path  # noqa: E402

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64)
NUM_LABELS = 10
VARIANTS = ("ours", "bare distill", "hf Trainer, filter off", "hf Trainer, filter on", "bare plain")


class StepWindow:
    """The clock (and a sync counter, CUDA's sync warnings or a profiler) over the steps after `warmup`, up to
    `warmup + steps`. On CUDA the device is synchronised at the two ends, outside what is counted."""

    def __init__(self, warmup: int, steps: int, clock: Callable[[], float], counter: HostSyncCounter | None = None,
                 profiler: cProfile.Profile | None = None, cuda_sync_warnings: bool = False) -> None:
        self.warmup, self.steps, self.clock = warmup, steps, clock
        self.counter, self.profiler, self.cuda_sync_warnings = counter, profiler, cuda_sync_warnings
        self.seconds: float | None = None
        self._start = 0.0

    def step_end(self, step: int, device: torch.device) -> None:
        """Called after each optimizer step with the number of steps done."""
        cuda = device.type == "cuda"
        if step == self.warmup:
            if cuda:
                torch.cuda.synchronize(device)
            if self.cuda_sync_warnings:
                torch.cuda.set_sync_debug_mode("warn")  # a warning per sync CUDA sees, C++ callers included
            if self.counter is not None:
                self.counter.start()
            if self.profiler is not None:
                self.profiler.enable()
            self._start = self.clock()
        elif step == self.warmup + self.steps:
            if self.cuda_sync_warnings:
                torch.cuda.set_sync_debug_mode("default")
            if cuda:
                torch.cuda.synchronize(device)
            self.seconds = self.clock() - self._start
            if self.profiler is not None:
                self.profiler.disable()
            if self.counter is not None:
                self.counter.stop()


def window_callback(window: StepWindow, device: torch.device):
    from transformers import TrainerCallback

    class WindowCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            window.step_end(state.global_step, device)

    return WindowCallback()


class TinyImages(torch.utils.data.Dataset):
    """Random 32 px images and labels, made once: no decoding, no augmentation."""

    def __init__(self, size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, 3, TINY["image_size"], TINY["image_size"], generator=g)
        self.labels = torch.randint(0, NUM_LABELS, (size,), generator=g).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.images[index], "labels": self.labels[index]}


def build_models(seed: int = 0):
    """(student state dict, a function making the student from it, the frozen teacher)."""
    import timm

    from hf_deit import load_teacher
    from hf_deit.distillation.student import prepare_student

    torch.manual_seed(seed)
    student = prepare_student("deit_tiny_distilled_patch16_224", num_labels=NUM_LABELS, drop_path_rate=0.1, **TINY)

    def make_student():  # a fresh copy per run: no trainer sees another's hooks or optimizer state
        return copy.deepcopy(student)

    cnn = timm.create_model("test_resnet", pretrained=False, num_classes=NUM_LABELS)
    return make_student, load_teacher(cnn, num_labels=NUM_LABELS, input_size=TINY["image_size"])


def common_arguments(args, output_dir: str) -> dict:
    return dict(
        output_dir=output_dir, report_to="none", save_strategy="no", use_cpu=args.device == "cpu",
        per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps, learning_rate=1e-4,
        weight_decay=0.05, lr_scheduler_type="cosine", max_grad_norm=args.max_grad_norm,
        logging_steps=10**6,  # no training log inside the window: the steady state between logs is measured
        disable_tqdm=True, dataloader_num_workers=0, seed=args.seed,
    )


def make_trainer(variant: str, args, make_student, teacher, dataset, output_dir: str):
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from hf_deit import DeiTTrainingArguments, DistillationTrainer

    if variant in ("ours", "bare distill"):
        # the bare loop's math: no Mixup, no EMA (the recipe's default); transformers' cosine, as the hf variants
        training_args = DeiTTrainingArguments(
            **common_arguments(args, output_dir), distillation_type="hard", teacher_name_or_path=None,
            mixup=0.0, cutmix=0.0, warmup_epochs=0.0, lr_schedule="transformers",
            model_ema_decay=0.0,  # the bare loop keeps no EMA
        )
        trainer = DistillationTrainer(model=make_student(), args=training_args, teacher=teacher, train_dataset=dataset)
    else:
        training_args = TrainingArguments(
            **common_arguments(args, output_dir), logging_nan_inf_filter=variant == "hf Trainer, filter on",
        )
        trainer = Trainer(model=make_student(), args=training_args, train_dataset=dataset)
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics of every run (on_log only)
    return trainer


def bare_loop(trainer, loss_fn, teacher, dataset, args, window: StepWindow, device: torch.device) -> None:
    """The same math as `trainer`'s steps in a plain loop, with the optimizer and schedule the trainer builds."""
    from hf_deit.distillation.fast_paths import run_teacher

    model = trainer.model.to(device).train()
    trainer.create_optimizer_and_scheduler(num_training_steps=args.warmup + args.steps)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    g = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, generator=g,
                                         pin_memory=device.type == "cuda")  # as the Trainer's loader

    def bare_step(batch) -> None:  # a function, so that a profile shows the step as one root
        pixel_values = batch["pixel_values"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        if teacher is None:
            loss = model(pixel_values=pixel_values, labels=labels).loss
        else:
            loss = loss_fn(model(pixel_values=pixel_values), labels, run_teacher(teacher, pixel_values))["loss"]
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    for step, batch in enumerate(loader, start=1):
        bare_step(batch)
        window.step_end(step, device)
        if step == args.warmup + args.steps:
            return


def run_once(variant: str, args, models, dataset, window: StepWindow, device: torch.device) -> float:
    """Warm-up + N steps of one variant; the seconds of the N steps."""
    make_student, teacher = models
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as output_dir:
        trainer = make_trainer(variant, args, make_student, teacher, dataset, output_dir)
        if variant.startswith("bare"):
            distill = variant == "bare distill"
            bare_loop(trainer, trainer.loss_fn if distill else None, trainer.teacher if distill else None, dataset,
                      args, window, device)
        else:
            trainer.add_callback(window_callback(window, device))
            trainer.train()
    if window.seconds is None:
        raise RuntimeError(f"{variant}: the run ended before step {args.warmup + args.steps}")
    return window.seconds


def time_variants(args, models, dataset, device, clock) -> dict[str, list[float]]:
    seconds = {variant: [] for variant in args.variants}
    for repeat in range(args.repeats):
        for variant in args.variants:
            window = StepWindow(args.warmup, args.steps, clock)
            seconds[variant].append(run_once(variant, args, models, dataset, window, device) / args.steps)
        line = "  ".join(f"{v} {s[-1] * 1e3:.2f}" for v, s in seconds.items())
        print(f"  repeat {repeat + 1}/{args.repeats} ms/step: {line}", flush=True)
    return seconds


def count_syncs(args, models, dataset, device) -> dict[str, dict]:
    """Per variant: syncs per step by method, the lines making them, and (CUDA) the syncs CUDA reports."""
    counts = {}
    for variant in args.variants:
        cuda = device.type == "cuda"
        counter = HostSyncCounter(device_type="cuda" if cuda else None)  # on CUDA, CPU tensors' values cost no sync
        window = StepWindow(args.warmup, args.steps, time.perf_counter, counter=counter, cuda_sync_warnings=cuda)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                run_once(variant, args, models, dataset, window, device)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode("default")
        cuda_syncs = sum("synchroniz" in str(w.message) for w in caught)
        counts[variant] = {
            "per_step": counter.total / args.steps, "by_method": counter.per_step(args.steps),
            "sites": {site: calls / args.steps for site, calls in counter.sites.most_common()},
            "cuda_reported_per_step": cuda_syncs / args.steps if cuda else None,
        }
    return counts


def profile_variant(variant: str, args, models, dataset, device, clock) -> pstats.Stats:
    profiler = cProfile.Profile(clock)  # the CPU clock by default: other jobs' load does not count
    window = StepWindow(args.warmup, args.steps, time.perf_counter, profiler=profiler)
    run_once(variant, args, models, dataset, window, device)
    return pstats.Stats(profiler)


def _label(func: tuple) -> str:
    path, line, name = func
    return name if path == "~" else f"{short_path(path)}:{line}({name})"


def call_tree(stats: pstats.Stats, steps: int, depth: int = 4, min_ms: float = 0.05) -> list[str]:
    """The window's calls per step: the roots (what the loop called after the profiler started: functions without a
    recorded caller) and their callees, by cumulative ms/step, `depth` levels deep. A function called both from the
    loop itself and from deeper down has callers and is missed as a root: the bare loop's body is one function
    for that reason; the Trainer's loop calls each of its parts from `_run_epoch` alone."""
    children: dict[tuple, list[tuple[float, tuple]]] = {}
    roots = []
    for func, (_, _, _, cumtime, callers) in stats.stats.items():
        if not callers:
            roots.append((cumtime, func))
        for caller, edge in callers.items():
            children.setdefault(caller, []).append((edge[3], func))
    lines = []

    def walk(items, level):
        for seconds, func in sorted(items, reverse=True):
            ms = 1000 * seconds / steps
            if ms < min_ms:
                continue
            lines.append(f"{'    ' * level}{ms:8.3f}  {_label(func)}")
            # a module call is the model's (or loss's) own work, the same in every variant; below it pstats merges
            # the callees of every module (its edges are per function, not per call path)
            if level + 1 < depth and func[2] != "_wrapped_call_impl":
                walk(children.get(func, []), level + 1)

    walk(roots, 0)
    return lines


def timed_us(call: Callable[[], object], clock, repeats: int) -> float:
    """Median over 5 samples of the microseconds per call, each sample `repeats` calls."""
    samples = []
    for _ in range(5):
        start = clock()
        for _ in range(repeats):
            call()
        samples.append(1e6 * (clock() - start) / repeats)
    return statistics.median(samples)


def itemize(args, models, dataset, device, clock) -> list[tuple[str, float, float]]:
    """What DistillationTrainer's step does that the bare loop does not, each part timed alone (unprofiled) on a
    trainer that has run a few steps: (item, us per step for ours, us per step for the bare loop's counterpart)."""
    from accelerate.utils.imports import is_lomo_available

    from hf_deit.data.seeding import AugmentationKey, SeededAugmentation

    make_student, teacher = models
    quick = argparse.Namespace(**{**vars(args), "warmup": 1, "steps": 2})
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as output_dir:
        trainer = make_trainer("ours", quick, make_student, teacher, dataset, output_dir)
        trainer.train()
        model, optimizer, seeded = trainer.model_wrapped, trainer.optimizer, SeededAugmentation(dataset, seed=0)
        inputs = trainer._prepare_inputs(trainer.data_collator([dataset[i] for i in range(args.batch_size)]))
        trainer.training_step(model, inputs)  # gradients present for the norm below
        loss = trainer.compute_loss(model, inputs)
        parts = trainer.loss_fn(model(pixel_values=inputs["pixel_values"]), inputs["labels"],
                                torch.zeros(args.batch_size, NUM_LABELS))
        handler, state, control = trainer.callback_handler, trainer.state, trainer.control
        events = ("on_step_begin", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end")
        keys = [AugmentationKey(0, position, position) for position in range(args.batch_size)]  # one batch
        # (item, ours' call, the bare loop's counterpart or None, calls per step)
        items = [
            ("model.train() every step (Trainer.training_step)", model.train, None, 1),
            ("floating_point_ops: model.num_parameters() every step", lambda: trainer.floating_point_ops(inputs),
             None, 1),
            ("_get_grad_norm: a clip_grad_norm_(inf) pass even with max_grad_norm 0",
             lambda: trainer._get_grad_norm(model), None, 1),
            ("accelerate's AcceleratedOptimizer.step: is_lomo_available() x2", is_lomo_available, None, 2),
            ("model.zero_grad() (Trainer) vs optimizer.zero_grad() (bare)", model.zero_grad,
             lambda: optimizer.optimizer.zero_grad(set_to_none=True), 1),
            ("seeded augmentation: RNG states saved and restored once per batch, each image seeded (the DataLoader's "
             "__getitems__)", lambda: seeded.__getitems__(keys), lambda: [dataset[key.index] for key in keys], 1),
            ("_prepare_inputs (device moves of the batch dict)", lambda: trainer._prepare_inputs(inputs), None, 1),
            ("callbacks: " + ", ".join(events),
             lambda: [getattr(handler, event)(trainer.args, state, control) for event in events], None, 1),
            ("NaN filter: isnan(loss) or isinf(loss) as bools, 2 syncs",
             lambda: torch.isnan(loss) or torch.isinf(loss), None, 1),
            ("_check_finite: isfinite(loss).all() as a bool, 1 sync", lambda: trainer._check_finite(parts), None, 1),
            ("_accumulate: loss parts summed on the device", lambda: trainer._accumulate(parts), None, 1),
        ]
        return [(item, per_step * timed_us(ours, clock, 200), per_step * timed_us(bare, clock, 200) if bare else 0.0)
                for item, ours, bare, per_step in items]


def paired(seconds: dict[str, list[float]], a: str, b: str) -> tuple[float, float, float]:
    """Median, min and max over repeats of (a - b) ms/step within the same repeat."""
    diffs = [1000 * (x - y) for x, y in zip(seconds[a], seconds[b])]
    return statistics.median(diffs), min(diffs), max(diffs)


def report(seconds, syncs, args) -> list[str]:
    lines = ["| variant | ms/step, median (min-max) | host syncs/step | by method |", "|---|---:|---:|---|"]
    for variant, samples in seconds.items():
        ms = [1000 * s for s in samples]
        sync = syncs.get(variant, {})
        methods = ", ".join(f"{m} {n:g}" for m, n in sync.get("by_method", {}).items()) or "-"
        cuda = sync.get("cuda_reported_per_step")
        cuda = f" (CUDA reports {cuda:g})" if cuda is not None else ""
        per_step = f"{sync['per_step']:g}" if sync else "not counted"
        lines.append(f"| {variant} | {statistics.median(ms):.3f} ({min(ms):.3f}-{max(ms):.3f}) | "
                     f"{per_step}{cuda} | {methods} |")
    lines.append("")
    theirs = "hf Trainer, filter off"
    pairs = [("ours", "bare distill"), (theirs, "bare plain"), ("hf Trainer, filter on", "bare plain")]
    for a, b in pairs:
        if a in seconds and b in seconds:
            median, lo, hi = paired(seconds, a, b)
            lines.append(f"{a} - {b}: {median:+.3f} ms/step (per repeat {lo:+.3f} to {hi:+.3f})")
    if {"ours", "bare distill", "hf Trainer, filter off", "bare plain"} <= seconds.keys():
        ours_extra, theirs_extra = paired(seconds, "ours", "bare distill")[0], paired(seconds, theirs, "bare plain")[0]
        verdict = "met" if ours_extra <= theirs_extra + 0.3 else "missed"
        lines.append(f"target ours - bare <= ({theirs} - bare) + 0.3 ms: {ours_extra:+.3f} vs "
                     f"{theirs_extra + 0.3:+.3f}: {verdict}")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-grad-norm", type=float, default=0.0, help="0 (DeiT's default): no clipping")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None, help="default: cpu on CPU, wall on CUDA")
    parser.add_argument("--profile", action="store_true", help="cProfile ours and bare distill (untimed runs)")
    parser.add_argument("--no-syncs", action="store_true", help="skip the sync-counting runs")
    parser.add_argument("--json", type=Path, default=None, help="append the figures as one JSON line")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="2 repeats x 3 steps: checks that it runs")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.steps, args.warmup, args.repeats = 3, 1, 2
    args.clock = args.clock or ("wall" if args.device.startswith("cuda") else "cpu")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# {hardware}, {args.threads} thread(s), torch {torch.__version__}{load}; {' '.join(sys.argv)}\n"
          f"# batch {args.batch_size}, {args.repeats} repeats x {args.steps} steps (+{args.warmup} warm-up), "
          f"{args.clock} clock, max_grad_norm {args.max_grad_norm}", flush=True)
    models = build_models(args.seed)
    dataset = TinyImages((args.warmup + args.steps) * args.batch_size, args.seed)  # one epoch: no epoch boundary
    seconds = time_variants(args, models, dataset, device, clock)
    syncs = {} if args.no_syncs else count_syncs(args, models, dataset, device)
    lines = report(seconds, syncs, args)
    for variant, sync in syncs.items():
        for site, per_step in sync["sites"].items():
            lines.append(f"  {variant}: {per_step:g}/step at {site}")
    print("\n" + "\n".join(lines), flush=True)
    if args.profile:
        rows = itemize(args, models, dataset, device, clock)
        print("\n## DistillationTrainer's step vs the bare loop, item by item (each call timed alone, us/step)\n")
        print("| item | ours | bare loop | extra |\n|---|---:|---:|---:|")
        for item, ours, bare in rows:
            print(f"| {item} | {ours:.1f} | {bare:.1f} | {ours - bare:+.1f} |")
        print(f"| total of these items | | | {sum(o - b for _, o, b in rows):+.1f} |", flush=True)
        for variant in ("ours", "bare distill"):
            stats = profile_variant(variant, args, models, dataset, device, clock)
            print(f"\n## cProfile, {variant}: ms/step (profiled, so inflated), four levels deep\n")
            print("\n".join(call_tree(stats, args.steps)), flush=True)
    result = {"bench": "overhead", "device": hardware, "clock": args.clock, "steps": args.steps,
              "ms_per_step": {v: [1000 * s for s in samples] for v, samples in seconds.items()}, "syncs": syncs}
    if args.json:
        with args.json.open("a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()

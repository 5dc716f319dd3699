"""Training the table's runs: the data subset, the CNN teacher (examples/train_teacher.py), hf_deit's students and
transformer teacher, one configuration per seed (reused when finished) and the summary over seeds."""

from __future__ import annotations

import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from hf_deit import DeiTConfig, DeiTForImageClassification, DeiTTrainingArguments
from hf_deit.data import DataArguments, build_datasets
from hf_deit.distillation.trainer import DistillationTrainer

from .configurations import CONFIGURATIONS, LABEL_SMOOTHING, REPO_ROOT, Configuration, TableArguments, regularisers
from .timm_peer import train_timm_peer


# --- data -------------------------------------------------------------------------------------------------------
def balanced_subset(args: TableArguments) -> Path:
    """The first N images of each class (sorted names), hard-linked into <output_dir>/data: `max_train_samples`
    would take the first N rows of a class-sorted folder, i.e. only the first classes."""
    source, dest = Path(args.dataset_name), Path(args.output_dir) / "data"
    if not (source / "train").is_dir() or not (source / args.eval_split).is_dir():
        raise FileNotFoundError(f"{source} needs train/<class>/ and {args.eval_split}/<class>/ folders")
    marker = dest / "subset.json"
    wanted = {"source": str(source.resolve()), "train": args.train_per_class, "eval": args.eval_per_class,
              "eval_split": args.eval_split}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    for split, count in (("train", args.train_per_class), (args.eval_split, args.eval_per_class)):
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            images = sorted(p for p in class_dir.iterdir() if p.is_file())[:count]
            if len(images) < count:
                raise ValueError(f"{class_dir} holds {len(images)} images, fewer than the {count} asked for")
            (dest / split / class_dir.name).mkdir(parents=True)
            for image in images:
                try:
                    (dest / split / class_dir.name / image.name).hardlink_to(image)
                except OSError:  # another filesystem
                    shutil.copy(image, dest / split / class_dir.name / image.name)
    marker.write_text(json.dumps(wanted))
    return dest


def data_arguments(args: TableArguments, folder: Path, device_augment: bool | None = None) -> DataArguments:
    """hf_deit's data settings of the table; `device_augment` (default: args.device_augment) only where DataArguments
    has the field (the GPU data path); timm's peer passes False."""
    device_augment = args.device_augment if device_augment is None else device_augment
    extra = {}
    if device_augment and "device_augment" in DataArguments.__dataclass_fields__:
        extra["device_augment"] = True
    elif device_augment:
        print("[data] this hf_deit has no DataArguments.device_augment: the CPU data path is used")
    return DataArguments(
        dataset_name=str(folder), eval_split=args.eval_split, image_size=args.image_size,
        data_cache_dir=str(Path(args.output_dir) / "cache"), **regularisers(args)["data"], **extra,
    )


# --- runs -------------------------------------------------------------------------------------------------------
def train_cnn_teacher(args: TableArguments, data_args: DataArguments, run_dir: Path) -> dict:
    """examples/train_teacher.py as a user runs it (same data settings); its eval_results.json gives the figures."""
    data = dict(dataset_name=data_args.dataset_name, eval_split=data_args.eval_split,
                image_size=data_args.image_size, data_cache_dir=data_args.data_cache_dir, **regularisers(args)["data"],
                **regularisers(args)["mixing"], label_smoothing=LABEL_SMOOTHING)
    flags = dict(model_name=args.teacher_cnn, epochs=args.teacher_epochs, batch_size=args.batch_size,
                 learning_rate=args.learning_rate, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                 num_workers=args.num_workers, seed=args.seeds[0], output_dir=run_dir / "model", **data)
    command = [sys.executable, str(REPO_ROOT / "examples" / "train_teacher.py"),
               *(item for name, value in flags.items() for item in (f"--{name}", str(value)))]
    result = subprocess.run(command, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"train_teacher.py failed (exit {result.returncode}): {' '.join(command)}")
    record = json.loads((run_dir / "model" / "eval_results.json").read_text())
    return {"top1": {"fused": record["eval_top1"]}, "curve": record["curve"], "epochs": record["epochs"],
            "params": record["params"], "architecture": f"timm {args.teacher_cnn}", "optimizer": record["optimizer"]}


def student_config(args: TableArguments, kind: str, labels: list[str], teacher: bool = False) -> DeiTConfig:
    preset = "deit_tiny_distilled_patch16_224" if kind == "distilled" else "deit_tiny_patch16_224"
    sizes = (args.teacher_vit_hidden_size, args.teacher_vit_num_hidden_layers, args.teacher_vit_num_attention_heads) \
        if teacher else (args.hidden_size, args.num_hidden_layers, args.num_attention_heads)
    return DeiTConfig.from_preset(
        preset, image_size=args.image_size, patch_size=args.patch_size, hidden_size=sizes[0],
        num_hidden_layers=sizes[1], num_attention_heads=sizes[2], **regularisers(args)["model"],
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}, crop_pct=1.0,
    )


def training_arguments(args: TableArguments, configuration: Configuration, run_dir: Path, seed: int):
    """DeiTTrainingArguments of an hf_deit run: the table's budget, this configuration's distillation."""
    distillation, teacher = configuration.distillation, configuration.teacher
    return DeiTTrainingArguments(
        output_dir=str(run_dir), distillation_type=distillation,
        distillation_alpha=args.soft_alpha if distillation == "soft" else args.hard_alpha,
        distillation_tau=args.soft_tau,
        teacher_name_or_path=str(Path(args.output_dir) / teacher / "model") if teacher else None,
        num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=256,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        # the table's budget (a few epochs): transformers' cosine from 0 to 0 per step, as the timm peer runs, and no
        # EMA (0.99996 averages over ~25k steps; these runs have hundreds)
        lr_schedule="transformers", model_ema_decay=0.0, **regularisers(args)["mixing"], label_smoothing_factor=LABEL_SMOOTHING,
        eval_strategy="epoch",
        save_strategy="no", logging_steps=10, report_to="none", seed=seed,
        dataloader_num_workers=args.num_workers,
    )


def train_hf_deit(args, name, data, data_args, run_dir: Path, seed: int) -> dict:
    """A student (or the transformer teacher) with hf_deit's DistillationTrainer."""
    configuration = CONFIGURATIONS[name]
    train_dataset, eval_dataset, labels = data
    training_args = training_arguments(args, configuration, run_dir, seed)
    if name == "hard_token_cached":
        training_args.teacher_cache = teacher_cache(Path(args.output_dir) / configuration.teacher / "model", data_args)
    torch.manual_seed(seed)  # the same initial weights for every run with this seed and architecture
    config = student_config(args, configuration.kind, labels, teacher=configuration.role == "teacher")
    model = DeiTForImageClassification(config)
    trainer = DistillationTrainer(model=model, args=training_args, data_args=data_args,
                                  train_dataset=train_dataset, eval_dataset=eval_dataset)
    trainer.train()
    # Teachers: load_teacher reads the folder. Students: `hf-deit analyze <run>/model` reads it (the token analysis).
    trainer.save_model(str(run_dir / "model"))  # weights + config + image processor
    evals = [entry for entry in trainer.state.log_history if "eval_fused_top1" in entry]
    heads = ("fused", "cls", "distillation")
    final = {head: evals[-1][f"eval_{head}_top1"] for head in heads if f"eval_{head}_top1" in evals[-1]}
    return {"top1": final, "curve": [[round(e["epoch"]), e["eval_fused_top1"]] for e in evals],
            "epochs": args.epochs, "params": sum(p.numel() for p in model.parameters()),
            "architecture": f"hf_deit {'distilled ' if configuration.token else ''}DeiT "
                            f"{model.config.hidden_size}x{model.config.num_hidden_layers}"}


def teacher_cache(teacher_dir: Path, data_args: DataArguments) -> str:
    """The CNN teacher's cache over the training images (made once, beside the teacher; a cache that no longer
    matches the teacher or the data is refused when loaded, so it is remade then)."""
    from hf_deit.distillation.teacher import load_teacher
    from hf_deit.distillation.teacher_cache import (
        CachedTeacher,
        StaleTeacherCacheError,
        cache_teacher_cli,
        weights_sha256,
    )

    path = str(teacher_dir.parent / "cache-train.parquet")
    try:
        sha256 = weights_sha256(load_teacher(str(teacher_dir)).model)
        CachedTeacher.load(path, teacher=str(teacher_dir), teacher_sha256=sha256)
    except (FileNotFoundError, StaleTeacherCacheError):
        print(f"[teacher cache] one pass of {teacher_dir} over the training images -> {path}")
        cache_teacher_cli(str(teacher_dir), data_args.dataset_name, path, split=data_args.train_split)
    return path


# Read only by distilled runs: a sweep over them (e.g. --soft_alpha 0.5) reuses the teachers and the plain student.
DISTILLATION_SETTINGS = ("hard_alpha", "soft_alpha", "soft_tau")


def run_budget(budget: dict, configuration: Configuration) -> dict:
    """The part of the table's settings that this configuration's runs depend on (what reuse compares)."""
    if configuration.distillation in ("soft", "hard"):
        return budget
    return {key: value for key, value in budget.items() if key not in DISTILLATION_SETTINGS}


def run_one(args: TableArguments, name: str, seed: int, data_args: DataArguments, data, budget: dict) -> dict:
    """Train (or reuse) one configuration with one seed; its result.json goes in its run folder."""
    configuration = CONFIGURATIONS[name]
    budget = run_budget(budget, configuration)
    # Teachers live at <output_dir>/<name> (students load <name>/model); students at <name>/seed<k>.
    teacher = configuration.role == "teacher"
    run_dir = Path(args.output_dir) / name if teacher else Path(args.output_dir) / name / f"seed{seed}"
    result_file = run_dir / "result.json"
    tag = name if teacher else f"{name} seed {seed}"
    if result_file.is_file() and not args.overwrite:
        previous = json.loads(result_file.read_text())
        # run_budget on both sides: a record written with settings this run does not read still matches.
        if run_budget(previous.get("budget") or {}, configuration) == budget and previous.get("seed") == seed:
            print(f"[{tag}] reusing {result_file}")
            return previous
        print(f"[{tag}] {result_file} was trained with other settings: training again")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    print(f"[{tag}] {configuration.label}")
    start = time.perf_counter()
    if name == "teacher_cnn":
        result = train_cnn_teacher(args, data_args, run_dir)
    elif configuration.role == "peer":
        result = train_timm_peer(args, configuration, data(peer=True), data_args, run_dir, seed)
    else:
        result = train_hf_deit(args, name, data(), data_args, run_dir, seed)
    result.update(name=name, label=configuration.label, role=configuration.role,
                  distillation=configuration.distillation, teacher=configuration.teacher, token=configuration.token,
                  seed=seed, wall_s=round(time.perf_counter() - start, 1),
                  load_1min=round(os.getloadavg()[0], 1),  # > cores: other work shared the machine
                  budget=budget)
    result_file.write_text(json.dumps(result, indent=1))
    print(f"[{tag}] top-1 {result['top1']} in {result['wall_s']:.0f} s")
    return result


def summarize(seed_runs: list[dict]) -> dict:
    """One configuration over its seeds: mean top-1 per head (`top1`), the per-seed values (`top1_seeds`), their
    sample standard deviation (`top1_std`, 0 for one seed), the mean learning curve, total wall time."""
    first = seed_runs[0]
    summary = {key: first[key] for key in ("name", "label", "role", "distillation", "teacher", "token", "epochs",
                                            "params", "architecture")}
    if "optimizer" in first:  # the CNN teacher's (examples/train_teacher.py's own recipe)
        summary["optimizer"] = first["optimizer"]
    heads = list(first["top1"])
    summary["seeds"] = [run["seed"] for run in seed_runs]
    summary["top1_seeds"] = {head: [run["top1"][head] for run in seed_runs] for head in heads}
    summary["top1"] = {head: statistics.fmean(values) for head, values in summary["top1_seeds"].items()}
    summary["top1_std"] = {head: statistics.stdev(values) if len(values) > 1 else 0.0
                           for head, values in summary["top1_seeds"].items()}
    curves = [run["curve"] for run in seed_runs]
    summary["curve"] = [[points[0][0], statistics.fmean(point[1] for point in points)] for points in zip(*curves)]
    summary["wall_s"] = round(sum(run["wall_s"] for run in seed_runs), 1)
    summary["load_1min"] = max(run.get("load_1min", 0.0) for run in seed_runs)
    summary["runs"] = seed_runs
    return summary


def run_all(args: TableArguments, on_result=None) -> list[dict]:
    """Every configuration of `args`, in order; `on_result(results so far)` after each (the page is rewritten then,
    so that a run cut short still leaves a page of what finished)."""
    folder = balanced_subset(args)
    data_args, peer_args = data_arguments(args, folder), data_arguments(args, folder, device_augment=False)
    # The datasets, built on the first in-process run (not for a CNN teacher only) and shared by all of them; timm's
    # peer reads float batches, so it gets its own when hf_deit's runs use the GPU data path.
    @functools.cache
    def data(peer: bool = False) -> tuple:
        if peer and peer_args == data_args:
            return data(False)  # the same settings: the same datasets
        return tuple(build_datasets(peer_args if peer else data_args, seed=args.seeds[0]))

    # What a finished run must have been trained with to be reused (not where it is, nor which others run).
    where = ("configurations", "output_dir", "docs_dir", "overwrite", "seeds")
    budget = {key: value for key, value in asdict(args).items() if key not in where}
    # Bumped when examples/train_teacher.py's recipe changes (2: no weight decay on norms and biases), so that runs
    # made with an older teacher, and the students it taught, are trained again rather than reused.
    budget["teacher_recipe"] = 2
    results = []
    for name in args.configurations:
        seeds = args.seeds[:1] if CONFIGURATIONS[name].role == "teacher" else args.seeds
        results.append(summarize([run_one(args, name, seed, data_args, data, budget) for seed in seeds]))
        if on_result is not None:
            on_result(results)
    return results

"""Nothing lost, nothing silently wrong: resume flags, incomplete or corrupt checkpoints, runs that cannot train,
non-finite weights, checks before the data scan, launch mistakes, and data/config edge cases."""

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hf_deit import DeiTConfig, DeiTTrainingArguments, DistillationTrainer
from hf_deit.distillation.checkpoints import CheckpointError
from hf_deit.distillation.teacher import TeacherMismatchError
from hf_deit.distillation.student import prepare_student

from test_trainer import TINY, args, dataset, student

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--image_size", "32", "--patch_size", "16", "--hidden_size", "32", "--num_hidden_layers", "1",
              "--num_attention_heads", "2"]


def image_folder(root: Path, classes=("a", "b", "c", "d"), per_class=2, empty=()) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        for index in range(0 if name in empty else per_class):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def distill_main():
    spec = importlib.util.spec_from_file_location("distill_example", ROOT / "examples" / "distill.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.main


def run_distill(main, monkeypatch, *flags: str) -> None:
    # checkpoints by steps, every one kept (the recipe: one per epoch, the newest 2): the tests list them
    common = ["--use_cpu", "--report_to", "none", "--eval_split", "train", "--disable_tqdm", "True",
              "--per_device_train_batch_size", "4", "--save_strategy", "steps", "--save_total_limit", "0"]
    monkeypatch.setattr(sys, "argv", ["distill.py", *TINY_FLAGS, *common, *flags])
    main()


@pytest.fixture
def no_scan(monkeypatch):
    """Fail loudly if the data pipeline reaches its image scan (the expensive step on ImageNet)."""
    import hf_deit.data.pipeline as pipeline

    def scan(*args, **kwargs):
        raise AssertionError("the image scan ran before the check")

    monkeypatch.setattr(pipeline, "drop_broken_images", scan)


# --- 2. --resume_from_checkpoint True / a path, from the command line -----------------------------------------------
def test_distill_resumes_from_true_and_from_a_path(distill_main, monkeypatch, tmp_path):
    data, out = image_folder(tmp_path / "data"), tmp_path / "out"
    common = ["--dataset_name", str(data), "--distillation_type", "none", "--save_steps", "1",
              "--logging_steps", "1", "--output_dir", str(out)]
    run_distill(distill_main, monkeypatch, *common, "--max_steps", "2")
    run_distill(distill_main, monkeypatch, *common, "--max_steps", "3", "--resume_from_checkpoint", "True")
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == [1, 2, 3]  # steps 1-2 came with checkpoint-2; only step 3 was trained again
    other = tmp_path / "other"
    run_distill(distill_main, monkeypatch, *common[:-1], str(other), "--max_steps", "3",
                "--resume_from_checkpoint", str(out / "checkpoint-1"))
    resumed = json.loads((other / "trainer_state.json").read_text())
    assert [entry["step"] for entry in resumed["log_history"] if "loss" in entry] == [1, 2, 3]
    assert resumed["log_history"][0] == state["log_history"][0]  # step 1 is checkpoint-1's record, not retrained


def test_resume_true_without_checkpoints_says_so(tmp_path):
    trainer = DistillationTrainer(
        model=student(), args=args(tmp_path, distillation_type="none"), train_dataset=dataset()
    )
    with pytest.raises(CheckpointError, match="no checkpoint-"):
        trainer.train(resume_from_checkpoint="True")


# --- 3. runs that cannot train are refused ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [dict(num_train_epochs=0), dict(num_train_epochs=-2), dict(max_steps=0), dict(learning_rate=0.0)],
)
def test_runs_that_cannot_train_are_refused(tmp_path, overrides):
    with pytest.raises(ValueError, match="trains nothing"):
        DeiTTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **overrides)


# --- 4. incomplete or corrupt checkpoints -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    trainer = DistillationTrainer(
        model=student(), args=args(out, distillation_type="none", max_steps=2, save_strategy="steps", save_steps=1),
        train_dataset=dataset(),
    )
    trainer.train()
    return out / "checkpoint-1"


def resume(tmp_path, source: Path, remove=(), truncate=()):
    target = tmp_path / "run" / source.name
    shutil.copytree(source, target)
    for name in remove:
        (target / name).unlink()
    for name in truncate:
        data = (target / name).read_bytes()
        (target / name).write_bytes(data[: len(data) // 2])
    trainer = DistillationTrainer(
        model=student(), args=args(tmp_path / "run", distillation_type="none", max_steps=2), train_dataset=dataset()
    )
    trainer.train(resume_from_checkpoint=str(target))
    return trainer


@pytest.mark.parametrize("missing", ["optimizer.pt", "scheduler.pt"])
def test_checkpoint_without_optimizer_or_scheduler_stops_naming_it(tmp_path, checkpoint, missing):
    with pytest.raises(CheckpointError, match=missing):
        resume(tmp_path, checkpoint, remove=[missing])


@pytest.mark.parametrize("corrupt", ["optimizer.pt", "model.safetensors", "trainer_state.json"])
def test_corrupt_checkpoint_file_is_named(tmp_path, checkpoint, corrupt):
    with pytest.raises(CheckpointError, match=corrupt):
        resume(tmp_path, checkpoint, truncate=[corrupt])


def test_checkpoint_without_rng_state_resumes_with_a_warning(tmp_path, checkpoint, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_deit.distillation.checkpoints"):
        trainer = resume(tmp_path, checkpoint, remove=["rng_state.pth"])
    assert trainer.state.global_step == 2
    assert "rng_state.pth" in caplog.text and "bit-exact" in caplog.text


# --- 5. a diverged step is never saved ----------------------------------------------------------------------------
def test_non_finite_weights_are_never_checkpointed(tmp_path):
    model = student()
    # The first step's gradient blows up (finite loss, infinite gradient): AdamW then writes NaN into the weights.
    model.distillation_classifier.weight.register_hook(lambda grad: grad * float("inf"))
    trainer = DistillationTrainer(
        model=model, args=args(tmp_path, distillation_type="none", max_steps=3, save_strategy="steps", save_steps=1),
        train_dataset=dataset(),
    )
    with pytest.raises(FloatingPointError):
        trainer.train()
    for folder in tmp_path.glob("checkpoint-*"):
        weights = load_file(folder / "model.safetensors")
        assert all(torch.isfinite(value).all() for value in weights.values()), f"{folder.name} holds NaN/inf"
    with pytest.raises(FloatingPointError, match="not saved"):
        trainer.save_model(str(tmp_path / "final"))
    assert not (tmp_path / "final" / "model.safetensors").exists()


# --- 6. checks before the expensive data scan ---------------------------------------------------------------------
def test_missing_teacher_path_is_named_before_the_scan(distill_main, monkeypatch, tmp_path, no_scan):
    data = image_folder(tmp_path / "data")
    missing = tmp_path / "runs" / "teacher"
    with pytest.raises(FileNotFoundError, match=f"teacher path {missing} does not exist"):
        run_distill(distill_main, monkeypatch, "--dataset_name", str(data), "--teacher_name_or_path", str(missing),
                    "--output_dir", str(tmp_path / "out"))


def test_unknown_timm_teacher_says_it_is_the_teacher(distill_main, monkeypatch, tmp_path, no_scan):
    with pytest.raises(ValueError, match="Unknown teacher 'regnety_160000'"):
        run_distill(distill_main, monkeypatch, "--dataset_name", str(tmp_path), "--teacher_name_or_path",
                    "regnety_160000", "--output_dir", str(tmp_path / "out"))


def test_teacher_class_count_is_checked_before_the_scan(distill_main, monkeypatch, tmp_path, no_scan):
    data = image_folder(tmp_path / "data")  # 4 classes
    teacher_dir = tmp_path / "teacher"
    # a transformers-format classifier with 3 classes
    prepare_student("deit_tiny_distilled_patch16_224", num_labels=3, **TINY).save_pretrained(teacher_dir)
    with pytest.raises(TeacherMismatchError, match="3 classes but the student has 4"):
        run_distill(distill_main, monkeypatch, "--dataset_name", str(data), "--teacher_name_or_path",
                    str(teacher_dir), "--output_dir", str(tmp_path / "out"))


def test_student_size_is_checked_before_the_data_is_read(distill_main, monkeypatch, tmp_path):
    # the dataset path does not exist: any attempt to read it would fail differently
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        run_distill(distill_main, monkeypatch, "--dataset_name", str(tmp_path / "nothing"), "--patch_size", "5",
                    "--output_dir", str(tmp_path / "out"))


# --- 7. launch mistakes, DDP settings ------------------------------------------------------------------------------
def test_multi_process_launch_seen_as_one_process_stops(tmp_path, monkeypatch):
    from hf_deit.distillation.setup import check_launch

    # What `accelerate launch --multi_gpu --num_processes 2` without --use_cpu gives on a machine without GPU: every
    # process has WORLD_SIZE=2 and a process group, but the Trainer's world_size is 1. (A real 2-process launch
    # takes ~30 s here, so the check itself is called with the launcher's environment.)
    training_args = DeiTTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="Trainer sees one.*--use_cpu --ddp_backend gloo"):
        check_launch(training_args)


def test_ddp_does_not_search_for_unused_parameters_of_a_deit_student(tmp_path):
    trainer = DistillationTrainer(model=student(), args=args(tmp_path, distillation_type="none"))
    assert trainer.args.ddp_find_unused_parameters is False


# --- 8. data and config edge cases ---------------------------------------------------------------------------------
def test_empty_class_folder_gives_one_label_set_in_loader_and_shards(tmp_path):
    from hf_deit.data import load_image_dataset, read_class_index, shard_dataset

    folder = image_folder(tmp_path / "data", classes=("a", "b", "c"), empty=("b",))
    loaded = load_image_dataset(str(folder), "train")
    shard_dataset(folder, tmp_path / "shards", num_shards=2)
    assert loaded.features["label"].names == read_class_index(tmp_path / "shards" / "classes.tsv") == ["a", "b", "c"]
    assert sorted(loaded["label"]) == [0, 0, 2, 2]
    sharded = load_image_dataset(str(tmp_path / "shards"), "train")
    assert sorted(sharded["label"]) == [0, 0, 2, 2]


def test_stray_tar_in_an_image_folder_is_ignored(tmp_path, caplog):
    from hf_deit.data import load_image_dataset

    folder = image_folder(tmp_path / "data")
    with tarfile.open(folder / "train" / "a" / "backup.tar", "w"):
        pass
    with caplog.at_level(logging.WARNING, logger="hf_deit.data.loading"):
        loaded = load_image_dataset(str(folder), "train")
    assert len(loaded) == 8 and loaded.features["label"].names == ["a", "b", "c", "d"]
    assert "backup.tar" in caplog.text


@pytest.mark.parametrize(
    "overrides, message",
    [(dict(patch_size=0), "patch_size=0"), (dict(num_attention_heads=0), "num_attention_heads=0"),
     (dict(hidden_size=-32), "hidden_size=-32"), (dict(image_size=-224), "image_size=-224"),
     (dict(num_hidden_layers=-1), "num_hidden_layers=-1")],
)
def test_zero_or_negative_sizes_raise_the_configs_error(overrides, message):
    with pytest.raises(ValueError, match=f"{message} must be a positive integer"):
        DeiTConfig(**{**TINY, **overrides})

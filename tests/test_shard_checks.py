"""Shards and launches checked before training (issue 25): a training stream whose shards the ranks x DataLoader
workers cannot share evenly is refused, `hf-deit shard` writes shards at most one image apart and says which reader
counts they suit, and a multi-process launch in which the Trainer is not in distributed mode is refused before the
data is read. The two torchrun tests run examples/distill.py on 2 gloo processes and must fail before any step."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_deit.data.shards import check_stream_shards, describe_shards, shard_dataset, shard_sizes, suited_readers

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--image_size", "32", "--patch_size", "16", "--hidden_size", "32", "--num_hidden_layers", "1",
              "--num_attention_heads", "2", "--distillation_type", "none", "--report_to", "none",
              "--per_device_train_batch_size", "2", "--max_steps", "2", "--save_strategy", "no", "--eval_strategy",
              "no", "--disable_tqdm", "True", "--dataloader_num_workers", "0", "--eval_split", "train"]


def image_folder(root: Path, images: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for index in range(images):
        folder = root / "train" / f"class_{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return root


def torchrun_distill(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(ROOT / "examples" / "distill.py"), *TINY_FLAGS, "--output_dir", str(tmp_path / "out"), *flags]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


# --- `hf-deit shard`: sizes and what it says ------------------------------------------------------------------------
def test_shard_sizes_differ_by_at_most_one_and_add_up():
    assert shard_sizes(50, 4) == [13, 13, 12, 12]  # the split: as even as 50 images in 4 shards can be
    for examples in range(1, 40):
        for shards in range(1, examples + 1):
            sizes = shard_sizes(examples, shards)
            assert sum(sizes) == examples and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_shard_writes_the_sizes_it_reports_and_names_the_reader_counts_they_suit(tmp_path):
    from datasets import load_dataset

    lines = []
    written = shard_dataset(image_folder(tmp_path / "src", images=10), tmp_path / "out", num_shards=4, report=lines.append)
    rows = [load_dataset("parquet", data_files=path, split="train").num_rows for path in sorted(written)]
    assert rows == shard_sizes(10, 4) == [3, 3, 2, 2]
    assert lines == ["train: 10 images in 4 parquet shards of 2-3 images; 4 shards suit 1, 2 or 4 readers "
                     "(ranks x workers)"]
    assert describe_shards("train", [5] * 64, "parquet").endswith(
        "64 shards suit 1, 2, 4, 8, 16, 32 or 64 readers (ranks x workers)")
    assert suited_readers(12) == [1, 2, 3, 4, 6, 12]


def test_the_shard_command_prints_the_reader_counts(tmp_path, capsys):
    from hf_deit.cli import main

    assert main(["shard", str(image_folder(tmp_path / "src", 6)), str(tmp_path / "out"), "--num_shards", "3"]) == 0
    assert "train: 6 images in 3 parquet shards of 2 images; 3 shards suit 1 or 3 readers" in capsys.readouterr().out


# --- the rule -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shards, world, workers", [
    (4, 2, 0), (4, 2, 2), (8, 2, 4), (4, 1, 2), (1, 1, 4),  # even
    (16, 2, 10), (64, 8, 10),  # more workers than a rank's shards: the extra ones idle, the others read 1 shard each
    (1, 2, 0), (3, 4, 0),  # fewer shards than ranks: every rank reads all and keeps its slice of each batch
])
def test_even_splits_are_accepted(shards, world, workers):
    check_stream_shards(shards, world, workers)


def test_shards_the_ranks_cannot_share_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match=r"3 shards, which 2 processes cannot share evenly.*\(2, 1\).*"
                                         r"hf-deit shard SOURCE OUT --num-shards N`, N a multiple of 2.*\(1, 3\)"):
        check_stream_shards(3, 2, 0)


def test_workers_that_cannot_share_a_ranks_shards_are_lowered_to_a_count_that_can():
    assert check_stream_shards(12, 2, 4) == 3  # 6 shards per rank: 4 workers would read 2, 2, 1, 1
    assert check_stream_shards(3, 1, 2) == 1  # one process too: its 2 workers would read 2 and 1 shards
    assert check_stream_shards(16, 1, 10) == 8  # hf-deit shard's default count with the recipe's 10 workers
    assert check_stream_shards(16, 2, 4) == 4 and check_stream_shards(16, 2, 10) == 10  # even / extra ones idle
    assert check_stream_shards(5, 1, 0) == 0


def test_resolve_setup_lowers_uneven_workers_and_says_so(caplog):
    from types import SimpleNamespace

    from hf_deit.distillation.setup import check_stream_shards_for
    args = SimpleNamespace(world_size=1, dataloader_num_workers=10)
    with caplog.at_level("WARNING", logger="hf_deit"):
        check_stream_shards_for(SimpleNamespace(num_shards=16), args)
    assert args.dataloader_num_workers == 8
    assert "--dataloader_num_workers 10 -> 8" in caplog.text and "a multiple of 10" in caplog.text


# --- real 2-process launches ----------------------------------------------------------------------------------------
def test_three_shards_on_two_ranks_are_refused_before_training(tmp_path):
    shard_dataset(image_folder(tmp_path / "src"), tmp_path / "shards", num_shards=3)
    done = torchrun_distill(tmp_path, "--dataset_name", str(tmp_path / "shards"), "--streaming", "--use_cpu",
                            "--ddp_backend", "gloo")
    assert done.returncode != 0
    assert "3 shards, which 2 processes cannot share evenly" in done.stderr, done.stderr[-3000:]
    # Refused at the trainer's start: no step, nothing saved (before the check, this very run trained 2 steps, saved
    # the model and then crashed in the final evaluation's gather, 3 eval shards split 2/1 between the ranks).
    assert "train_runtime" not in done.stdout + done.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_four_shards_on_two_ranks_train(tmp_path):
    """The same run on 4 shards (2 per rank) is accepted and trains (tests/test_epoch.py checks what such runs read)."""
    shard_dataset(image_folder(tmp_path / "src"), tmp_path / "shards", num_shards=4)
    done = torchrun_distill(tmp_path, "--dataset_name", str(tmp_path / "shards"), "--streaming", "--use_cpu",
                            "--ddp_backend", "gloo")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_a_launch_the_trainer_does_not_run_distributed_is_refused_before_the_data(tmp_path):
    """torchrun x 2 with --ddp_backend gloo but without --use_cpu on a machine without GPU: transformers sees 2
    processes in parallel_mode NOT_PARALLEL, never wraps the model in DDP, and each rank trained its own copy
    (exit 0 on both before this check). The dataset path does not exist: reading it would fail otherwise."""
    done = torchrun_distill(tmp_path, "--dataset_name", str(tmp_path / "nothing"), "--ddp_backend", "gloo")
    assert done.returncode != 0
    assert "Launched as 2 processes (WORLD_SIZE=2) but the Trainer sees 2 with parallel_mode=not_parallel" in done.stderr
    assert "add --use_cpu --ddp_backend gloo" in done.stderr
    assert "FileNotFoundError" not in done.stderr


def test_one_process_given_a_ddp_backend_is_told_to_use_a_launcher(tmp_path, monkeypatch):
    from hf_deit import DeiTTrainingArguments

    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"--ddp_backend gloo needs a process group.*torchrun --nproc_per_node N"):
        DeiTTrainingArguments(output_dir=str(tmp_path), ddp_backend="gloo", use_cpu=True, report_to="none")
    # nothing half set up is left behind: the next arguments in this process set up their device
    assert DeiTTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none").world_size == 1

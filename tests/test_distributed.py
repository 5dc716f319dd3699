"""Two DDP processes on CPU (torchrun, gloo): identical student weights on both ranks, each example once per epoch
across the ranks, and a teacher outside DDP."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_stay_in_sync_and_split_the_data(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # torchrun, not `accelerate launch --cpu` (which starts a single process, see ../shared/NOTES.md); --standalone
    # picks a free rendezvous port, so parallel CI jobs on one host do not collide.
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(SCRIPT), str(tmp_path), "--dataset", "map", "--epochs", "2", "--record-ids"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    # DistillationTrainer sets ddp_find_unused_parameters=False for a DeiT student (the script leaves it unset)
    assert "find_unused_parameters=True was specified" not in done.stderr
    reports = [json.loads((tmp_path / f"ids_rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["student_is_ddp"] and not report["teacher_is_ddp"] and not report["teacher_in_student"]
    # 16 examples, 2 per rank per step: each epoch, the two ranks together see every example exactly once.
    for epoch in range(2):
        ids = reports[0]["ids"][epoch] + reports[1]["ids"][epoch]
        assert Counter(ids) == Counter(range(16)), (epoch, sorted(ids))
        assert not set(reports[0]["ids"][epoch]) & set(reports[1]["ids"][epoch])
    a, b = (load_file(tmp_path / f"weights_rank{r}.safetensors") for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(tmp_path / "final" / "model.safetensors")
    assert all(torch.equal(start[k], a[k]) for k in a)  # what rank 0 saved is what both ranks hold
    # the loss parts are logged (averaged over the ranks) in the distributed run too
    logs = [entry for entry in reports[0]["log_history"] if "loss" in entry]
    assert logs and all("distillation_loss" in entry and "base_loss" in entry for entry in logs)
    # DistillationTrainer.close() left no process group and no DDP wrapper (which holds the group) to interpreter exit
    for rank in (0, 1):
        closed = json.loads((tmp_path / f"closed_rank{rank}.json").read_text())
        assert closed == {"ddp_wrappers_alive": 0, "process_group": False}, (rank, closed)


def test_repeated_augmentation_gives_each_rank_what_timm_would(tmp_path):
    """RA through the Trainer's loader: accelerate's own batch sharding of RepeatAugBatchOrder must hand each rank
    exactly timm's RepeatAugSampler(rank=r) sequence (fails if accelerate shards batches otherwise)."""
    from hf_deit.data import repeat_aug_sampler

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(SCRIPT), str(tmp_path), "--dataset", "map", "--epochs", "1", "--record-ids", "--repeated-aug", "3",
               "--mixup", "0"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    for rank in (0, 1):
        ids = json.loads((tmp_path / f"ids_rank{rank}.json").read_text())["ids"][0]
        expected = repeat_aug_sampler(list(range(16)), 3, num_replicas=2, rank=rank, seed=42)
        expected.set_epoch(0)
        assert ids == list(expected), rank

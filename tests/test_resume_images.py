"""Kill -9 a training on real JPEGs with the full default recipe, resume it, and reach the uninterrupted run's weights
bit for bit: map-style and streamed data, 0 and 2 DataLoader workers.

Recipe (DataArguments' defaults): RandomResizedCrop, flip, RandAugment, random erasing, Mixup/CutMix, label smoothing,
repeated augmentation x3; student with drop path 0.1; hard distillation. 16 photos x 3 repeats / batch 6 = 8 steps
per pass; checkpoints every 5 steps; killed after step 11, resumed from checkpoint-10 (second pass, batch 2), 12 steps.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "scripts" / "train_images.py"
ROOT = Path(__file__).resolve().parents[1]
STEPS = ("--max-steps", "12", "--save-steps", "5")


@pytest.fixture(scope="module")
def photo_folders(tmp_path_factory, imagenet_photos):
    """16 of foolbox's ImageNet photos at 64 px in 4 class folders, and the same as 4 parquet shards."""
    from hf_deit.data import shard_dataset

    root = tmp_path_factory.mktemp("photos")
    folder = root / "folder"
    for index, (path, _) in enumerate(imagenet_photos[:16]):
        target = folder / "train" / f"class_{index % 4}"
        target.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").resize((64, 64), Image.BICUBIC).save(target / f"{index}.JPEG", quality=90)
    shard_dataset(folder, root / "shards", num_shards=4, format="parquet")
    return {"map": folder, "stream": root / "shards"}


def run(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), str(data), str(out), *STEPS, *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("kind", ["map", "stream"])
def test_kill_9_and_resume_on_images_is_bit_exact(photo_folders, tmp_path, kind, workers):
    data = photo_folders[kind]
    extra = ("--workers", workers, *(("--stream",) if kind == "stream" else ()))
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = run(data, full, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    crash = run(data, killed, *extra, "--kill-at-step", "11")
    assert crash.returncode == -9, crash.stderr[-3000:]
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    resumed = run(data, killed, *extra, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_file(full / "weights.safetensors"), load_file(killed / "weights.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst == 0.0, f"resumed weights differ from the uninterrupted run's by up to {worst:.3g}"
    # and the resumed run trained: its weights moved away from the checkpoint it started from
    start = load_file(killed / "checkpoint-10" / "model.safetensors")
    assert any(not torch.equal(start[k], b[k]) for k in start)

"""Kill -9 a training on real JPEGs with the full default recipe, resume it, and reach the uninterrupted run's weights
bit for bit: map-style and streamed data, 0 and 2 DataLoader workers. Runs that do not depend on each other are
started side by side.

Recipe (DataArguments' defaults): RandomResizedCrop, flip, RandAugment, random erasing, Mixup/CutMix, label smoothing,
repeated augmentation x3; student with drop path 0.1; hard distillation. An epoch is the paper's: 16 samples (a third
of the 16 photos, each 3 times) / batch 4 = 4 steps; checkpoints every 5 steps; killed after step 11, resumed from
checkpoint-10 (third epoch, batch 2), 12 steps. The stream has a known size (its parquet footers), so the Trainer
counts its epochs and resumes inside one (hf_deit.data.EpochLoader).
"""

import os
import shutil
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


def start(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), str(data), str(out), *STEPS, *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(*runs: subprocess.Popen) -> list[int]:
    """Wait for runs started side by side (the machine has 2 cores; each run is mostly start-up)."""
    codes = []
    for process in runs:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode in (0, -9), stderr[-3000:]
        codes.append(process.returncode)
    return codes


def assert_same_weights(full: Path, resumed: Path) -> None:
    a, b = load_file(full / "weights.safetensors"), load_file(resumed / "weights.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst == 0.0, f"resumed weights differ from the uninterrupted run's by up to {worst:.3g}"
    # and the resumed run trained: its weights moved away from the checkpoint it started from
    start_weights = load_file(resumed / "checkpoint-10" / "model.safetensors")
    assert any(not torch.equal(start_weights[k], b[k]) for k in start_weights)


def test_map_style_resume_is_bit_exact_with_0_and_2_workers(photo_folders, tmp_path):
    """Each image is augmented under a seed from (epoch, position), so 0 and 2 workers give the same run: one
    uninterrupted reference (0 workers), one run killed with 2 workers, resumed once with 0 and once with 2."""
    data = photo_folders["map"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    killing = start(data, killed, "--workers", "2", "--kill-at-step", "11")
    assert finish(start(data, full, "--workers", "0"), killing) == [0, -9]
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    resumed = {workers: tmp_path / f"resumed_{workers}" for workers in ("0", "2")}
    for out in resumed.values():
        shutil.copytree(killed, out)
    assert finish(*(start(data, out, "--workers", w, "--resume") for w, out in resumed.items())) == [0, 0]
    for out in resumed.values():
        assert_same_weights(full, out)


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_device_augment_resume_is_bit_exact(photo_folders, tmp_path, kind):
    """--device_augment: workers hand over seeds drawn under each image's seed, the step augments from them alone, so
    a resumed run augments as the uninterrupted one (killed with 2 workers; map-style resumed with 0, as any worker
    count gives the same run; a stream with 2, its order depending on the worker count)."""
    data, stream = photo_folders[kind], ("--stream",) if kind == "stream" else ()
    full, killed = tmp_path / "full", tmp_path / "killed"
    reference_workers = "0" if kind == "map" else "2"
    killing = start(data, killed, *stream, "--device-augment", "--workers", "2", "--kill-at-step", "11")
    assert finish(start(data, full, *stream, "--device-augment", "--workers", reference_workers), killing) == [0, -9]
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    resume_workers = "0" if kind == "map" else "2"
    assert finish(start(data, killed, *stream, "--device-augment", "--workers", resume_workers, "--resume")) == [0]
    assert_same_weights(full, killed)


def test_streaming_resume_is_bit_exact_with_0_and_2_workers(photo_folders, tmp_path):
    """A stream's order depends on the number of workers (each reads its own shards), so each count has its own
    uninterrupted reference."""
    data = photo_folders["stream"]
    runs = {}
    for workers in ("0", "2"):
        extra = ("--stream", "--workers", workers)
        runs[workers] = (tmp_path / f"full_{workers}", tmp_path / f"killed_{workers}", extra)
    started = []
    for full, killed, extra in runs.values():
        started += [start(data, full, *extra), start(data, killed, *extra, "--kill-at-step", "11")]
    assert finish(*started) == [0, -9, 0, -9]
    for _, killed, _ in runs.values():
        assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    assert finish(*(start(data, killed, *extra, "--resume") for _, killed, extra in runs.values())) == [0, 0]
    for full, killed, _ in runs.values():
        assert_same_weights(full, killed)

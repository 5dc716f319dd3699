"""What an epoch is (hf_deit/data/epoch.py): the paper's RASampler count per rank, equal to timm's sampler; the
Trainer's step count on ImageNet; one epoch on real photos through DistillationTrainer, map-style and streamed, on 1
and 2 processes."""

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.data_loader import BatchSamplerShard
from datasets import Dataset
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import BatchSampler

from hf_deit.data import DataArguments, EpochLoader, RepeatAugBatchOrder, batches_per_epoch, samples_per_epoch
from hf_deit.data.epoch import LAP_EPOCH_STRIDE, record_stream_size
from hf_deit.distillation.setup import _stream_max_steps

IMAGENET_TRAIN_SIZE = 1_281_167
ROOT = Path(__file__).resolve().parents[1]


def official_rasampler_count(dataset_size: int, world_size: int) -> int:
    """facebookresearch/deit samplers.py, RASampler.__init__: num_selected_samples, verbatim."""
    return int(math.floor(dataset_size // 256 * 256 / world_size))


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("dataset_size", [256, 257, 1000, 50_000, IMAGENET_TRAIN_SIZE])
def test_samples_per_epoch_is_the_official_rasampler_count(dataset_size, world_size):
    assert samples_per_epoch(dataset_size, world_size) == official_rasampler_count(dataset_size, world_size)


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("dataset_size", [1, 5, 18, 255, 256, 257, 1000, IMAGENET_TRAIN_SIZE])
def test_samples_per_epoch_is_the_length_of_timms_sampler_on_every_rank(dataset_size, world_size):
    """Also below 256 images, where RASampler would yield nothing and timm falls back to ceil(N / world)."""
    for rank in range(world_size):
        sampler = RepeatAugSampler(range(dataset_size), num_replicas=world_size, rank=rank, num_repeats=3)
        assert samples_per_epoch(dataset_size, world_size) == len(sampler)


def test_small_datasets_keep_an_epoch_of_about_len_dataset_samples():
    assert samples_per_epoch(18, 1) == 18 and samples_per_epoch(18, 2) == 9 and samples_per_epoch(19, 2) == 10


def test_imagenet_at_global_batch_1024_is_the_papers_375300_steps():
    per_rank = samples_per_epoch(IMAGENET_TRAIN_SIZE, 8)
    assert per_rank == 160_128 and per_rank // 128 == 1_251 and per_rank // 128 * 300 == 375_300


class FakeStreamLoader:
    """Three batches per pass, each naming the datasets epoch it was read under."""

    def __init__(self, batches_per_pass: int = 3) -> None:
        self.batches_per_pass, self.epoch = batches_per_pass, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter([(self.epoch, batch) for batch in range(self.batches_per_pass)])


def test_epoch_loader_cuts_epochs_and_starts_another_pass_inside_one_when_the_stream_ends():
    loader = EpochLoader(FakeStreamLoader(), num_batches=7)
    loader.set_epoch(5)
    second, third = 5 + LAP_EPOCH_STRIDE, 5 + 2 * LAP_EPOCH_STRIDE
    expected = [(5, 0), (5, 1), (5, 2), (second, 0), (second, 1), (second, 2), (third, 0)]
    assert len(loader) == 7 and list(loader) == expected
    resumed = loader.skipping(4)  # what DistillationTrainer.get_resumed_dataloader gives back
    resumed.set_epoch(5)
    assert len(resumed) == 3 and list(resumed) == expected[4:]
    loader.set_epoch(6)
    assert [batch for batch in loader][:3] == [(6, 0), (6, 1), (6, 2)]  # a new epoch: a new first pass
    with pytest.raises(ValueError, match="no batch in a whole pass"):
        list(EpochLoader(FakeStreamLoader(batches_per_pass=0), num_batches=2))


@pytest.mark.parametrize("dataset_size, world_size", [(0, 1), (10, 0)])
def test_samples_per_epoch_refuses_empty_datasets_and_worlds(dataset_size, world_size):
    with pytest.raises(ValueError):
        samples_per_epoch(dataset_size, world_size)


def test_imagenet_300_epochs_are_375300_steps_through_the_trainers_count(tmp_path):
    """ImageNet-1k, 8 processes x 128, --num_train_epochs 300: transformers' own step count
    (set_initial_training_values) over the map-style loader's length (accelerate's shard of RepeatAugBatchOrder)
    and over a stream's (EpochLoader), and the --max_steps DistillationTrainer resolves for a stream, are all the
    paper's 375,300."""
    # per process 128, no accumulation: what the recipe resolves for 8 processes (hf-deit recipe --world_size 8)
    trainer = _tiny_trainer(tmp_path, num_train_epochs=300, per_device_train_batch_size=128,
                            gradient_accumulation_steps=1)
    order = RepeatAugBatchOrder(range(IMAGENET_TRAIN_SIZE), num_repeats=3, num_replicas=8, batch_size=128)
    for rank in (0, 7):
        shard = BatchSamplerShard(BatchSampler(order, 128, drop_last=False), num_processes=8, process_index=rank)
        values = trainer.set_initial_training_values(trainer.args, shard)
        assert (len(shard), values[1], values[-1]) == (1_251, 1_251, 375_300)
    stream_loader = EpochLoader(None, batches_per_epoch(IMAGENET_TRAIN_SIZE, 8, 128, repeated_aug=3))
    assert trainer.set_initial_training_values(trainer.args, stream_loader)[-1] == 375_300
    stream = Dataset.from_dict({"label": [0]}).to_iterable_dataset()
    record_stream_size(stream, IMAGENET_TRAIN_SIZE)
    args = SimpleNamespace(world_size=8, train_batch_size=128, gradient_accumulation_steps=1, max_steps=-1,
                           num_train_epochs=300)
    _stream_max_steps(stream, args, DataArguments())
    assert args.max_steps == 375_300


def test_a_stream_of_unknown_size_needs_its_size_or_max_steps(tmp_path):
    stream = Dataset.from_dict({"label": [0]}).to_iterable_dataset()  # no split info: size unknown
    with pytest.raises(ValueError, match="--train_dataset_size"):
        _stream_max_steps(stream, SimpleNamespace(max_steps=-1, num_train_epochs=3), DataArguments())
    args = SimpleNamespace(max_steps=5, num_train_epochs=3)
    _stream_max_steps(stream, args, DataArguments())
    assert args.max_steps == 5


def _tiny_trainer(tmp_path, **overrides):
    from hf_deit import DeiTTrainingArguments, DistillationTrainer
    from hf_deit.distillation.student import prepare_student

    model = prepare_student("deit_tiny_distilled_patch16_224", num_labels=3, image_size=32, patch_size=16,
                            hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    args = DeiTTrainingArguments(output_dir=str(tmp_path), distillation_type="none", use_cpu=True, report_to="none",
                                 **overrides)
    return DistillationTrainer(model=model, args=args)


NUM_PHOTOS = 18  # 6 drawn per epoch with RA x3; 9 per process on 2 processes, in batches of 3


@pytest.fixture(scope="module")
def photo_sources(tmp_path_factory, imagenet_photos):
    """18 of foolbox's ImageNet photos at 64 px in 4 class folders (map-style), and the same as 2 parquet shards."""
    from PIL import Image

    from hf_deit.data import shard_dataset

    root = tmp_path_factory.mktemp("epoch_photos")
    for index, (path, _) in enumerate(imagenet_photos[:NUM_PHOTOS]):
        target = root / "folder" / "train" / f"class_{index % 4}"
        target.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").resize((64, 64), Image.BICUBIC).save(target / f"{index}.JPEG", quality=90)
    shard_dataset(root / "folder", root / "shards", num_shards=2, format="parquet")
    return {"map": root / "folder", "stream": root / "shards"}


def _start(data: Path, out: Path, processes: int, stream: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--standalone"]
    command = [*launcher, str(ROOT / "tests" / "scripts" / "train_images.py"), str(data), str(out), "--epochs", "2",
               "--batch-size", "3", "--record-keys"]
    return subprocess.Popen(command + (["--stream"] if stream else []), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_one_epoch_is_len_dataset_samples_each_drawn_image_three_times(photo_sources, tmp_path, kind):
    """Two epochs of the default recipe (RA x3) through DistillationTrainer on 1 and 2 processes (gloo), run side by
    side: each epoch is len(dataset) samples over the processes, samples_per_epoch on each, a third of the photos,
    each 3 times (map-style: on both processes, as the paper's sampler; streamed: each process its own shard)."""
    outs = {processes: tmp_path / f"{processes}" for processes in (1, 2)}
    runs = [_start(photo_sources[kind], out, processes, kind == "stream") for processes, out in outs.items()]
    for run in runs:
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
    for processes, out in outs.items():
        reports = [json.loads((out / f"keys_rank{rank}.json").read_text()) for rank in range(processes)]
        per_process = samples_per_epoch(NUM_PHOTOS, processes)
        assert all(report["global_step"] == 2 * per_process // 3 for report in reports)
        for epoch in range(2):
            keys = [report["epochs"][epoch] for report in reports]
            assert [len(rank_keys) for rank_keys in keys] == [per_process] * processes
            counts = Counter(key for rank_keys in keys for key in rank_keys)
            assert sum(counts.values()) == NUM_PHOTOS and set(counts.values()) == {3}
            assert len(counts) == NUM_PHOTOS // 3
            if processes == 2 and kind == "map":
                assert set(keys[0]) == set(keys[1]) == set(counts)  # the copies of an image on both processes
            if processes == 2 and kind == "stream":
                assert not set(keys[0]) & set(keys[1])

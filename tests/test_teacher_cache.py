"""hf_deit.distillation.teacher_cache: a cached teacher gives the live teacher's targets (exactly for the whole image, within a
stated tolerance for crops), mixes them as the images were mixed, refuses stale caches, and trains (hard and soft)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hf_deit import DeiTTrainingArguments, DistillationTrainer
from hf_deit.data import DataArguments, build_datasets, load_image_dataset
from hf_deit.distillation.teacher import load_teacher
from hf_deit.distillation.teacher_cache import (
    CachedTeacher,
    StaleTeacherCacheError,
    cache_teacher,
    row_keys,
)
from hf_deit.distillation.student import prepare_student

NUM_CLASSES, SIZE = 4, 48


class PointwiseTeacher(nn.Module):
    """1x1 conv -> global average pool -> linear, no non-linearity: its logits for any image are the mean of its
    per-pixel logits, so the teacher of a crop is the mean of the dense map over the crop and the teacher of a
    Mixup/CutMix image is the lambda-mix of the two images' logits. Pooling then approximates only resampling."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv, self.fc = nn.Conv2d(3, 6, 1), nn.Linear(6, NUM_CLASSES)

    def forward_features(self, x):
        return self.conv(x)

    def forward_head(self, features):
        return self.fc(features.mean(dim=(2, 3)))

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """16 smooth random images (4 classes) as an image folder: smooth so that resampling changes little."""
    root = tmp_path_factory.mktemp("cache_data")
    rng = np.random.default_rng(0)
    for i in range(16):
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((SIZE, SIZE), Image.BICUBIC)
        (root / "train" / f"c{i % NUM_CLASSES}").mkdir(parents=True, exist_ok=True)
        image.save(root / "train" / f"c{i % NUM_CLASSES}" / f"{i}.png")
    return root


def make_cache(folder, path, teacher_module, **kwargs):
    dataset = load_image_dataset(str(folder), "train")
    teacher = load_teacher(teacher_module, num_labels=NUM_CLASSES)
    cache_teacher(teacher, dataset, str(path), teacher_name="t", dataset_name=str(folder), input_size=SIZE, **kwargs)
    return teacher


def trainer_for(folder, cache_path, tmp_path, distillation_type="hard", mixup=0.8, cutmix=1.0, train_dataset=None,
                streaming=False, device_augment=False, **training):
    data_args = DataArguments(dataset_name=str(folder), image_size=SIZE, auto_augment="none", reprob=0.0, color_jitter=0.0,
                              repeated_aug=1, validate_images=False, streaming=streaming, shuffle_buffer_size=4,
                              device_augment=device_augment)
    if train_dataset is None:
        train_dataset = build_datasets(data_args, do_eval=False).train_dataset
    args = DeiTTrainingArguments(output_dir=str(tmp_path / "out"), teacher_cache=str(cache_path), use_cpu=True,
                                 distillation_type=distillation_type, per_device_train_batch_size=8, max_steps=2,
                                 report_to="none", save_strategy="no", disable_tqdm=True, seed=0, logging_steps=1,
                                 mixup=mixup, cutmix=cutmix, **training)
    student = prepare_student("deit_tiny_distilled_patch16_224", num_labels=NUM_CLASSES, image_size=SIZE, patch_size=16,
                              hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    return DistillationTrainer(model=student, args=args, data_args=data_args, train_dataset=train_dataset)


def test_whole_image_box_gives_the_teachers_logits_exactly(folder, tmp_path):
    """A real CNN (timm resnet10t, 2x2 map at 48 px): the dense map pooled over the whole image is its logits."""
    import timm

    from hf_deit.distillation.teacher_cache import _WholeImage

    model = timm.create_model("resnet10t", num_classes=NUM_CLASSES, pretrained=False)
    teacher = make_cache(folder, tmp_path / "c.parquet", model)
    cache = CachedTeacher.load(str(tmp_path / "c.parquet"), num_labels=NUM_CLASSES)
    assert cache.info.map_size == (2, 2) and cache.info.top_k == NUM_CLASSES
    dataset = load_image_dataset(str(folder), "train")
    pixels = torch.stack(_WholeImage(SIZE)({"image": dataset.with_format("arrow")["image"].to_pylist()})["pixel_values"])
    teacher.input_size = None  # the live teacher sees the same whole-image tensor
    index = torch.arange(len(dataset))  # cache rows are in the split's order
    keys = torch.from_numpy(row_keys(dataset))
    assert torch.equal(cache.rows(keys.flip(0)), index.flip(0))  # found by key, in any order
    batch = {"example_key": keys, "example_content": cache.contents, "crop_box": torch.tensor([[0.0, 0, 1, 1]] * 16)}
    cached = cache.logits_for_batch(pixels, batch)
    torch.testing.assert_close(cached, teacher(pixels), atol=1e-5, rtol=1e-5)
    # a box over the left half reads only the left column of the 2x2 map
    half = cache.crop_logits(index, torch.tensor([[0.0, 0, 0.5, 1]] * 16))
    torch.testing.assert_close(half, cache.dense_map(index)[:, :, 0].mean(1))


@pytest.mark.parametrize("device_augment", [False, True])
def test_cached_targets_match_the_live_teacher_on_crops_flips_and_mixes(folder, tmp_path, device_augment):
    """The batch the trainer builds (random-resized crops, flips, Mixup/CutMix with the trainer's mixing): cached and
    live targets agree to 0.005 in logits (scale ~1; measured 0.0002); the pointwise teacher makes Mixup/CutMix and flips exact, what
    is left is the crop's bicubic resampling. Hard targets (argmax) agree on every image. With --device_augment the
    crop boxes and flips come from the training step's augmentation (hf_deit.data.device_augment)."""
    teacher = make_cache(folder, tmp_path / "c.parquet", PointwiseTeacher())
    trainer = trainer_for(folder, tmp_path / "c.parquet", tmp_path, device_augment=device_augment)
    torch.manual_seed(0), np.random.seed(0)
    largest, mixes = 0.0, set()
    for batch in trainer.get_train_dataloader():
        # what the training step does before the teacher: finish on the device (--device_augment), mix
        batch, pixels, _, mix = trainer._finish_batch(batch, training=True)
        assert {"example_key", "example_content", "crop_box", "crop_flip"} <= set(batch)
        mixes.add(mix.lam != 1.0)
        cached = trainer.teacher.logits_for_batch(pixels, batch, mix)
        live = teacher(pixels)  # the live teacher sees the cropped, flipped, mixed pixels
        largest = max(largest, float((cached - live).abs().max()))
        assert torch.equal(cached.argmax(-1), live.argmax(-1))
        assert float(live.abs().max()) > 0.2  # the comparison has something to compare
    print(f"largest |cached - live| logit difference: {largest:.4f}")
    assert largest < 0.005, largest
    assert True in mixes


@pytest.mark.parametrize("distillation_type, device_augment", [("hard", False), ("soft", False), ("hard", True)])
def test_training_from_the_cache(folder, tmp_path, distillation_type, device_augment):
    make_cache(folder, tmp_path / "c.parquet", PointwiseTeacher(), top_k=2)  # top-k < classes: approximated
    trainer = trainer_for(folder, tmp_path / "c.parquet", tmp_path, distillation_type, device_augment=device_augment)
    trainer.train()
    logged = [e for e in trainer.state.log_history if "distillation_loss" in e]
    assert logged and all(np.isfinite(e["distillation_loss"]) for e in logged)


def test_a_moved_dataset_folder_keeps_its_cache(folder, tmp_path):
    """Rows are keyed by their path inside the dataset (split/class/file), not the absolute path."""
    import shutil

    make_cache(folder, tmp_path / "c.parquet", PointwiseTeacher())
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(folder, moved)
    CachedTeacher.load(str(tmp_path / "c.parquet"), dataset=load_image_dataset(str(moved), "train"))  # no error


@pytest.mark.parametrize("distillation_type", ["hard", "soft"])
def test_training_from_the_cache_on_streamed_data(folder, tmp_path, distillation_type):
    """The cache made from the map-style split serves the same split streamed (shuffled, so rows come in another
    order): each batch's rows are found by key and checked against the cache's labels."""
    make_cache(folder, tmp_path / "c.parquet", PointwiseTeacher())
    trainer = trainer_for(folder, tmp_path / "c.parquet", tmp_path, distillation_type, streaming=True)
    batch = next(iter(trainer.get_train_dataloader()))
    cache = trainer.teacher
    rows = cache.rows(batch["example_key"])
    assert torch.equal(cache.labels[rows], batch["labels"])
    assert not torch.equal(rows, torch.arange(len(rows)))  # shuffled: not the map-style order
    trainer.train()
    logged = [e for e in trainer.state.log_history if "distillation_loss" in e]
    assert logged and all(np.isfinite(e["distillation_loss"]) for e in logged)


def test_a_stale_or_mismatched_cache_is_refused(folder, tmp_path):
    make_cache(folder, tmp_path / "c.parquet", PointwiseTeacher())
    path = str(tmp_path / "c.parquet")
    for wanted in ({"num_labels": 10}, {"teacher": "another"}, {"teacher_sha256": "0" * 64}, {"input_size": 224},
                   {"top_k": 1}):
        with pytest.raises(StaleTeacherCacheError, match="Rebuild it with `hf-deit cache-teacher"):
            CachedTeacher.load(path, **wanted)
    # the data changed since: every image relabelled
    dataset = load_image_dataset(str(folder), "train")
    relabelled = dataset.map(lambda label: {"label": (label + 1) % NUM_CLASSES}, input_columns="label")
    with pytest.raises(StaleTeacherCacheError, match="16 of 16 images in the training data"):
        trainer_for(folder, path, tmp_path, train_dataset=relabelled)
    keys = torch.from_numpy(row_keys(dataset))
    keys[0] = 12345  # one image the cache was not made from
    with pytest.raises(StaleTeacherCacheError, match="1 of 16 images"):
        CachedTeacher.load(path).rows(keys)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(StaleTeacherCacheError, match="not an hf_deit teacher cache"):
        CachedTeacher.load(str(tmp_path / "plain.parquet"))
    with pytest.raises(FileNotFoundError, match="hf-deit cache-teacher"):
        CachedTeacher.load(str(tmp_path / "missing.parquet"))


def _replace_one_image(folder, tmp_path):
    """A copy of the folder where train/c1/5.png has other pixels under the same path (and label)."""
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    image = Image.open(copy / "train" / "c1" / "5.png")
    Image.fromarray(255 - np.asarray(image)).save(copy / "train" / "c1" / "5.png")
    return copy


@pytest.mark.parametrize("streaming", [False, True])
def test_an_image_whose_bytes_changed_is_refused_naming_it(folder, tmp_path, streaming):
    """Same path, same label, other bytes: the row key is the same (paths are keys), but the batch carries the hash
    of the bytes it decoded, and the cache refuses the batch that holds the changed image, naming it."""
    make_cache(folder, tmp_path / "c.parquet", PointwiseTeacher())
    edited = _replace_one_image(folder, tmp_path)
    trainer = trainer_for(edited, tmp_path / "c.parquet", tmp_path, streaming=streaming)  # keys all match
    with pytest.raises(StaleTeacherCacheError, match=r"1 of 8 images in the batch changed since the teacher cache was "
                       r"made .*: train/c1/5.png\. Rebuild it with `hf-deit cache-teacher"):  # fmt: skip
        trainer.train()  # 2 steps of 8: every image is seen
    trainer_for(folder, tmp_path / "c.parquet", tmp_path, streaming=streaming).train()  # the unedited data trains


def test_hashing_the_bytes_is_cheap_next_to_decoding(imagenet_photos):
    """The content check's cost: a BLAKE2b of each image's bytes, against the decode training does anyway (measured
    here on the 512x512 JPEGs; docs/data.md has the figures for CIFAR and ImageNet). Generous bound: 20%."""
    import time

    from hf_deit.data import decode_image
    from hf_deit.data.row_key import content_hash

    data = [path.read_bytes() for path, _ in imagenet_photos[:10]]
    hashing = decoding = 0.0
    for _ in range(3):  # interleaved, so that load from other processes hits both alike
        start = time.perf_counter()
        [content_hash(d) for d in data]
        hashing += time.perf_counter() - start
        start = time.perf_counter()
        [decode_image(d) for d in data]
        decoding += time.perf_counter() - start
    assert hashing < 0.2 * decoding, (hashing, decoding)


@pytest.fixture(scope="module")
def timm_teachers(tmp_path_factory):
    """Two timm teacher folders (resnet10t, 4 classes) with different weights, as examples/train_teacher.py saves."""
    import timm
    from timm.models import save_for_hf

    folders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        folder = tmp_path_factory.mktemp(f"teacher{seed}")
        save_for_hf(timm.create_model("resnet10t", num_classes=NUM_CLASSES, pretrained=False), folder,
                    safe_serialization=True)  # fmt: skip
        folders.append(folder)
    return folders


def test_a_cache_made_by_another_teacher_than_the_one_named_is_refused(folder, tmp_path, timm_teachers, monkeypatch):
    made_by, other = timm_teachers
    dataset = load_image_dataset(str(folder), "train")
    path = str(tmp_path / "c.parquet")
    cache_teacher(load_teacher(str(made_by), num_labels=NUM_CLASSES), dataset, path, teacher_name=str(made_by),
                  dataset_name=str(folder), input_size=SIZE)  # fmt: skip
    trainer = trainer_for(folder, path, tmp_path)
    assert trainer.args.teacher_name_or_path is None  # a cache needs no teacher: none is loaded, none downloaded
    with pytest.raises(StaleTeacherCacheError, match=rf"made by the teacher '{made_by}' \(weights sha256 [0-9a-f]{{16}}"
                       rf"\.\.\.\), but --teacher_name_or_path names '{other}'"):  # fmt: skip
        trainer_for(folder, path, tmp_path, teacher_name_or_path=str(other))
    monkeypatch.chdir(made_by.parent)  # the same teacher by another name (a relative path): accepted
    trainer_for(folder, path, tmp_path, teacher_name_or_path=f"./{made_by.name}")


def test_distill_checks_a_cache_before_the_data_without_the_default_teacher(folder, tmp_path, monkeypatch):
    """examples/distill.py with --teacher_cache and no teacher: no teacher is checked or downloaded (offline, the
    default teacher would fail); the cache's classes are checked against the labels before the image scan."""
    import importlib.util
    import sys
    from pathlib import Path

    import hf_deit.distillation.teacher as teacher_module
    from hf_deit import StudentArguments

    spec = importlib.util.spec_from_file_location(
        "distill_cache_check", Path(__file__).resolve().parents[1] / "examples" / "distill.py"
    )
    distill = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = distill
    spec.loader.exec_module(distill)
    make_cache(folder, tmp_path / "c.parquet", PointwiseTeacher())

    def no_teacher(*args, **kwargs):
        raise AssertionError("a teacher was loaded")

    monkeypatch.setattr(teacher_module, "load_teacher", no_teacher)
    monkeypatch.setattr(distill, "load_teacher", no_teacher)
    args = DeiTTrainingArguments(output_dir=str(tmp_path / "out"), teacher_cache=str(tmp_path / "c.parquet"),
                                 use_cpu=True, report_to="none")  # fmt: skip
    check_labels = distill.check_before_data(StudentArguments(), DataArguments(image_size=SIZE), args)
    check_labels([f"c{i}" for i in range(NUM_CLASSES)])
    with pytest.raises(StaleTeacherCacheError, match="holds 4 classes but the training data has 10"):
        check_labels([str(i) for i in range(10)])


def test_an_old_cache_format_is_refused_with_the_rebuild_command(folder, tmp_path):
    import json

    import pyarrow.parquet as pq

    from hf_deit.distillation.teacher_cache import METADATA_KEY

    make_cache(folder, tmp_path / "c.parquet", PointwiseTeacher())
    table = pq.read_table(tmp_path / "c.parquet").drop_columns(["example_content", "image_identity"])
    info = json.loads(table.schema.metadata[METADATA_KEY])
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps({**info, "version": 2}).encode()})
    pq.write_table(table, tmp_path / "old.parquet")  # what hf_deit wrote before caches were bound to the bytes
    with pytest.raises(StaleTeacherCacheError, match=rf"cache format 2, this hf_deit reads 3\. Rebuild it with "
                       rf"`hf-deit cache-teacher t {folder} {tmp_path / 'old.parquet'}`"):  # fmt: skip
        CachedTeacher.load(str(tmp_path / "old.parquet"))


def test_a_nan_teachers_logits_are_not_cached():
    from hf_deit.distillation.teacher_cache import check_dense_map
    dense = torch.zeros(2, 3, 4, 4)
    check_dense_map(dense, torch.zeros(2, 3))  # finite and consistent: accepted
    dense[1, 0, 2, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        check_dense_map(dense, torch.full((2, 3), float("nan")))

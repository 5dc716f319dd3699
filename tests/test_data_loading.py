"""Loading: ImageNet label ids from a class-index file, and the same pipeline from folder / parquet / webdataset
sources, streaming or not, with exact counts of decoded and broken images."""

import io
import shutil
from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image
from timm.data import ImageNetInfo
from transformers import HfArgumentParser, TrainingArguments

from hf_deit.cli import main as cli_main
from hf_deit.data import (
    DataArguments,
    DeiTCollator,
    build_datasets,
    count_local_examples,
    load_image_dataset,
    read_class_index,
    stream_size,
)

SIZE = 32
IMAGENET_WNIDS = list(ImageNetInfo("imagenet-1k").label_names())


@pytest.fixture(autouse=True)
def no_parquet_shutdown_sleep(monkeypatch):
    """datasets sleeps 5 s after each parquet stream ends (pyarrow issue 45214 guard); tests end many streams."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def test_data_arguments_parse_beside_training_arguments(tmp_path):
    parser = HfArgumentParser((DataArguments, TrainingArguments))
    data_args, training_args = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--image_size", "32", "--streaming", "--repeated_aug", "1"]
    )
    assert (data_args.image_size, data_args.streaming, data_args.repeated_aug) == (32, True, 1)
    assert data_args.eval_crop_pct == 1.0  # small images: no 1/0.875 resize
    assert DataArguments().eval_crop_pct == 0.875 and DataArguments().auto_augment == "rand-m9-mstd0.5-inc1"
    with pytest.raises(ValueError, match="reprob"):
        DataArguments(reprob=1.5)


def test_shared_classes_tsv_is_the_standard_index(shared_data):
    names = read_class_index(shared_data / "imagenet-sample" / "classes.tsv")
    assert names == IMAGENET_WNIDS
    assert (names.index("n01440764"), names.index("n15075141")) == (0, 999)


def test_folder_subset_gets_standard_imagenet_ids(shared_data, tmp_path):
    """A folder with two classes only: ids come from classes.tsv (0 and 999), not from the folder's sort order."""
    sample = shared_data / "imagenet-sample"
    for wnid in ("n15075141", "n01440764"):
        shutil.copytree(sample / "val" / wnid, tmp_path / "val" / wnid)
    shutil.copy(sample / "classes.tsv", tmp_path / "classes.tsv")
    for streaming in (False, True):
        dataset = load_image_dataset(str(tmp_path), "validation", streaming=streaming, cache_dir=str(tmp_path / "c"))
        labels = {Path(ex["image"]["path"]).parent.name: ex["label"] for ex in dataset}
        assert labels == {"n01440764": 0, "n15075141": 999}
        assert dataset.features["label"].names == IMAGENET_WNIDS


def test_foolbox_photos_keep_their_imagenet_labels(imagenet_photos, tmp_path):
    """Real labelled ImageNet photos in an ImageNet-layout folder + LOC_synset_mapping.txt -> their true ids."""
    for path, label in imagenet_photos[:6]:
        folder = tmp_path / "train" / IMAGENET_WNIDS[label]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / (path.stem + ".JPEG"))
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("".join(f"{wnid} some name, other name\n" for wnid in IMAGENET_WNIDS))
    dataset = load_image_dataset(str(tmp_path), "train", class_index_file=str(mapping), cache_dir=str(tmp_path / "c"))
    got = sorted((Path(ex["image"]["path"]).stem + ".jpg", ex["label"]) for ex in dataset)
    assert got == sorted((path.name, label) for path, label in imagenet_photos[:6])


@pytest.fixture(scope="module")
def sources(tmp_path_factory, imagenet_photos):
    """The same 8 real photos + 2 broken files as a folder, parquet shards and webdataset shards."""
    root = tmp_path_factory.mktemp("sources")
    folder = root / "folder"
    for index, (path, label) in enumerate(imagenet_photos[:8]):
        target = folder / ("train" if index < 6 else "val") / f"class_{index % 3}"
        target.mkdir(parents=True, exist_ok=True)
        image = Image.open(path).resize((80, 60))
        image.save(target / f"photo_{index}.JPEG", quality=90)
    (folder / "train" / "class_0" / "empty.JPEG").write_bytes(b"")
    jpeg = io.BytesIO()
    Image.open(imagenet_photos[9][0]).save(jpeg, "JPEG")
    (folder / "train" / "class_1" / "truncated.JPEG").write_bytes(jpeg.getvalue()[:3000])
    paths = {"folder": folder}
    for fmt in ("parquet", "webdataset"):
        cli_main(["shard", str(folder), str(root / fmt), "--num-shards", "2", "--format", fmt])
        paths[fmt] = root / fmt
    return paths


@pytest.mark.parametrize("source", ["folder", "parquet", "webdataset"])
@pytest.mark.parametrize("streaming", [False, True])
def test_same_pipeline_for_every_source(sources, source, streaming, tmp_path):
    if source != "folder":
        suffix = "parquet" if source == "parquet" else "tar"
        assert sorted(p.name for p in sources[source].glob(f"*.{suffix}")) == [
            f"{split}-0000{i}-of-00002.{suffix}" for split in ("train", "validation") for i in (0, 1)
        ]
    args = DataArguments(
        dataset_name=str(sources[source]), streaming=streaming, image_size=SIZE, repeated_aug=1,
        shuffle_buffer_size=4, max_bad_fraction=0.5, data_cache_dir=str(tmp_path / "cache"),
    )
    data = build_datasets(args)
    train, evaluation, names = data
    assert names == ["class_0", "class_1", "class_2"]
    train_batches = list(torch.utils.data.DataLoader(train, batch_size=4, collate_fn=DeiTCollator()))
    eval_batches = list(torch.utils.data.DataLoader(evaluation, batch_size=4, collate_fn=DeiTCollator()))
    assert sum(len(b["pixel_values"]) for b in train_batches) == 6  # 6 photos; the 2 broken files skipped
    assert all(b["pixel_values"].shape[1:] == (3, SIZE, SIZE) for b in train_batches + eval_batches)
    assert all(b["labels"].shape == (len(b["pixel_values"]),) for b in train_batches)  # mixed in the training step
    assert sorted(torch.cat([b["labels"] for b in eval_batches]).tolist()) == [0, 1]  # photos 6, 7: class_0, class_1
    assert data.bad_images["train"].broken == 2 and data.bad_images["eval"].broken == 0
    if streaming:  # the size that sets a stream's epoch: its files, broken ones included (as len(dataset) would)
        assert stream_size(train) == 8


@pytest.mark.parametrize("source", ["folder", "parquet", "webdataset"])
def test_local_examples_are_counted_without_reading_images(sources, source):
    """Image files, parquet footers, webdataset tar headers (a sample is a key with a .jpg and a .cls member)."""
    assert count_local_examples(sources[source], "train") == 8
    assert count_local_examples(sources[source], "val") == count_local_examples(sources[source], "validation") == 2
    assert count_local_examples(sources[source], "test") is None and count_local_examples("org/hub-id", "train") is None

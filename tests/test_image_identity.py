"""One image identity (hf_deit.data.row_key.image_identity) for the teacher cache's row keys and the streams'
augmentation seeds: moving or copying a dataset folder changes neither."""

import shutil

import torch
from PIL import Image

from hf_deit.data import DataArguments, build_datasets
from hf_deit.data.row_key import ROW_KEY


def _first_examples(folder, count: int = 6) -> list[dict]:
    args = DataArguments(dataset_name=str(folder), image_size=32, streaming=True, shuffle_buffer_size=4,
                         repeated_aug=1, reprob=0.0)  # fmt: skip
    stream = build_datasets(args, do_eval=False, seed=3).train_dataset
    return [example for _, example in zip(range(count), stream)]


def test_a_moved_dataset_keeps_its_row_keys_and_its_augmentations(tmp_path, imagenet_photos):
    folder = tmp_path / "data"
    for index, (path, _) in enumerate(imagenet_photos[:6]):
        (folder / "train" / f"c{index % 2}").mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").resize((48, 48)).save(folder / "train" / f"c{index % 2}" / f"{index}.png")
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(folder, moved)
    here, there = _first_examples(folder), _first_examples(moved)
    assert [e[ROW_KEY] for e in here] == [e[ROW_KEY] for e in there]  # the cache's keys
    # the augmentations (RandAugment, crop, flip) are drawn under the same seeds: the same pixels, the same crops
    for a, b in zip(here, there):
        assert torch.equal(torch.as_tensor(a["pixel_values"]), torch.as_tensor(b["pixel_values"]))
        assert a["crop_box"] == b["crop_box"]
    # and different images still get different draws (the identity is not constant)
    assert len({(tuple(e["crop_box"]), e["crop_flip"]) for e in here}) > 1

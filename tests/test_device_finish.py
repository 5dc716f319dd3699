"""uint8 batches finished in the training step (hf_deit.data.device_finish) vs the worker-side float transform.

Equal bit for bit (on CPU): normalisation always; random erasing when it draws from the same RNG state (one image,
or a batch of already-cropped images in order). Not equal by design: in a run, a batch's erasing draws come after
all its crops in the main process, so which box a given image gets for a seed differs (same distribution).
"""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from hf_deit.data import DataArguments, DeiTCollator, DeviceFinish, build_device_finish, build_train_transform
from hf_deit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ToNormalizedTensor


def seed_all(seed):
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)


def photo(seed, size=(80, 60)):
    rng = np.random.default_rng(seed)
    # smooth gradients plus noise: RandAugment's ops change it visibly, unlike a flat image
    x = np.linspace(0, 255, size[0])[None, :, None] + np.linspace(0, 128, size[1])[:, None, None]
    array = np.clip(x + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def test_normalisation_is_bit_identical_to_the_worker_path():
    images = torch.randint(0, 256, (5, 3, 24, 16), dtype=torch.uint8)
    worker = ToNormalizedTensor(IMAGENET_MEAN, IMAGENET_STD)
    expected = torch.stack([worker(image.permute(1, 2, 0).numpy()) for image in images])
    assert torch.equal(DeviceFinish(reprob=0.0)(images), expected)
    assert torch.equal(DeviceFinish(reprob=1.0)(images, train=False), expected)  # no erasing at evaluation


@pytest.mark.parametrize("reprob", [0.0, 0.25, 1.0])
def test_uint8_transform_plus_finish_equals_the_float_transform_per_image(reprob):
    """The DeiT train transform (RRC, flip, RandAugment, erasing) with the same seeds, image by image."""
    float_args = DataArguments(image_size=48, reprob=reprob)
    uint8_args = DataArguments(image_size=48, reprob=reprob, uint8_batches=True)
    to_float, to_uint8 = build_train_transform(float_args), build_train_transform(uint8_args)
    finish = build_device_finish(uint8_args)
    erased = 0
    for seed in range(6):
        seed_all(seed)
        expected = to_float(photo(seed))
        seed_all(seed)
        pixels = to_uint8(photo(seed))
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 48, 48)
        got = finish(pixels[None])[0]
        assert torch.equal(got, expected), seed
        erased += int(not torch.equal(got, finish.normalize(pixels[None])[0]))
    assert erased == {0.0: 0, 0.25: erased, 1.0: 6}[reprob]  # erasing really ran when it should


def test_batch_erasing_equals_per_image_erasing_from_the_same_rng_state():
    from timm.data.random_erasing import RandomErasing

    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    worker_norm = ToNormalizedTensor(IMAGENET_MEAN, IMAGENET_STD)
    worker_erase = RandomErasing(0.5, mode="pixel", max_count=1, device="cpu")  # what timm's transform builds
    seed_all(3)
    expected = torch.stack([worker_erase(worker_norm(image.permute(1, 2, 0).numpy())) for image in images])
    seed_all(3)
    got = DeviceFinish(reprob=0.5, remode="pixel")(images)
    assert torch.equal(got, expected)


def test_trainer_finishes_uint8_batches_like_the_worker_path(tmp_path):
    """The same loss from a uint8 batch (finished + mixed in compute_loss) as from the worker's float batch."""
    import timm

    from hf_deit import DeiTTrainingArguments, DistillationTrainer, load_teacher
    from hf_deit.distillation.student import prepare_student

    data_args = DataArguments(image_size=32, reprob=0.5, uint8_batches=True)  # Mixup/CutMix, smoothing: args' defaults
    torch.manual_seed(0)
    model = prepare_student("deit_tiny_distilled_patch16_224", num_labels=4, drop_path_rate=0.0, image_size=32,
                            patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    teacher = load_teacher(timm.create_model("test_resnet", num_classes=4), num_labels=4, input_size=32)
    args = DeiTTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no")
    trainer = DistillationTrainer(model=model, args=args, teacher=teacher, data_args=data_args)
    images, labels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1, 2, 3])
    worker = DeviceFinish(reprob=0.5)

    seed_all(5)
    worker_batch = torch.stack([worker(image[None])[0] for image in images])  # erased one by one, as in workers
    np.random.seed(9)  # Mixup's RNG
    expected = trainer.compute_loss(model, {"pixel_values": worker_batch, "labels": labels})
    seed_all(5)
    np.random.seed(9)
    got = trainer.compute_loss(model, {"pixel_values": images, "labels": labels})
    assert torch.equal(got, expected)


def test_the_collator_stacks_uint8_images_unmixed():
    batch = DeiTCollator()(
        [{"pixel_values": torch.zeros(3, 8, 8, dtype=torch.uint8), "labels": 1}] * 2
    )
    assert batch["pixel_values"].dtype == torch.uint8

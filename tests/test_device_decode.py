"""--device_augment end to end on CPU: the workers' encoded examples (hf_deit.data.device_decode), the decode in the
step (the same pixels as hf_deit's decoder), broken files, the collator and the Trainer's batch handling, and
DistillationTrainer training on it from a folder and from a stream."""

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_decode import broken_images, odd_valid_images
from torchvision.transforms.v2.functional import pil_to_tensor

from hf_deit.data import BadImageCounter, DataArguments, DeiTCollator, build_datasets, build_device_augment, decode_image
from hf_deit.data.device_decode import ENCODED_IMAGE, ENCODED_IMAGES, EncodedBatch, EncodeForDevice, decode_batch
from hf_deit.data.seeding import seeded_rngs

SIZE = 48


def encode(name: str, data: bytes, counter: BadImageCounter | None = None):
    return EncodeForDevice(counter or BadImageCounter())({"image": {"bytes": data, "path": name}, "label": 0})


def exif_rotated_jpeg(photo) -> bytes:
    image = Image.open(photo).convert("RGB").resize((96, 72))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_jpegs_travel_encoded_and_decode_to_hf_deits_pixels(imagenet_photos):
    """RGB and grayscale JPEGs go to the step as bytes; decode_jpeg (CPU: libjpeg-turbo) gives the pixels of
    hf_deit's Pillow decoder, bit for bit."""
    files = {path.name: path.read_bytes() for path, _ in imagenet_photos[:4]}
    files["gray.jpg"] = odd_valid_images(imagenet_photos[0][0])["gray.jpg"]
    examples = [encode(name, data) for name, data in files.items()]
    assert all(isinstance(e[ENCODED_IMAGE].data, bytes) for e in examples)
    decoded = decode_batch(EncodedBatch.from_images([e[ENCODED_IMAGE] for e in examples]), torch.device("cpu"))
    for data, pixels in zip(files.values(), decoded):
        assert torch.equal(pixels, pil_to_tensor(decode_image(data)))


def test_other_images_are_decoded_by_the_worker_as_on_the_default_path(imagenet_photos):
    """PNGs, CMYK JPEGs and EXIF-rotated JPEGs (which decode_jpeg on CUDA would not turn) are decoded in the worker
    by hf_deit's decoder and travel as uint8 pixels."""
    files = {k: v for k, v in odd_valid_images(imagenet_photos[0][0]).items() if k != "gray.jpg"}
    files["rotated.jpg"] = exif_rotated_jpeg(imagenet_photos[0][0])
    for name, data in files.items():
        image = encode(name, data)[ENCODED_IMAGE]
        assert isinstance(image.data, torch.Tensor), name
        assert torch.equal(decode_batch(EncodedBatch.from_images([image]), torch.device("cpu"))[0], pil_to_tensor(decode_image(data)))
    assert image.data.shape[1:] == (96, 72)  # rotated upright


def test_broken_files_are_counted_in_the_worker_or_dropped_in_the_step(imagenet_photos, caplog):
    """What the header shows broken is counted and skipped by the worker (as on the default path); a truncated JPEG
    passes the header and is dropped by the step, with its row, after hf_deit's decoder also failed on it."""
    counter = BadImageCounter(max_bad_fraction=1.0)
    broken = broken_images(imagenet_photos[0][0])
    examples = {name: encode(name, data, counter) for name, data in broken.items()}
    assert [name for name, e in examples.items() if e[ENCODED_IMAGE] is not None] == ["truncated.JPEG"]
    assert (counter.broken, counter.seen) == (4, 5)
    good = [encode(path.name, path.read_bytes()) | {"labels": label} for path, label in imagenet_photos[:3]]
    batch = DeiTCollator()([good[0], examples["truncated.JPEG"] | {"labels": 7}] + good[1:])
    augment = build_device_augment(DataArguments(image_size=SIZE, device_augment=True))
    with caplog.at_level(logging.WARNING):
        out = augment(batch)
    assert out["pixel_values"].shape == (3, 3, SIZE, SIZE) and "does not decode" in caplog.text
    assert out["labels"].tolist() == [label for _, label in imagenet_photos[:3]]
    assert len(out["example_key"]) == len(out["crop_box"]) == 3


def test_the_seed_comes_from_the_images_seeded_rngs(imagenet_photos):
    """Drawn under seeding.py's per-image seed: the same place in the run gives the same seed, another place
    another one."""
    data = imagenet_photos[0][0].read_bytes()
    with seeded_rngs(42, 0, 1, 5):
        first = encode("a.jpg", data)[ENCODED_IMAGE].seed
    with seeded_rngs(42, 0, 1, 5):
        again = encode("a.jpg", data)[ENCODED_IMAGE].seed
    with seeded_rngs(42, 0, 1, 6):
        other = encode("a.jpg", data)[ENCODED_IMAGE].seed
    assert first == again != other


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory, imagenet_photos):
    root = tmp_path_factory.mktemp("device_photos")
    for index, (path, _) in enumerate(imagenet_photos[:16]):
        target = root / "train" / f"class_{index % 4}"
        target.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").resize((64, 64), Image.BICUBIC).save(target / f"{index}.JPEG", quality=90)
    return root


@pytest.mark.parametrize("streaming", [False, True])
def test_datasets_collator_and_trainer_inputs_keep_images_encoded_on_the_host(jpeg_folder, streaming, tmp_path):
    """The collated batch holds an EncodedBatch that the Trainer's input preparation passes through untouched (bytes
    stay on the host, seeds stay ints), next to the labels and row keys it moves to the device."""
    from hf_deit import DeiTTrainingArguments, DistillationTrainer
    from hf_deit.distillation.student import prepare_student

    data_args = DataArguments(dataset_name=str(jpeg_folder), image_size=SIZE, device_augment=True, streaming=streaming,
                              shuffle_buffer_size=4)
    train_dataset = build_datasets(data_args, do_eval=False).train_dataset
    example = next(iter(train_dataset)) if streaming else train_dataset[0]
    assert set(example) >= {ENCODED_IMAGE, "labels", "example_key"} and "pixel_values" not in example
    batch = DeiTCollator()([example] * 2)
    assert isinstance(batch[ENCODED_IMAGES], EncodedBatch) and batch["labels"].dtype == torch.long
    student = prepare_student("deit_tiny_distilled_patch16_224", num_labels=4, image_size=SIZE, patch_size=16,
                              hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    args = DeiTTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", distillation_type="none")
    trainer = DistillationTrainer(model=student, args=args, data_args=data_args)
    prepared = trainer._prepare_inputs(batch)
    assert prepared[ENCODED_IMAGES] is batch[ENCODED_IMAGES]


@pytest.mark.parametrize("streaming", [False, True])
def test_distillation_trainer_trains_on_device_augmented_batches(jpeg_folder, streaming, tmp_path):
    """A few steps of DistillationTrainer (the full recipe: RRC, flip, RandAugment, erasing, Mixup/CutMix, repeated
    augmentation, hard distillation from a live teacher) with the augmentation in the step, on CPU tensors."""
    import timm

    from hf_deit import DeiTTrainingArguments, DistillationTrainer, load_teacher
    from hf_deit.distillation.student import prepare_student

    data_args = DataArguments(dataset_name=str(jpeg_folder), image_size=SIZE, device_augment=True, streaming=streaming,
                              shuffle_buffer_size=4)
    train_dataset = build_datasets(data_args, do_eval=False).train_dataset
    torch.manual_seed(0)
    student = prepare_student("deit_tiny_distilled_patch16_224", num_labels=4, image_size=SIZE, patch_size=16,
                              hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher = load_teacher(timm.create_model("test_resnet", num_classes=4), num_labels=4, input_size=SIZE)
    args = DeiTTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no",
                                 per_device_train_batch_size=6, max_steps=3, logging_steps=1, disable_tqdm=True,
                                 accelerator_config={"dispatch_batches": False})
    trainer = DistillationTrainer(model=student, args=args, teacher=teacher, data_args=data_args,
                                  train_dataset=train_dataset)
    seen = []
    original = trainer.device_augment.augment
    trainer.device_augment.augment = lambda images, seeds: seen.append(len(images)) or original(images, seeds)
    trainer.train()
    assert seen == [6, 6, 6]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_arguments_refuse_what_the_device_path_does_not_implement():
    with pytest.raises(ValueError, match="uint8_batches"):
        DataArguments(device_augment=True, uint8_batches=True)
    with pytest.raises(ValueError, match="interpolation"):
        DataArguments(device_augment=True, interpolation="random")
    with pytest.raises(ValueError, match="rand-"):
        DataArguments(device_augment=True, auto_augment="original")
    with pytest.raises(ValueError, match="colour jitter"):
        DataArguments(device_augment=True, force_color_jitter=True)
    DataArguments(device_augment=True, auto_augment="none", color_jitter=0.0)  # fine: no RandAugment, no jitter


def test_an_encoded_batch_without_device_augment_data_arguments_is_refused():
    batch = {ENCODED_IMAGES: EncodedBatch.from_images([]), "labels": torch.zeros(0, dtype=torch.long)}
    with pytest.raises(ValueError, match="data_args"):
        build_device_augment(None)(batch)

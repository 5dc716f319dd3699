"""Inference preprocesses like training: the image processor, DeiTImageClassificationPipeline and `hf-deit predict`
convert odd images (16-bit PNG, CMYK JPEG, palette PNG) with the decoder the training data goes through."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline
from transformers.image_utils import load_image as transformers_load_image

from hf_deit import DeiTConfig, DeiTForImageClassification, DeiTImageClassificationPipeline, image_processor_for
from hf_deit.cli import main
from hf_deit.data import decode_image


def gradient(height: int = 40, width: int = 48) -> np.ndarray:
    return np.linspace(0.0, 1.0, height * width).reshape(height, width)


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("odd")
    paths = {}
    image16 = Image.fromarray((gradient() * 65535).astype(np.uint16))  # mode I;16, spans 0..65535
    image16.save(folder / "gray16.png")
    paths["gray16"] = folder / "gray16.png"
    rgb = Image.fromarray((np.stack([gradient(), 1 - gradient(), gradient() ** 2], -1) * 255).astype(np.uint8))
    rgb.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    paths["cmyk"] = folder / "cmyk.jpg"
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(folder / "palette.png")
    paths["palette"] = folder / "palette.png"
    return paths


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    torch.manual_seed(0)
    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=3,
                        id2label={i: f"class_{i}" for i in range(6)})  # fmt: skip
    model = DeiTForImageClassification(config).eval()
    directory = tmp_path_factory.mktemp("model")
    model.save_pretrained(directory)
    image_processor_for(config).save_pretrained(directory)
    return directory, model


def test_stock_transformers_loader_clips_16_bit_to_white(odd_images):
    """The bug this module exists for: transformers' load_image turns the 16-bit gradient (nearly) pure white."""
    stock = np.asarray(transformers_load_image(str(odd_images["gray16"])))
    assert (stock == 255).mean() > 0.99  # every value above 255 of 65535 is clipped
    decoded = np.asarray(decode_image(str(odd_images["gray16"])))
    assert decoded.min() == 0 and decoded.max() == 255  # the training decoder scales it


@pytest.mark.parametrize("kind", ["gray16", "cmyk", "palette"])
@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_image_processor_converts_like_training(odd_images, saved_model, kind, backend):
    directory, model = saved_model
    processor = image_processor_for(model.config, backend=backend)
    expected = processor(decode_image(str(odd_images[kind])), return_tensors="pt")["pixel_values"]
    from_pil = processor(Image.open(odd_images[kind]), return_tensors="pt")["pixel_values"]
    from_path = processor(str(odd_images[kind]), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(from_pil, expected, rtol=0, atol=0)
    torch.testing.assert_close(from_path, expected, rtol=0, atol=0)


@pytest.mark.parametrize("image_size,crop_pct", [(32, 0.875), (224, 0.875), (48, 1.0)])
@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_eval_preprocessing_is_resize_to_size_over_crop_pct_then_center_crop(imagenet_photos, image_size, crop_pct,
                                                                              backend):
    """`size` is the model's input size now (what run_image_classification.py reads); the pixels are those of
    transformers' own DeiT processor resizing the short side to int(size / crop_pct) and cropping, to the bit."""
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from transformers.models.deit.image_processing_deit import DeiTImageProcessor as TorchvisionReference
    from transformers.models.deit.image_processing_pil_deit import DeiTImageProcessorPil as PilReference

    config = DeiTConfig(image_size=image_size, patch_size=16, crop_pct=crop_pct)
    ours = image_processor_for(config, backend=backend)
    assert ours.size == {"shortest_edge": image_size}
    reference = {"torchvision": TorchvisionReference, "pil": PilReference}[backend](
        size={"shortest_edge": int(image_size / crop_pct)}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(IMAGENET_DEFAULT_MEAN), image_std=list(IMAGENET_DEFAULT_STD),
    )
    photo = Image.open(imagenet_photos[3][0]).convert("RGB")
    for image in (photo, photo.crop((0, 0, 512, 301)), photo.crop((0, 0, 290, 512))):
        expected = reference(image, return_tensors="pt")["pixel_values"]
        assert expected.shape == (1, 3, image_size, image_size)
        torch.testing.assert_close(ours(image, return_tensors="pt")["pixel_values"], expected, rtol=0, atol=0)


@pytest.mark.parametrize("crop_pct", [0.875, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("image_size", [32, 48, 160, 224, 384])
def test_one_eval_resize_formula_for_the_data_pipeline_and_the_image_processor(image_size, crop_pct):
    """`eval_resize_size` (hf_deit.models), the data pipeline's evaluation transform (timm's math.floor) and the
    image processor (transformers' PoolFormer: int) resize the short side to the same size (32 / 0.875 = 36.57: 36)."""
    from hf_deit.data import DataArguments, build_eval_transform
    from hf_deit.models import eval_resize_size

    expected = eval_resize_size(image_size, crop_pct)
    timm_resize = build_eval_transform(DataArguments(image_size=image_size, eval_crop_pct=crop_pct)).transforms[0]
    assert timm_resize.size == expected
    config = DeiTConfig(image_size=image_size, patch_size=16, crop_pct=crop_pct)
    for backend in ("torchvision", "pil"):
        processor = image_processor_for(config, backend=backend)
        resized = processor(Image.new("RGB", (3 * image_size, 2 * image_size)), do_center_crop=False,
                            return_tensors="pt")["pixel_values"]  # fmt: skip
        assert resized.shape[-2] == expected  # the short side (height here)


def test_pipeline_and_cli_predict_see_training_pixels(odd_images, saved_model, capsys):
    directory, model = saved_model
    path = str(odd_images["gray16"])
    processor = image_processor_for(model.config)
    with torch.no_grad():
        pixels = processor(decode_image(path), return_tensors="pt")["pixel_values"]
        probs = model(pixels).logits.softmax(-1)[0]
    top = probs.topk(3)
    expected = [(model.config.id2label[i], s) for i, s in zip(top.indices.tolist(), top.values.tolist())]

    classifier = pipeline("image-classification", model=str(directory), device="cpu",
                          pipeline_class=DeiTImageClassificationPipeline)  # fmt: skip
    got = classifier(path, top_k=3)
    assert [p["label"] for p in got] == [label for label, _ in expected]
    torch.testing.assert_close(torch.tensor([p["score"] for p in got]), top.values, rtol=0, atol=1e-6)

    assert main(["predict", str(directory), path, "--top-k", "3", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == path
    assert [line.split() for line in lines[1:]] == [[f"{score:.3f}", label] for label, score in expected]

"""hf_deit in other people's scripts: a plain `transformers.Trainer` with a generic argmax `compute_metrics`, on a
saved model, with hf_deit installed and with only the model folder's remote code."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments

from hf_deit import DeiTConfig, DeiTForImageClassification

# What run_image_classification.py and most Trainer users write.
GENERIC_METRICS = textwrap.dedent(
    """
    import numpy as np

    def compute_metrics(p):
        return {"accuracy": float((np.argmax(p.predictions, axis=1) == p.label_ids).mean())}
    """
)
exec(GENERIC_METRICS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny distilled model (4 classes, 32 px) saved the HF way, and 12 labelled images."""
    torch.manual_seed(0)
    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=3,
                        id2label={i: f"class_{i}" for i in range(4)})  # fmt: skip
    model = DeiTForImageClassification(config).eval()
    directory = tmp_path_factory.mktemp("deit")
    model.save_pretrained(directory)
    pixel_values = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(12) % 4
    torch.save({"pixel_values": pixel_values, "labels": labels}, directory / "eval.pt")
    with torch.no_grad():
        expected = (model(pixel_values).logits.argmax(-1) == labels).float().mean().item()
    return directory, expected


def plain_trainer_accuracy(model, data: dict, output_dir) -> dict:
    dataset = [{"pixel_values": x, "labels": int(y)} for x, y in zip(data["pixel_values"], data["labels"])]
    args = TrainingArguments(output_dir=str(output_dir), per_device_eval_batch_size=5, report_to="none", use_cpu=True)
    trainer = Trainer(model=model, args=args, eval_dataset=dataset, compute_metrics=compute_metrics)
    return trainer.evaluate()


def test_plain_trainer_with_generic_compute_metrics(saved, tmp_path):
    directory, expected = saved
    model = AutoModelForImageClassification.from_pretrained(directory)
    metrics = plain_trainer_accuracy(model, torch.load(directory / "eval.pt"), tmp_path)
    assert metrics["eval_accuracy"] == pytest.approx(expected)  # argmax of the fused logits
    assert np.isfinite(metrics["eval_loss"])


def test_plain_trainer_with_remote_code_and_no_hf_deit(saved, tmp_path):
    directory, expected = saved
    script = GENERIC_METRICS + textwrap.dedent(
        f"""
        import json, sys
        sys.modules["hf_deit"] = None  # `import hf_deit` fails, even where it is installed
        import torch
        from transformers import AutoModelForImageClassification, Trainer, TrainingArguments
        model = AutoModelForImageClassification.from_pretrained({str(directory)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        data = torch.load({str(directory / "eval.pt")!r})
        dataset = [{{"pixel_values": x, "labels": int(y)}} for x, y in zip(data["pixel_values"], data["labels"])]
        args = TrainingArguments(output_dir={str(tmp_path / "out")!r}, per_device_eval_batch_size=5,
                                 report_to="none", use_cpu=True)
        metrics = Trainer(model=model, args=args, eval_dataset=dataset, compute_metrics=compute_metrics).evaluate()
        print(json.dumps(metrics))
        """
    )
    env = {**os.environ, "PYTHONPATH": "", "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["eval_accuracy"] == pytest.approx(expected)


def run_image_classification_transforms(image_processor):
    """The lines of transformers' examples/pytorch/image-classification/run_image_classification.py that read the
    image processor (the script itself downloads its metric and data, so it cannot run here): it trains and
    evaluates at `size` ("shortest_edge", or height x width), with its own bilinear Resize and no crop margin."""
    from torchvision.transforms import (CenterCrop, Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop,
                                        Resize, ToTensor)  # fmt: skip

    if "shortest_edge" in image_processor.size:
        size = image_processor.size["shortest_edge"]
    else:
        size = (image_processor.size["height"], image_processor.size["width"])
    normalize = Normalize(mean=image_processor.image_mean, std=image_processor.image_std)
    train = Compose([RandomResizedCrop(size), RandomHorizontalFlip(), ToTensor(), normalize])
    val = Compose([Resize(size), CenterCrop(size), ToTensor(), normalize])
    return train, val


def test_run_image_classification_trains_and_evaluates_at_the_model_size(tmp_path, imagenet_photos):
    """A 32 px model evaluated with crop_pct 0.875: the processor's `size` is 32 (the resize to 36 is its crop_pct),
    so the script feeds 32 px, which the model takes; a `size` of 36 would be refused (or, before, cropped)."""
    from PIL import Image
    from transformers import AutoImageProcessor

    from hf_deit import image_processor_for

    torch.manual_seed(0)
    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=3,
                        crop_pct=0.875, id2label={i: f"class_{i}" for i in range(4)})  # fmt: skip
    DeiTForImageClassification(config).save_pretrained(tmp_path / "model")
    image_processor_for(config).save_pretrained(tmp_path / "model")
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "model")
    train, val = run_image_classification_transforms(AutoImageProcessor.from_pretrained(tmp_path / "model"))
    photos = [Image.open(path).convert("RGB") for path, _ in imagenet_photos[:8]]
    photos = [photo.crop((0, 0, 512, 300 + 20 * i)) for i, photo in enumerate(photos)]  # not square either
    train_data = [{"pixel_values": train(photo), "labels": i % 4} for i, photo in enumerate(photos)]
    eval_data = [{"pixel_values": val(photo), "labels": i % 4} for i, photo in enumerate(photos)]
    assert {tuple(example["pixel_values"].shape) for example in train_data + eval_data} == {(3, 32, 32)}

    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2,
                             report_to="none", use_cpu=True, save_strategy="no")  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                      compute_metrics=compute_metrics)  # fmt: skip
    assert np.isfinite(trainer.train().training_loss)
    assert 0.0 <= trainer.evaluate()["eval_accuracy"] <= 1.0

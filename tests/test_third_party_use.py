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

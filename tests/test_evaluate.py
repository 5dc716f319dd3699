"""`evaluate` offline: hf_deit's shipped accuracy script, and `evaluate.evaluator("image-classification")` on a
saved model folder (the route docs/evaluate.md describes)."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from hf_deit import DeiTConfig, DeiTForImageClassification, image_processor_for
from hf_deit.distillation.metrics import load_accuracy_metric


def test_shipped_accuracy_metric_loads_offline():
    metric = load_accuracy_metric()
    assert metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 0, 1]) == {"accuracy": 0.5}
    assert metric.compute(predictions=[3, 3], references=[3, 1], normalize=False) == {"accuracy": 1.0}


def test_evaluator_image_classification_offline(tmp_path, imagenet_photos):
    import evaluate

    torch.manual_seed(0)
    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=3,
                        id2label={i: f"class_{i}" for i in range(3)})  # fmt: skip
    model = DeiTForImageClassification(config).eval()
    model.save_pretrained(tmp_path)
    processor = image_processor_for(config)
    processor.save_pretrained(tmp_path)

    images = [Image.open(path).convert("RGB") for path, _ in imagenet_photos[:9]]
    labels = [i % 3 for i in range(9)]
    data = Dataset.from_dict({"image": images, "label": labels})
    # The model folder as a string: evaluate 0.4.6 reads transformers.TFPreTrainedModel (gone in transformers 5)
    # when given a pipeline object. The dataset's images are decoded RGB already, so the stock pipeline suffices.
    results = evaluate.evaluator("image-classification").compute(
        model_or_pipeline=str(tmp_path), data=data, metric=load_accuracy_metric(), label_mapping=config.label2id,
        device=-1,
    )
    with torch.no_grad():
        predictions = model(processor(images, return_tensors="pt")["pixel_values"]).logits.argmax(-1).numpy()
    assert results["accuracy"] == pytest.approx(float(np.mean(predictions == np.array(labels))))
    assert results["total_time_in_seconds"] > 0

"""`CachedFloatingPointOps` (hf_deit/distillation/flops.py): transformers' own `Trainer.floating_point_ops` value, with
the parameter count taken once per model instead of at every step."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from hf_deit import DeiTConfig, DeiTForImageClassification
from hf_deit.distillation.flops import CachedFloatingPointOps


class CachedTrainer(CachedFloatingPointOps, Trainer):
    pass


def tiny_deit(depth: int = 2) -> DeiTForImageClassification:
    return DeiTForImageClassification(DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=depth,
                                                 num_attention_heads=2, intermediate_size=64, num_labels=10))


def tiny_bert() -> BertForSequenceClassification:
    """A text model with nn.Embedding layers: `exclude_embeddings` leaves them out of the count."""
    return BertForSequenceClassification(BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64))


@pytest.fixture
def arguments(tmp_path) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)


@pytest.mark.parametrize("make_model, inputs", [
    (tiny_deit, {"pixel_values": torch.zeros(8, 3, 32, 32), "labels": torch.zeros(8, dtype=torch.long)}),
    (tiny_bert, {"input_ids": torch.zeros(4, 16, dtype=torch.long), "attention_mask": torch.ones(4, 16)}),
    (tiny_deit, {"labels": torch.zeros(8, dtype=torch.long)}),  # no main input: 0, as transformers
])
def test_the_same_number_as_transformers(arguments, make_model, inputs):
    model = make_model()
    expected = Trainer(model=model, args=arguments).floating_point_ops(inputs)
    assert CachedTrainer(model=model, args=arguments).floating_point_ops(inputs) == expected
    assert expected > 0 or "labels" in inputs and len(inputs) == 1


def test_parameters_are_counted_once_per_model(arguments, monkeypatch):
    trainer = CachedTrainer(model=tiny_deit(), args=arguments)
    counts = []
    counting = DeiTForImageClassification.num_parameters
    monkeypatch.setattr(DeiTForImageClassification, "num_parameters",
                        lambda self, **kwargs: counts.append(kwargs) or counting(self, **kwargs))
    inputs = {"pixel_values": torch.zeros(8, 3, 32, 32)}
    first = [trainer.floating_point_ops(inputs) for _ in range(5)]
    assert len(counts) == 1 and len(set(first)) == 1
    # another model put in its place (hyperparameter search's model_init, a loaded best model) is counted anew
    trainer.model = tiny_deit(depth=3)
    expected = Trainer(model=trainer.model, args=arguments).floating_point_ops(inputs)
    assert trainer.floating_point_ops(inputs) == expected != first[0]
    assert len(counts) == 3  # the deeper model counted once here, once by transformers' Trainer

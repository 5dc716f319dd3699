"""Top-1 / top-5 accuracy per head (the paper's Table 3 columns: cls, distillation, fused), in percent.

`evaluate.load("accuracy")` fetches its metric script from the Hub, which fails offline and has no top-k, so top-k
is computed here in torch. For `evaluate`'s own tools (e.g. `evaluate.evaluator("image-classification")`), hf_deit
ships a top-1 accuracy metric script that loads by path, offline: `load_accuracy_metric()` (docs/evaluate.md).
To keep evaluation memory small with 1000 classes, `topk_predictions` (the Trainer's
`preprocess_logits_for_metrics`) reduces each batch to its top-5 class ids per head before the Trainer gathers them:
(batch, heads, 5) ints instead of (batch, heads, 1000) floats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import EvalPrediction

# HEADS: the order of the logits the Trainer collects from DeiTImageClassificationOutput (loss and None fields
# dropped); owned by the model, which defines those fields.
from ..models.modeling_deit import HEADS
TOPK = 5
ACCURACY_METRIC_PATH = str(Path(__file__).parent.parent / "evaluate_metrics" / "accuracy")


def load_accuracy_metric(**kwargs):
    """`evaluate.load` of hf_deit's top-1 accuracy script (no Hub access needed); kwargs go to `evaluate.load`."""
    import evaluate

    return evaluate.load(ACCURACY_METRIC_PATH, **kwargs)


def topk_predictions(logits: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor | None = None) -> torch.Tensor:
    """(logits, cls_logits[, distillation_logits]) -> (batch, heads, k) top-k class ids, best first."""
    heads = (logits,) if isinstance(logits, torch.Tensor) else tuple(t for t in logits if t is not None)
    heads = heads[: len(HEADS)]  # hidden_states / attentions, when requested, are not heads
    k = min(TOPK, heads[0].shape[-1])
    return torch.stack([head.topk(k, dim=-1).indices for head in heads], dim=1)


def compute_topk_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
    """`{"fused_top1", "fused_top5", "cls_top1", ..., "distillation_top5"}` in percent (the Trainer adds `eval_`).

    With fewer than 5 classes "top5" is top-all (always 100). Soft labels (batch, classes) are reduced to argmax.
    A plain DeiT has no distillation head; its fused prediction is its cls head.
    """
    predictions = np.asarray(eval_prediction.predictions)
    labels = np.asarray(eval_prediction.label_ids)
    if labels.ndim == 2:
        labels = labels.argmax(-1)
    if predictions.ndim == 2:  # topk_predictions was not used: raw logits of a single head
        predictions = np.argsort(-predictions, axis=-1)[:, None, :TOPK]
    hits = predictions == labels[:, None, None]  # (batch, heads, k)
    metrics = {}
    for index, head in enumerate(HEADS[: predictions.shape[1]]):
        metrics[f"{head}_top1"] = 100.0 * float(hits[:, index, 0].mean())
        metrics[f"{head}_top5"] = 100.0 * float(hits[:, index, :TOPK].any(-1).mean())
    return metrics


__all__ = ["ACCURACY_METRIC_PATH", "HEADS", "TOPK", "compute_topk_metrics", "load_accuracy_metric", "topk_predictions"]

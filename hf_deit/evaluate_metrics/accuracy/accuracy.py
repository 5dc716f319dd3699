"""Top-1 accuracy as an `evaluate` metric script that ships with hf_deit, so it loads offline by path.

    metric = evaluate.load(hf_deit.distillation.metrics.ACCURACY_METRIC_PATH)   # = hf_deit.distillation.metrics.load_accuracy_metric()
    metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])   # {"accuracy": 0.666...}

`evaluate.load("accuracy")` fetches the same computation from the Hub, which fails offline. The result is a fraction
in [0, 1] like the Hub metric (hf_deit's Trainer metrics report percent).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Fraction of predictions equal to the references (top-1 accuracy)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    normalize (bool, default True): return the fraction; False returns the count of correct predictions.
Returns:
    accuracy (float): the fraction (or count) of correct predictions.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, normalize=True):
        correct = np.asarray(predictions) == np.asarray(references)
        return {"accuracy": float(correct.mean() if normalize else correct.sum())}

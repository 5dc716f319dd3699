"""`Trainer.floating_point_ops` with the model's parameter count taken once, not at every step.

transformers' Trainer calls `self.floating_point_ops(inputs)` after every training step to add up `total_flos` (logged,
and written into the trainer state and the model card): 6 x the elements of the model's main input x
`model.num_parameters(exclude_embeddings=True)`. `num_parameters` walks every module and every parameter, about
220 us per step on benchmarks/bench_overhead.py's tiny DeiT (docs/benchmarks.md, host overhead), work that
transformers repeats every step although a training model's parameters do not change. Here the count is taken once
per model object and the product is the same number transformers computes (tests/test_flops.py).

Use: `class MyTrainer(CachedFloatingPointOps, Trainer)`. A model whose parameters are added or removed during
training (not something a DeiT run does) keeps its first count; assigning another model to `trainer.model` counts anew.
"""

from __future__ import annotations

import weakref
from typing import Any


class CachedFloatingPointOps:
    """Mixin for a transformers `Trainer` subclass (put it before `Trainer` in the bases): `floating_point_ops` as
    transformers defines it, with `num_parameters(exclude_embeddings=True)` counted once per model."""

    _counted_model: weakref.ref | None = None
    _counted_parameters: int = 0

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        model = self.model
        main_input = getattr(model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(model, "num_parameters"):
            return 0  # as transformers: a model that does not say how to count costs nothing
        if self._counted_model is None or self._counted_model() is not model:
            self._counted_parameters = model.num_parameters(exclude_embeddings=True)
            self._counted_model = weakref.ref(model)
        return 6 * inputs[main_input].numel() * self._counted_parameters


__all__ = ["CachedFloatingPointOps"]

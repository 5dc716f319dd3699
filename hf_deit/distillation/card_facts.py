"""The model card's facts about a training run, gathered from the trainer: arguments, data arguments, the student's
config and `state.log_history`. `hf_deit.hub.model_card` renders them; nothing here words the card.

    card = model_card_from_trainer(trainer, data_args)   # also draws output_dir/training_curves.png
    facts = gather_card_facts(trainer, data_args)         # the plain values, for a custom template or checks

`DistillationTrainer.create_model_card` calls `model_card_from_trainer` with its data arguments and the teacher it
loaded. A plain `transformers.Trainer` works too: it has no teacher, and data arguments only when passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import has_length

from ..data.arguments import DataArguments
from ..hub.model_card import (
    CURVES_FILENAME,
    ArchitectureFacts,
    ModelCardFacts,
    RecipeValue,
    Reference,
    head_metrics,
    hub_id,
    plot_training_curves,
    render_model_card,
)
from ..models.configuration_deit import DeiTConfig
from .arguments import DeiTTrainingArguments, global_batch


@dataclass(frozen=True)
class RunArguments:
    """The arguments a card reports, wherever they are defined (training or data arguments); None: not set/known."""

    teacher: str | None
    distillation_type: str | None
    alpha: float | None
    tau: float | None
    dataset: str | None
    eval_split: str | None
    # (label, value) rows of the hyper-parameter table, in reading order; None values are dropped by _recipe.
    optimisation: tuple[tuple[str, Any], ...]  # values as the arguments hold them (enums, None: unset)
    augmentation: tuple[tuple[str, RecipeValue], ...]


def read_run_arguments(args: TrainingArguments, data_args: DataArguments | None) -> RunArguments:
    """Every argument field the card reads, in one place (fields move between dataclasses: adapt only here)."""
    deit = args if isinstance(args, DeiTTrainingArguments) else None
    optimisation = (
        ("optimizer", args.optim), ("learning rate", args.learning_rate), ("weight decay", args.weight_decay),
        ("lr schedule", args.lr_scheduler_type), ("warmup epochs", deit.warmup_epochs if deit else None),
        ("warmup steps", args.warmup_steps),
        ("EMA decay", deit.model_ema_decay if deit else None),
    )
    augmentation = () if data_args is None else (
        ("image size", data_args.image_size), ("RandAugment", data_args.auto_augment or "off"),
        # Mixup/CutMix and label smoothing are training arguments (the trainer applies them in its step).
        ("mixup alpha", deit.mixup if deit else None), ("cutmix alpha", deit.cutmix if deit else None),
        ("label smoothing", args.label_smoothing_factor), ("random erasing", data_args.reprob),
        ("repeated augmentation", data_args.repeated_aug),
    )
    return RunArguments(
        teacher=deit.teacher_name_or_path if deit else None,
        distillation_type=deit.distillation_type if deit else None,
        alpha=deit.distillation_alpha if deit else None,
        tau=deit.distillation_tau if deit else None,
        dataset=data_args.source if data_args else None,  # --train_files when given
        eval_split=data_args.eval_split if data_args else None,
        optimisation=optimisation,
        augmentation=augmentation,
    )


def _recipe(args: TrainingArguments, run: RunArguments, config: DeiTConfig) -> dict[str, RecipeValue]:
    """The hyper-parameters worth a row in the card, in reading order; unset (None or zero) optimisation fields are
    skipped, augmentation rows are shown whenever data arguments are known."""
    recipe: dict[str, RecipeValue] = {}
    if args.max_steps > 0:
        recipe["steps"] = args.max_steps
    else:
        recipe["epochs"] = args.num_train_epochs
    recipe["batch size (total)"] = global_batch(args)
    for label, value in run.optimisation:
        if value not in (None, 0, 0.0):
            recipe[label] = getattr(value, "value", value)  # enums (optim, scheduler) -> their string
    recipe.update(run.augmentation)
    recipe["drop path"] = config.drop_path_rate
    return recipe


def gather_card_facts(
    trainer: Trainer,
    data_args: DataArguments | None = None,
    teacher_source: str | None = None,
    curves_png: str | None = None,
) -> ModelCardFacts:
    """The card's facts for a trained `transformers.Trainer`; `DistillationTrainer.create_model_card` passes what
    only it knows: its `data_args` and `teacher_source`, the teacher it actually loaded (the arguments name the
    default teacher even when a module was passed). `curves_png`: the training-curves image, when drawn.
    The last evaluation in the log is the one reported (the final model's, when evaluated last).
    """
    args, config = trainer.args, trainer.model.config
    run = read_run_arguments(args, data_args)
    last_eval = next((entry for entry in reversed(trainer.state.log_history) if head_metrics(entry)), {})
    return ModelCardFacts(
        architecture=ArchitectureFacts.of(config),
        repo_id=args.hub_model_id or Path(args.output_dir).name,
        # A fine-tuned student was loaded with from_pretrained, which records where from (a Hub id, or a local
        # path, which the Hub's metadata check refuses: dropped); a student built from a preset has none.
        base_model=hub_id(config._name_or_path),
        dataset=Reference.of(run.dataset),
        train_examples=len(trainer.train_dataset) if has_length(trainer.train_dataset) else None,
        distillation_type=run.distillation_type,
        teacher=Reference.of(teacher_source or run.teacher),
        alpha=run.alpha,
        tau=run.tau,
        recipe=_recipe(args, run, config),
        results=head_metrics(last_eval),
        eval_split=run.eval_split,
        curves_png=curves_png,
    )


def model_card_from_trainer(
    trainer: Trainer, data_args: DataArguments | None = None, teacher_source: str | None = None
) -> ModelCard:
    """The card for a finished trainer (`gather_card_facts` rendered by hf_deit.hub.model_card); on the main process
    it also writes `training_curves.png` into `output_dir` when the log has losses or eval top-1.

    For a `DistillationTrainer` call `trainer.create_model_card()`, which passes its data arguments and teacher.
    """
    curves = None
    if trainer.args.should_save:
        curves = plot_training_curves(trainer.state.log_history, Path(trainer.args.output_dir) / CURVES_FILENAME)
    facts = gather_card_facts(trainer, data_args, teacher_source, curves_png=CURVES_FILENAME if curves else None)
    return render_model_card(facts)


__all__ = ["RunArguments", "gather_card_facts", "model_card_from_trainer", "read_run_arguments"]

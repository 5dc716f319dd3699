"""Model cards for hf_deit checkpoints: `huggingface_hub.ModelCardData` metadata + the Jinja template in
`hf_deit/hub/templates/model_card.md`, a training-curves PNG, and an upload helper.

Three entry points:
  * `build_model_card(config, ...)`: any checkpoint (trained here, or converted with only `source=`).
  * `model_card_from_trainer(trainer)`: what `DistillationTrainer.create_model_card` writes to `output_dir/README.md`;
    reads the training arguments, data arguments and `state.log_history`, and draws `training_curves.png`.
  * `push_model_to_hub(model, repo_id, ...)`: weights + config + code + image processor + card in one commit.

Accuracies are written as percentages (two decimals) both in the table and in the `model-index` metadata, the
convention of ImageNet leaderboards and timm's cards.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers.trainer_utils import has_length

from ..models.configuration_deit import PRESETS, DeiTConfig

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
CURVES_FILENAME = "training_curves.png"
TAGS = ["image-classification", "deit", "distillation", "hf_deit", "vision"]
# Heads in the order the results table lists them; the key is the infix of the trainer's metric names.
HEADS = {"fused": "fused", "cls": "cls token", "distillation": "distillation token"}


def count_parameters(config: DeiTConfig) -> int:
    """Parameters of `DeiTForImageClassification(config)`, counted on the meta device (no memory, no init)."""
    from ..models.modeling_deit import DeiTForImageClassification

    with torch.device("meta"):
        model = DeiTForImageClassification(config)
    return sum(p.numel() for p in model.parameters())


# Fields that define a released architecture; resolution and head size may differ (fine-tunes, CIFAR runs).
_ARCH_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "mlp_ratio", "use_distillation_token"
)


def _preset_name(config: DeiTConfig) -> str | None:
    """The released architecture `config` matches, preferring the one at the same resolution; None if none does."""
    presets = {name: DeiTConfig.from_preset(name) for name in PRESETS}
    matches = [n for n, ref in presets.items() if all(getattr(ref, k) == getattr(config, k) for k in _ARCH_FIELDS)]
    same_size = [n for n in matches if presets[n].image_size == config.image_size]
    return (same_size or matches or [None])[0]


def _is_local(dataset: str) -> bool:
    # A Hub dataset id is "name" or "owner/name" and never starts with . / ~; anything that exists here is local.
    return dataset.startswith((".", "/", "~")) or Path(dataset).exists()


def _pct(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 2)


def head_metrics(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """`{"eval_cls_top1": 80.1, ...}` (as `trainer.evaluate()` returns) -> `{"cls": {"top1": 80.1}, ...}`.

    Accepts keys with or without the `eval_` / `test_` prefix; values must already be percentages.
    """
    heads: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        name = key.split("_", 1)[1] if key.startswith(("eval_", "test_")) else key
        head, _, metric = name.rpartition("_")
        if head in HEADS and metric in ("top1", "top5") and _pct(value) is not None:
            heads.setdefault(head, {})[metric] = _pct(value)
    return heads


def eval_results_for(
    heads: dict[str, dict[str, float]], dataset_type: str, dataset_name: str, split: str | None
) -> list[EvalResult]:
    """One `EvalResult` per (head, top-k): the Hub's `model-index` entries."""
    results = []
    for head in HEADS:
        for metric, label in (("top1", "top-1"), ("top5", "top-5")):
            if metric in heads.get(head, {}):
                results.append(
                    EvalResult(
                        task_type="image-classification",
                        task_name="Image Classification",
                        dataset_type=dataset_type,
                        dataset_name=dataset_name,
                        dataset_split=split,
                        metric_type="accuracy",
                        metric_name=f"{label} ({head})",
                        metric_value=heads[head][metric],
                    )
                )
    return results


def build_model_card(
    config: DeiTConfig,
    *,
    base_model: str | None = None,
    source: str | None = None,
    teacher: str | None = None,
    distillation_type: str | None = None,
    alpha: float | None = None,
    tau: float | None = None,
    dataset: str | None = None,
    eval_split: str | None = None,
    train_examples: int | None = None,
    recipe: dict[str, Any] | None = None,
    eval_results: Mapping[str, float] | None = None,
    curves_png: str | None = None,
    repo_id: str | None = None,
) -> ModelCard:
    """Render the card for a model with `config`.

    Args:
        base_model: Hub id the weights start from (fine-tunes, conversions); goes to the `base_model` metadata.
        source: where converted weights came from (e.g. "timm/deit_tiny_distilled_patch16_224.fb_in1k").
        teacher, distillation_type, alpha, tau: the distillation set-up, when this run distilled.
        dataset: Hub dataset id or local path the model was trained and evaluated on.
        eval_split: split the `eval_results` were measured on.
        train_examples: number of training images (before repeated augmentation), when known.
        recipe: ordered hyper-parameters shown as a table (epochs, batch, lr, ...).
        eval_results: flat metrics, e.g. `trainer.evaluate()`: `eval_<head>_top1/top5` in percent, head in
            fused/cls/distillation. Shown as a table, and written to `model-index` only when `dataset` is known
            (the Hub's leaderboard metadata must name the data).
        curves_png: path of the training-curves image relative to the card (it must sit in the same repository).
        repo_id: Hub id used in the usage snippet and as the model-index name.
    """
    preset = _preset_name(config)
    distilled = bool(config.use_distillation_token)
    heads = head_metrics(eval_results or {})
    model_index = bool(heads and dataset)  # Hub leaderboard metadata: only for results on named data
    if dataset:
        dataset_type = Path(dataset).name if _is_local(dataset) else dataset
        dataset_label = f"local folder `{Path(dataset).name}`" if _is_local(dataset) else f"`{dataset}`"
    model_name = (repo_id or "").split("/")[-1] or preset or "hf-deit-model"

    card_data = ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=list(TAGS),
        datasets=[dataset] if dataset and not _is_local(dataset) else None,
        # base_model must be a Hub id; a local checkpoint path would fail the Hub's metadata check.
        base_model=base_model if base_model and not _is_local(base_model) else None,
        metrics=["accuracy"] if heads else None,
        model_name=model_name if model_index else None,
        eval_results=eval_results_for(heads, dataset_type, Path(dataset).name, eval_split) if model_index else None,
    )

    kind = "distilled DeiT (cls + distillation token, two heads)" if distilled else "DeiT (cls token, one head)"
    summary = f"A {kind} image classifier" + (f" with the `{preset}` architecture" if preset else "")
    if source:
        summary += f", converted from `{source}` with hf_deit."
    elif dataset:
        summary += f", trained with hf_deit on {dataset_label}."
    else:
        summary += "."

    training_lines = []
    if dataset and not source:
        size = f" ({train_examples:,} training images)" if train_examples else ""
        training_lines.append(f"Data: {dataset_label}{size}.")
    if distillation_type and distillation_type != "none":
        if not teacher:
            teacher_text = "not recorded"
        elif _is_local(teacher):  # a path on the training machine means nothing to readers: name the folder only
            teacher_text = f"`{Path(teacher).name}` (a local checkpoint)"
        else:
            teacher_text = f"`{teacher}`"
        training_lines.append(f"Teacher: {teacher_text}.")
        # hf_deit.distillation.losses distils into the distillation head, or into the only head of a plain DeiT.
        head = "distillation head" if distilled else "cls head"
        term = {
            "hard": f"cross-entropy of the {head} against the teacher's argmax",
            "soft": f"tau^2 * KL(teacher || {head}) at temperature tau = {tau}",
        }.get(distillation_type, distillation_type)
        training_lines.append(
            f"Distillation: {distillation_type}, alpha = {alpha}: loss = (1 - alpha) * CE(cls head, labels) "
            f"+ alpha * {term} (see `hf_deit.distillation.losses`)."
        )
    elif distillation_type == "none":
        trained = "both heads" if distilled else "the model"
        training_lines.append(f"No distillation: {trained} trained on the labels only.")

    fused = f"fused: {config.fusion} of both heads (`logits`)" if distilled else "fused = cls (`logits`)"
    labels = {**HEADS, "fused": fused}
    rows = [
        {"head": labels[head], "top1": heads[head].get("top1", "-"), "top5": heads[head].get("top5", "-")}
        for head in HEADS
        if head in heads
    ]
    fusion_note = f"`{config.fusion}` of the cls and distillation heads" if distilled else "the cls head"
    from .. import __version__

    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_title=model_name,
        summary=summary,
        architecture=(
            f"{config.num_hidden_layers} layers, width {config.hidden_size}, {config.num_attention_heads} heads, "
            f"MLP x{config.mlp_ratio:g}" + (f" (`{preset}`)" if preset else "")
        ),
        num_params=f"{count_parameters(config) / 1e6:.2f} M",
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_tokens=config.num_patches + config.num_prefix_tokens,
        num_labels=config.num_labels,
        fusion_note=fusion_note,
        distilled=distilled,
        source=source,
        training_lines=training_lines,
        recipe=recipe or {},
        results_rows=rows,
        eval_dataset=dataset_label if dataset else "an evaluation set this card does not record",
        eval_split=eval_split,
        curves_png=curves_png,
        repo_id=repo_id or "path/to/this/model",
        resize_to=int(config.image_size / config.crop_pct),
        hf_deit_version=__version__,
    )


def plot_training_curves(log_history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Train loss parts and eval top-1 per head against the step; None when the log holds neither."""
    train = {k: [(e["step"], e[k]) for e in log_history if k in e and "step" in e]
             for k in ("loss", "base_loss", "distillation_loss")}
    evals = {h: [(e["step"], e[f"eval_{h}_top1"]) for e in log_history if f"eval_{h}_top1" in e and "step" in e]
             for h in HEADS}
    train, evals = {k: v for k, v in train.items() if v}, {k: v for k, v in evals.items() if v}
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display: training nodes and CI are headless
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, points in train.items():
        ax_loss.plot(*zip(*points), label=name)
    ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss")
    for head, points in evals.items():
        ax_acc.plot(*zip(*points), marker="o", label=head)
    ax_acc.set(xlabel="step", ylabel="top-1 (%)", title="Evaluation top-1 per head")
    for ax in (ax_loss, ax_acc):
        if ax.lines:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _recipe(args: Any, data_args: Any, config: DeiTConfig) -> dict[str, Any]:
    """The hyper-parameters worth a row in the card, in reading order; absent fields are skipped."""
    world = getattr(args, "world_size", 1) or 1
    per_device = getattr(args, "per_device_train_batch_size", None)
    recipe: dict[str, Any] = {}
    if getattr(args, "max_steps", -1) and args.max_steps > 0:
        recipe["steps"] = args.max_steps
    elif hasattr(args, "num_train_epochs"):
        recipe["epochs"] = args.num_train_epochs
    if per_device:
        recipe["batch size (total)"] = per_device * world * getattr(args, "gradient_accumulation_steps", 1)
    for label, name in (("optimizer", "optim"), ("learning rate", "learning_rate"), ("weight decay", "weight_decay"),
                        ("lr schedule", "lr_scheduler_type"), ("warmup epochs", "warmup_epochs"),
                        ("warmup steps", "warmup_steps"), ("warmup ratio", "warmup_ratio"),
                        ("EMA decay", "model_ema_decay")):
        value = getattr(args, name, None)
        if value not in (None, 0, 0.0):
            recipe[label] = getattr(value, "value", value)  # enums (optim, scheduler) -> their string
    if data_args is not None:
        for label, name in (("image size", "image_size"), ("RandAugment", "auto_augment"), ("mixup alpha", "mixup"),
                            ("cutmix alpha", "cutmix"), ("label smoothing", "label_smoothing"),
                            ("random erasing", "reprob"), ("repeated augmentation", "repeated_aug")):
            if hasattr(data_args, name):
                value = getattr(data_args, name)
                recipe[label] = "off" if value is None else value
    recipe["drop path"] = config.drop_path_rate
    return recipe


def model_card_from_trainer(trainer: Any) -> ModelCard:
    """The card for a finished `DistillationTrainer` (a plain `transformers.Trainer` works too).

    Also writes `training_curves.png` into `trainer.args.output_dir` when the log has losses or eval top-1.
    """
    args, config = trainer.args, trainer.model.config
    data_args = getattr(trainer, "data_args", None)
    history = trainer.state.log_history
    # The last evaluation in the log is the one the card reports (the final model's, when evaluated last).
    last_eval = next((entry for entry in reversed(history) if head_metrics(entry)), {})
    curves = plot_training_curves(history, Path(args.output_dir) / CURVES_FILENAME) if args.should_save else None
    distillation_type = getattr(args, "distillation_type", None)
    return build_model_card(
        config,
        # A fine-tuned student was loaded with from_pretrained, which records where from; a student built from a
        # preset has an empty `_name_or_path`. (Local paths are dropped by build_model_card: not Hub ids.)
        base_model=config._name_or_path or None,
        # `teacher_source` (what the trainer actually loaded) wins: args name the default teacher even when a
        # module was passed to the trainer instead.
        teacher=getattr(trainer, "teacher_source", None) or getattr(args, "teacher_name_or_path", None),
        distillation_type=distillation_type,
        alpha=getattr(args, "distillation_alpha", None),
        tau=getattr(args, "distillation_tau", None),
        dataset=getattr(data_args, "dataset_name", None),
        eval_split=getattr(data_args, "eval_split", None),
        train_examples=len(trainer.train_dataset) if has_length(trainer.train_dataset) else None,
        recipe=_recipe(args, data_args, config),
        eval_results=last_eval,
        curves_png=CURVES_FILENAME if curves else None,
        repo_id=getattr(args, "hub_model_id", None) or Path(args.output_dir).name,
    )


def push_model_to_hub(
    model: Any,
    repo_id: str,
    *,
    image_processor: Any = None,
    card: ModelCard | None = None,
    commit_message: str = "Upload hf_deit model",
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str = "50GB",
    tags: list[str] | None = None,
):
    """Upload weights (safetensors), config, model code, image processor and card in one commit.

    transformers' `PreTrainedModel.push_to_hub` uploads neither the image processor nor our card (it writes a
    generic README), hence this helper. When `card` is None and the model was loaded from a local folder that has a
    README.md (e.g. a training run's output_dir), that card and its curves PNG are reused, since they hold the
    training details the model object no longer knows; otherwise `build_model_card(model.config)` is used.
    The keyword arguments are those of transformers' `push_to_hub`; `tags` are added to the card's tags.
    """
    from .. import __version__
    from ..models.image_processing import image_processor_for

    api = HfApi(library_name="hf_deit", library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    # A model loaded from a saved folder (a run's output_dir) has its card there. An unsaved model has an empty
    # name_or_path, which must not resolve to the current directory and pick up whatever README.md lies there.
    name_or_path = str(getattr(model.config, "name_or_path", "") or "")
    source_dir = Path(name_or_path) if name_or_path and (Path(name_or_path) / "config.json").is_file() else None
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        (image_processor or image_processor_for(model.config)).save_pretrained(folder)
        if card is None and source_dir is not None and (source_dir / "README.md").is_file():
            card = ModelCard.load(source_dir / "README.md")
            if (source_dir / CURVES_FILENAME).is_file():
                shutil.copy(source_dir / CURVES_FILENAME, folder)
        card = card or build_model_card(model.config, repo_id=repo_id)
        card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *(tags or [])]))
        card.save(Path(folder) / "README.md")
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message, commit_description=commit_description,
            token=token, revision=revision, create_pr=create_pr,
        )


__all__ = [
    "build_model_card",
    "model_card_from_trainer",
    "plot_training_curves",
    "push_model_to_hub",
    "head_metrics",
    "eval_results_for",
    "count_parameters",
]

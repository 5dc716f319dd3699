"""Model cards for hf_deit checkpoints: what a card states (`ModelCardFacts`, plain values) rendered by the Jinja
template `hf_deit/hub/templates/model_card.md` (all the card's wording) with `huggingface_hub.ModelCard.from_template`,
plus the training-curves PNG and an upload helper.

Entry points:
  * `build_model_card(config, ...)`: any checkpoint (trained here, or converted with only `source=`).
  * `render_model_card(facts)`: the card for `ModelCardFacts`; after training, `DistillationTrainer.create_model_card`
    gathers them (hf_deit.distillation.card_facts) and writes `output_dir/README.md` + `training_curves.png`.
  * `push_model_to_hub(model, repo_id, ...)`: weights + config + code + image processor + card (+ curves and
    token analysis from the model's folder) in one commit; `push_folder(dir, repo_id)` is `hf-deit push`.

Accuracies are written as percentages (two decimals) both in the table and in the `model-index` metadata, the
convention of ImageNet leaderboards and timm's cards.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants, get_token
from transformers import BaseImageProcessor, PreTrainedModel

from ..models.configuration_deit import DeiTConfig, eval_resize_size
from ..models.modeling_deit import HEADS
from ..sources import locate

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
CURVES_FILENAME = "training_curves.png"
ANALYSIS_DIRNAME = "analysis"  # `hf-deit analyze` writes here by default and links it from the card
TAGS = ["image-classification", "deit", "distillation", "hf_deit", "vision"]
RecipeValue = str | int | float  # a hyper-parameter as the card prints it


def count_parameters(config: DeiTConfig) -> int:
    """Parameters of `DeiTForImageClassification(config)`, counted on the meta device (no memory, no init)."""
    from ..models.modeling_deit import DeiTForImageClassification

    with torch.device("meta"):
        model = DeiTForImageClassification(config)
    return sum(p.numel() for p in model.parameters())


def hub_id(spec: str | None) -> str | None:
    """`spec` when it can be a Hub id; None when it is empty or a local path (the Hub's metadata refuses those)."""
    return spec if spec and not locate(spec).local else None


@dataclass(frozen=True)
class Reference:
    """A dataset or teacher as a public card may name it: a Hub id / timm name as given, or only the folder name of a
    local path (the training machine's paths mean nothing to readers)."""

    name: str
    local: bool = False

    @classmethod
    def of(cls, spec: str | None) -> Reference | None:
        if not spec:
            return None
        return cls(Path(spec).name, True) if locate(spec).local else cls(spec)


@dataclass(frozen=True)
class ArchitectureFacts:
    """What the card says about the network, read off its config (`ArchitectureFacts.of`)."""

    preset: str | None
    distilled: bool
    fusion: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    mlp_ratio: float
    num_parameters: int
    image_size: int
    patch_size: int
    num_tokens: int
    num_labels: int
    resize_to: int  # evaluation preprocessing: short side before the center crop

    @classmethod
    def of(cls, config: DeiTConfig) -> ArchitectureFacts:
        return cls(
            preset=config.preset_name(),
            distilled=bool(config.use_distillation_token),
            fusion=config.fusion,
            num_hidden_layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            num_attention_heads=config.num_attention_heads,
            mlp_ratio=config.mlp_ratio,
            num_parameters=count_parameters(config),
            image_size=config.image_size,
            patch_size=config.patch_size,
            num_tokens=config.num_patches + config.num_prefix_tokens,
            num_labels=config.num_labels,
            resize_to=eval_resize_size(config.image_size, config.crop_pct),
        )


@dataclass(frozen=True)
class ModelCardFacts:
    """Everything a model card states, as plain values; `templates/model_card.md` words them.

    Filled by `build_model_card` from keyword arguments, or after training by
    `hf_deit.distillation.card_facts.gather_card_facts(trainer)`.
    """

    architecture: ArchitectureFacts
    repo_id: str | None = None  # Hub id: the usage snippet and the model-index name
    base_model: str | None = None  # a Hub id only (a local path fails the Hub's metadata check)
    source: str | None = None  # where converted weights came from
    dataset: Reference | None = None
    train_examples: int | None = None  # training images before repeated augmentation
    distillation_type: str | None = None  # "none", "soft", "hard"; None when no training is recorded
    teacher: Reference | None = None
    alpha: float | None = None
    tau: float | None = None
    recipe: dict[str, RecipeValue] = field(default_factory=dict)  # hyper-parameter label -> value, reading order
    results: dict[str, dict[str, float]] = field(default_factory=dict)  # head -> {"top1": %, "top5": %}
    eval_split: str | None = None
    curves_png: str | None = None  # relative to the card

    @property
    def model_name(self) -> str:
        return (self.repo_id or "").split("/")[-1] or self.architecture.preset or "hf-deit-model"


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


def _card_data(facts: ModelCardFacts) -> ModelCardData:
    """The YAML metadata. `model-index` only for results on named data (the Hub's leaderboard needs a dataset)."""
    dataset = facts.dataset
    model_index = bool(facts.results and dataset)
    return ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=list(TAGS),
        datasets=[dataset.name] if dataset and not dataset.local else None,
        base_model=facts.base_model,
        metrics=["accuracy"] if facts.results else None,
        model_name=facts.model_name if model_index else None,
        eval_results=(
            eval_results_for(facts.results, dataset.name, Path(dataset.name).name, facts.eval_split)
            if model_index
            else None
        ),
    )


def render_model_card(facts: ModelCardFacts) -> ModelCard:
    """The card for `facts`: metadata from `_card_data`, text from `templates/model_card.md`."""
    from .. import __version__

    # Results in the table's order (HEADS), whatever order the metrics came in.
    results = {head: facts.results[head] for head in HEADS if head in facts.results}
    return ModelCard.from_template(
        _card_data(facts),
        template_path=str(TEMPLATE_PATH),
        facts=facts,
        model=facts.architecture,
        results=results,
        hf_deit_version=__version__,
    )


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
    recipe: Mapping[str, RecipeValue] | None = None,
    eval_results: Mapping[str, float] | None = None,
    curves_png: str | None = None,
    repo_id: str | None = None,
) -> ModelCard:
    """Render the card for a model with `config`.

    Args:
        base_model: Hub id the weights start from (fine-tunes, conversions); goes to the `base_model` metadata
            (a local path is left out).
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
    facts = ModelCardFacts(
        architecture=ArchitectureFacts.of(config),
        repo_id=repo_id,
        base_model=hub_id(base_model),
        source=source,
        dataset=Reference.of(dataset),
        train_examples=train_examples,
        distillation_type=distillation_type,
        teacher=Reference.of(teacher),
        alpha=alpha,
        tau=tau,
        recipe=dict(recipe or {}),
        results=head_metrics(eval_results or {}),
        eval_split=eval_split,
        curves_png=curves_png,
    )
    return render_model_card(facts)


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


def check_hub_access(token: str | bool | None = None) -> None:
    """Fail before any upload work, in one sentence, when the Hub cannot be written to from here: offline mode is on
    (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) or no token is given or stored."""
    if constants.is_offline_mode():
        raise ConnectionError(
            "the Hugging Face Hub is switched off here (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set): unset it "
            "to upload"
        )
    if token is False or (not isinstance(token, str) and get_token() is None):
        raise PermissionError(
            "no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access)"
        )


def _create_repo(api: HfApi, repo_id: str, private: bool | None, token: str | bool | None) -> str:
    try:
        return api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    except Exception as error:  # noqa: BLE001  (the HTTP client's own errors, e.g. httpx's, name no Hub)
        if type(error).__module__.split(".")[0].startswith("httpx"):
            raise ConnectionError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT}: {error}") from error
        raise


def _copy_run_files(source_dir: Path | None, folder: str, with_card: bool) -> None:
    """The card (when `with_card`), its curves PNG and the token analysis of a model's saved folder."""
    if source_dir is None:
        return
    if with_card and (source_dir / CURVES_FILENAME).is_file():
        shutil.copy(source_dir / CURVES_FILENAME, folder)
    # Only the default analysis location: the card links it by a path relative to the card.
    if (source_dir / ANALYSIS_DIRNAME).is_dir():
        shutil.copytree(source_dir / ANALYSIS_DIRNAME, Path(folder) / ANALYSIS_DIRNAME)


def push_model_to_hub(
    model: PreTrainedModel,
    repo_id: str,
    *,
    image_processor: BaseImageProcessor | None = None,
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
    training details the model object no longer knows; otherwise `build_model_card(model.config)` is used. That
    folder's `analysis/` (`hf-deit analyze`) goes too. `revision`: a branch, created when missing.
    The keyword arguments are those of transformers' `push_to_hub`; `tags` are added to the card's tags.
    """
    from .. import __version__
    from ..models.image_processing import image_processor_for

    check_hub_access(token)
    api = HfApi(library_name="hf_deit", library_version=__version__)
    repo_id = _create_repo(api, repo_id, private, token)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
    # A model loaded from a saved folder (a run's output_dir) has its card there. An unsaved model has an empty
    # name_or_path, which must not resolve to the current directory and pick up whatever README.md lies there.
    name_or_path = str(getattr(model.config, "name_or_path", "") or "")
    source_dir = Path(name_or_path) if name_or_path and (Path(name_or_path) / "config.json").is_file() else None
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        (image_processor or image_processor_for(model.config)).save_pretrained(folder)
        reuse_card = card is None and source_dir is not None and (source_dir / "README.md").is_file()
        if reuse_card:
            card = ModelCard.load(source_dir / "README.md")
        _copy_run_files(source_dir, folder, with_card=reuse_card)
        card = card or build_model_card(model.config, repo_id=repo_id)
        card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *(tags or [])]))
        card.save(Path(folder) / "README.md")
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message, commit_description=commit_description,
            token=token, revision=revision, create_pr=create_pr,
        )


def push_folder(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
):
    """`hf-deit push MODEL REPO_ID`: a saved model folder (weights, config, code, image processor, card, curves,
    analysis) to the Hub, in one commit, through `push_model_to_hub`."""
    from ..models.image_processing import DeiTImageProcessor
    from ..models.modeling_deit import DeiTForImageClassification

    folder = Path(model_dir).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved model folder (it has no config.json)")
    check_hub_access(token)  # before loading the weights
    model = DeiTForImageClassification.from_pretrained(folder)
    processor = DeiTImageProcessor.from_pretrained(folder) if (folder / "preprocessor_config.json").is_file() else None
    return push_model_to_hub(model, repo_id, image_processor=processor, private=private, revision=revision, token=token)


__all__ = [
    "ArchitectureFacts",
    "ModelCardFacts",
    "Reference",
    "build_model_card",
    "render_model_card",
    "plot_training_curves",
    "push_model_to_hub",
    "push_folder",
    "check_hub_access",
    "head_metrics",
    "hub_id",
    "eval_results_for",
    "count_parameters",
]

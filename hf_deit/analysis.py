"""The paper's analysis of a distilled DeiT's two tokens (Touvron et al. 2021, section 5.2 and Table 4).

    hf-deit analyze runs/demo/deit_tiny_distilled_mnist runs/demo/mnist --split test --teacher runs/demo/teacher

    result = analyze_model(model, eval_loader, teacher=frozen_teacher)   # TokenAnalysis
    write_analysis(result, "out/analysis")                             # analysis.{json,md} + attention_maps.png

What is measured, on evaluation images:
  * cosine similarity between the cls and the distillation token, layer by layer: after the embeddings (tokens +
    position embeddings), after each block, and after the final norm (what the heads read). The paper reports 0.06
    at the input and 0.93 at the output for its trained DeiT-B: the tokens become similar but not identical.
  * agreement (the fraction of images with the same top-1 class) between the cls head, the distillation head, the
    fused prediction and, when a teacher is given, the teacher; and each one's top-1 against the labels (the paper's
    disagreement analysis: the distillation head agrees more with the convnet teacher than the cls head does).
  * attention of both tokens to the patches in the last block, averaged over heads, on a few images (PNG).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

# The per-image token maths live in app.py, the demo page's file, which a Space runs where hf_deit is not installed.
from .app import prefix_attention_maps, token_cosine_similarity
from .models.modeling_deit import DeiTForImageClassification
from .sources import require_source

ANALYSIS_JSON = "analysis.json"
ANALYSIS_MD = "analysis.md"
ATTENTION_PNG = "attention_maps.png"
CARD_MARKER = "<!-- hf_deit analyze -->"  # the model card section written by `link_from_model_card`


@dataclass
class TokenAnalysis:
    """What `analyze_model` measured. Agreements and accuracies are fractions in [0, 1]."""

    layer_names: list[str]  # "embeddings", "block 1" ... "block L", "final norm"
    cosine_similarity: list[float]  # mean over images of cos(cls token, distillation token), per layer_names entry
    agreement: dict[str, float]  # "cls vs distillation", "cls vs teacher", ... (same top-1 class)
    top1: dict[str, float]  # "cls", "distillation", "fused" (and "teacher") against the labels
    num_images: int
    attention_maps: torch.Tensor | None = field(default=None, repr=False)  # (images, 2, grid_h, grid_w)
    attention_images: torch.Tensor | None = field(default=None, repr=False)  # (images, 3, H, W), normalised

    def to_dict(self) -> dict:
        record = asdict(self)
        record.pop("attention_maps"), record.pop("attention_images")
        return record


class _Counts:
    """Running sums for `analyze_model`: agreement and accuracy counts, cosine sums."""

    def __init__(self) -> None:
        self.same: dict[str, int] = {}
        self.correct: dict[str, int] = {}
        self.cosine: torch.Tensor | None = None
        self.images = 0

    def add(self, predictions: dict[str, torch.Tensor], labels: torch.Tensor, cosine: torch.Tensor) -> None:
        names = list(predictions)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                key = f"{first} vs {second}"
                self.same[key] = self.same.get(key, 0) + int((predictions[first] == predictions[second]).sum())
        for name, predicted in predictions.items():
            self.correct[name] = self.correct.get(name, 0) + int((predicted == labels).sum())
        summed = cosine.sum(dim=1)
        self.cosine = summed if self.cosine is None else self.cosine + summed
        self.images += len(labels)


@torch.no_grad()
def analyze_model(
    model: DeiTForImageClassification,
    batches: Iterable[dict[str, torch.Tensor]],
    teacher: nn.Module | None = None,
    num_attention_images: int = 4,
) -> TokenAnalysis:
    """Measure the two tokens of a distilled DeiT over `batches` ({"pixel_values", "labels"}, the student's
    evaluation preprocessing). `teacher`: a `FrozenTeacher` (or any module taking the student's batch -> logits).
    Attention maps are kept for `num_attention_images` images, each of another class."""
    config = model.config
    if not config.use_distillation_token:
        raise ValueError("analyze_model needs a distilled DeiT (use_distillation_token=True): a plain DeiT has one token.")
    model.eval()
    device = next(model.parameters()).device
    counts, maps, images, shown = _Counts(), [], [], set()
    for batch in tqdm(batches, desc="Analysing", unit="batch"):
        pixel_values, labels = batch["pixel_values"].to(device), batch["labels"].to(device)
        outputs = model(pixel_values=pixel_values, output_hidden_states=True, output_attentions=True)
        predictions = {
            "cls": outputs.cls_logits.argmax(-1),
            "distillation": outputs.distillation_logits.argmax(-1),
            "fused": outputs.logits.argmax(-1),
        }
        if teacher is not None:
            predictions["teacher"] = teacher(pixel_values).argmax(-1)
        counts.add(predictions, labels, token_cosine_similarity(outputs.hidden_states, model.deit.layernorm))
        # Attention maps of the first image of each class not shown yet (an evaluation split is often class-sorted).
        picked = []
        for row, label in enumerate(labels.tolist()):
            if len(shown) < num_attention_images and label not in shown:
                shown.add(label)
                picked.append(row)
        if picked:
            grid = model.deit.embeddings.grid_size
            maps.append(prefix_attention_maps(outputs.attentions[-1][picked], config.num_prefix_tokens, grid).cpu())
            images.append(pixel_values[picked].float().cpu())
    if counts.images == 0:
        raise ValueError("analyze_model got no images: the dataset is empty.")
    names = ["embeddings"] + [f"block {i + 1}" for i in range(config.num_hidden_layers)] + ["final norm"]
    return TokenAnalysis(
        layer_names=names,
        cosine_similarity=[round(float(v) / counts.images, 6) for v in counts.cosine],
        agreement={key: round(value / counts.images, 6) for key, value in counts.same.items()},
        top1={key: round(value / counts.images, 6) for key, value in counts.correct.items()},
        num_images=counts.images,
        attention_maps=torch.cat(maps) if maps else None,
        attention_images=torch.cat(images) if images else None,
    )


def render_markdown(result: TokenAnalysis, png_name: str | None = ATTENTION_PNG) -> str:
    lines = [
        f"# Token analysis ({result.num_images} evaluation images)",
        "",
        "Cosine similarity between the cls and the distillation token (mean over images), layer by layer. The DeiT "
        "paper reports 0.06 after the embeddings and 0.93 after the last layer for its trained DeiT-B.",
        "",
        "| layer | cosine(cls, distillation) |",
        "|---|---:|",
        *(f"| {name} | {value:.3f} |" for name, value in zip(result.layer_names, result.cosine_similarity)),
        "",
        "Agreement: the fraction of images on which two predictions have the same top-1 class.",
        "",
        "| pair | agreement (%) |",
        "|---|---:|",
        *(f"| {pair} | {100 * value:.1f} |" for pair, value in result.agreement.items()),
        "",
        "| prediction | top-1 against the labels (%) |",
        "|---|---:|",
        *(f"| {name} | {100 * value:.1f} |" for name, value in result.top1.items()),
    ]
    if png_name and result.attention_maps is not None:
        lines += [
            "",
            "Attention of the cls and distillation tokens to the patches in the last block, averaged over heads:",
            "",
            f"![attention maps]({png_name})",
        ]
    return "\n".join(lines) + "\n"


def plot_attention_maps(result: TokenAnalysis, path: str, mean: Iterable[float], std: Iterable[float]) -> str:
    """One row per image: the image (un-normalised), the cls token's map, the distillation token's map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps, images = result.attention_maps, result.attention_images
    rows = len(maps)
    fig, axes = plt.subplots(rows, 3, figsize=(5.4, 1.8 * rows), squeeze=False)
    mean_t = torch.tensor(list(mean)).view(3, 1, 1)
    std_t = torch.tensor(list(std)).view(3, 1, 1)
    for row in range(rows):
        image = (images[row] * std_t + mean_t).clamp(0, 1).permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
        panels = [(image, "image"), (maps[row, 0], "cls token"), (maps[row, 1], "distillation token")]
        for col, (panel, title) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(panel.numpy(), cmap=None if col == 0 else "viridis", interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def write_analysis(
    result: TokenAnalysis,
    output_dir: str,
    mean: Iterable[float] = (0.485, 0.456, 0.406),
    std: Iterable[float] = (0.229, 0.224, 0.225),
) -> dict[str, str]:
    """analysis.json (the figures), analysis.md (the tables) and attention_maps.png in `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, ANALYSIS_JSON), "markdown": os.path.join(output_dir, ANALYSIS_MD)}
    with open(paths["json"], "w") as f:
        json.dump(result.to_dict(), f, indent=1)
    png = None
    if result.attention_maps is not None and len(result.attention_maps):
        png = plot_attention_maps(result, os.path.join(output_dir, ATTENTION_PNG), mean, std)
        paths["png"] = png
    with open(paths["markdown"], "w") as f:
        f.write(render_markdown(result, ATTENTION_PNG if png else None))
    return paths


def link_from_model_card(model_dir: str, analysis_dir: str, result: TokenAnalysis) -> bool:
    """Add (or replace) a short "Token analysis" section in `model_dir`/README.md linking to the analysis.

    Returns False when the folder has no model card. The section sits after CARD_MARKER, at the end of the card.
    """
    card = os.path.join(model_dir, "README.md")
    if not os.path.isfile(card):
        return False
    relative = os.path.relpath(analysis_dir, model_dir)
    with open(card) as f:
        text = f.read().split(CARD_MARKER)[0].rstrip()
    final = result.cosine_similarity[-1]
    section = (
        f"\n\n{CARD_MARKER}\n## Token analysis\n\n"
        f"On {result.num_images} evaluation images the cls and distillation tokens have cosine similarity "
        f"{result.cosine_similarity[0]:.3f} after the embeddings and {final:.3f} after the final norm; the two heads "
        f"agree on {100 * result.agreement['cls vs distillation']:.1f}% of the images. Tables: "
        f"[{relative}/{ANALYSIS_MD}]({relative}/{ANALYSIS_MD}); attention maps: "
        f"[{relative}/{ATTENTION_PNG}]({relative}/{ATTENTION_PNG}) (`hf-deit analyze`).\n"
    )
    with open(card, "w") as f:
        f.write(text + section)
    return True


def analyze_cli(
    model_path: str,
    data: str,
    *,
    split: str = "validation",
    teacher: str | None = None,
    output_dir: str | None = None,
    max_samples: int | None = None,
    num_images: int = 4,
    batch_size: int = 64,
    device: str | None = None,
) -> tuple[TokenAnalysis, dict[str, str]]:
    """`hf-deit analyze`: load the model and the evaluation split (preprocessed as the model's image processor does),
    analyse, write the files (default: <model_path>/analysis) and link them from the model's card when it has one."""
    from torch.utils.data import DataLoader

    from .data import DataArguments, DeiTCollator, build_datasets
    from .distillation.teacher import load_teacher

    source = require_source(model_path, "model folder")  # a missing local folder is said so, not sent to the Hub
    model = DeiTForImageClassification.from_pretrained(source.location)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    # Preprocess as the model's image processor does (image_processor_for: its input size and its crop_pct), not
    # with the data arguments' default crop.
    config = model.config
    data_args = DataArguments(dataset_name=data, eval_split=split, image_size=config.image_size,
                              eval_crop_pct=config.crop_pct, max_eval_samples=max_samples)  # fmt: skip
    dataset = build_datasets(data_args, do_train=False).eval_dataset
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=DeiTCollator())
    frozen = load_teacher(teacher, num_labels=model.config.num_labels, device=device) if teacher else None
    result = analyze_model(model, loader, teacher=frozen, num_attention_images=num_images)
    output_dir = output_dir or os.path.join(model_path, "analysis")
    paths = write_analysis(result, output_dir)
    if source.local and link_from_model_card(model_path, output_dir, result):
        paths["model_card"] = os.path.join(model_path, "README.md")
    return result, paths


__all__ = [
    "TokenAnalysis",
    "analyze_model",
    "analyze_cli",
    "link_from_model_card",
    "prefix_attention_maps",
    "render_markdown",
    "token_cosine_similarity",
    "write_analysis",
]

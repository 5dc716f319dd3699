"""The demo page: one image through a distilled DeiT's three heads, with its two tokens' attention over the image.

    hf-deit app runs/deit_cifar10 --teacher runs/teacher_cifar10 --examples photos/   # where hf_deit is installed
    python app.py                       # in a folder written by `hf-deit space` (it reads app_config.json there)
    python app.py MODEL [--examples DIR] [--port N]

What the page shows for an image: the top-5 of the fused, cls and distillation heads (and of the teacher, when one
is given) side by side; where the heads disagree; the attention of the cls and the distillation token to the patches,
in the last block and as attention rollout over all blocks; the cosine similarity of the two tokens layer by layer.
That is `hf-deit analyze` (hf_deit/analysis.py) for one image, with the same functions.

This file runs alone: `hf-deit space` copies it unchanged as a Hugging Face Space's app.py, where hf_deit is not
installed. So it imports torch, numpy, Pillow and transformers (gradio when the page is built) and nothing of
hf_deit; the model loads through the Auto classes with the code saved in its folder (trust_remote_code=True). For the
same reason the token maths that `hf-deit analyze` uses live here, and analysis.py imports them from this file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

APP_CONFIG = "app_config.json"  # beside a Space's app.py: {"model": ..., "examples": ..., "title": ...}
HEADS = ("fused", "cls", "distillation")
INSTALL_HINT = 'the demo page needs gradio: pip install -e ".[app]" (or pip install "hf_deit[app]")'
DISPLAY_SIDE = 224  # attention panels are enlarged (whole pixels per patch) to at least this many pixels

# A teacher for the page: the student's normalised pixel_values (1, 3, H, W) -> logits over the student's classes
# (hf_deit's FrozenTeacher is one: it renormalises and resizes for itself, as in training).
Teacher = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------
# The token maths (also used by `hf-deit analyze` over a whole evaluation split)
# ---------------------------------------------------------------------------------------------------------------


def token_cosine_similarity(hidden_states: Iterable[torch.Tensor], final_norm: nn.Module) -> torch.Tensor:
    """Per-image cosine similarity of token 0 (cls) and token 1 (distillation): (layers + 2, batch).

    `hidden_states`: the model's `output_hidden_states` (embeddings output, then each block's output); the last
    row adds the final norm applied to the last block's output, the representation the two heads read.
    """
    states = list(hidden_states)
    states.append(final_norm(states[-1]))
    return torch.stack([F.cosine_similarity(h[:, 0].float(), h[:, 1].float(), dim=-1) for h in states])


def prefix_attention_maps(attention: torch.Tensor, num_prefix_tokens: int, grid: tuple[int, int]) -> torch.Tensor:
    """Attention of the cls and distillation tokens to the patches, averaged over heads: (batch, 2, gh, gw).

    `attention`: one block's probabilities (batch, heads, seq, seq) with seq = prefix tokens + gh * gw patches.
    The values are the attention probabilities themselves (each row of the full matrix sums to 1 over all tokens,
    so a map sums to less than 1 by what the token gives to the two prefix tokens).
    """
    mean = attention.float().mean(dim=1)  # (batch, seq, seq)
    to_patches = mean[:, :2, num_prefix_tokens:]  # (batch, 2, gh * gw): rows of the cls and distillation tokens
    return to_patches.reshape(attention.shape[0], 2, *grid)


def attention_rollout(
    attentions: Sequence[torch.Tensor], num_prefix_tokens: int, grid: tuple[int, int]
) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) of the cls and distillation tokens to the patches: (batch, 2, gh, gw).

    Each block's attention, averaged over heads, gets the identity added for the residual connection and its rows
    renormalised; the blocks' matrices are multiplied, last block leftmost. A row of the product sums to 1 over all
    tokens of the input, so, as for `prefix_attention_maps`, a map sums to less than 1.
    """
    rollout = None
    for attention in attentions:
        mean = attention.float().mean(dim=1)  # (batch, seq, seq)
        mixed = mean + torch.eye(mean.shape[-1], device=mean.device)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    if rollout is None:
        raise ValueError("attention_rollout needs the attention of at least one block.")
    return rollout[:, :2, num_prefix_tokens:].reshape(rollout.shape[0], 2, *grid)


# ---------------------------------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Explanation:
    """What the page shows for one image. Probabilities are in [0, 1]."""

    predictions: dict[str, dict[str, float]]  # head -> {label: probability}, top-k, best first
    crop: np.ndarray  # (H, W, 3) uint8: the pixels the model saw (after resize, crop), un-normalised
    maps: dict[str, torch.Tensor] = field(repr=False)  # "cls token, last block" ... -> (gh, gw)
    layer_names: list[str] = field(default_factory=list)  # "embeddings", "block 1", ..., "final norm"
    cosine: list[float] = field(default_factory=list)  # cos(cls token, distillation token) per layer_names entry

    @property
    def top1(self) -> dict[str, str]:
        return {head: next(iter(scores)) for head, scores in self.predictions.items()}


def decode_image(path: str | os.PathLike) -> Image.Image:
    """An image file -> RGB, upright (EXIF orientation applied). hf_deit's own decoder (hf-deit predict) also scales
    16-bit PNGs to 8 bits; the two agree on 8-bit files (JPEG, ordinary PNG)."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def top_classes(logits: torch.Tensor, id2label: dict[int, str], top_k: int) -> dict[str, float]:
    """Softmax over one image's logits -> {label: probability} for the top_k classes, best first."""
    probabilities = logits.float().softmax(dim=-1)
    top = probabilities.topk(min(top_k, probabilities.shape[-1]))
    return {id2label[int(i)]: round(float(p), 6) for p, i in zip(top.values, top.indices)}


def _check_distilled(model: nn.Module) -> None:
    if not getattr(model.config, "use_distillation_token", False):
        raise ValueError(
            "The demo page shows a distilled DeiT's cls and distillation heads; this model has no distillation token "
            "(use_distillation_token=False). Use `hf-deit predict` for it."
        )


@torch.no_grad()
def explain(model: nn.Module, processor, image: Image.Image, teacher: Teacher | None = None, top_k: int = 5):
    """Run one image through `model` (a distilled hf_deit DeiTForImageClassification, local or remote code) with
    its image processor; the teacher, when given, sees the same crop. Returns an `Explanation`."""
    _check_distilled(model)
    model.eval()
    device = next(model.parameters()).device
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"].to(device)
    # output_attentions: the model computes these blocks with eager attention (the only kernel returning them).
    outputs = model(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
    logits = {"fused": outputs.logits, "cls": outputs.cls_logits, "distillation": outputs.distillation_logits}
    if teacher is not None:
        logits["teacher"] = teacher(pixel_values)
    id2label = {int(i): label for i, label in model.config.id2label.items()}
    predictions = {head: top_classes(value[0], id2label, top_k) for head, value in logits.items()}

    prefix, grid = model.config.num_prefix_tokens, tuple(model.deit.embeddings.grid_size)
    last = prefix_attention_maps(outputs.attentions[-1], prefix, grid)[0].cpu()
    rollout = attention_rollout(outputs.attentions, prefix, grid)[0].cpu()
    maps = {
        "cls token, last block": last[0], "distillation token, last block": last[1],
        "cls token, rollout": rollout[0], "distillation token, rollout": rollout[1],
    }  # fmt: skip
    cosine = token_cosine_similarity(outputs.hidden_states, model.deit.layernorm)[:, 0].tolist()
    blocks = [f"block {i + 1}" for i in range(model.config.num_hidden_layers)]
    return Explanation(
        predictions=predictions,
        crop=_unnormalise(pixel_values[0].float().cpu(), processor.image_mean, processor.image_std),
        maps=maps,
        layer_names=["embeddings", *blocks, "final norm"],
        cosine=[round(float(v), 4) for v in cosine],
    )


def _unnormalise(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    image = pixels * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


# A perceptually ordered colour map (five stops of matplotlib's "inferno"), so the page needs no matplotlib.
_INFERNO = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


def enlarged(pixels: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """(h, w[, 3]) uint8 -> an image of `size` (width, height) without smoothing: patches stay square and sharp."""
    return Image.fromarray(pixels).resize(size, Image.NEAREST)


def display_size(crop: np.ndarray) -> tuple[int, int]:
    """(width, height) of the crop enlarged by a whole factor to at least DISPLAY_SIDE pixels."""
    height, width = crop.shape[:2]
    scale = max(1, math.ceil(DISPLAY_SIDE / max(height, width)))
    return width * scale, height * scale


def heatmap_overlay(crop: np.ndarray, attention_map: torch.Tensor, alpha: float = 0.6) -> Image.Image:
    """The attention map over the crop: each patch coloured by its attention, from the map's lowest (dark) to its
    highest value (bright), and blended with the image, at `display_size`."""
    values = attention_map.float().numpy()
    spread = values.max() - values.min()
    values = (values - values.min()) / spread if spread > 0 else np.zeros_like(values)
    stops = np.linspace(0, 1, len(_INFERNO))
    colours = np.stack([np.interp(values, stops, _INFERNO[:, c]) for c in range(3)], axis=-1).astype(np.uint8)
    size = display_size(crop)
    return Image.blend(enlarged(crop, size), enlarged(colours, size), alpha)


def agreement_markdown(explanation: Explanation) -> str:
    """Where the heads agree and disagree, in words: the cls head learns from the labels, the distillation head
    from the teacher, the fused prediction combines them."""
    top1, scores = explanation.top1, explanation.predictions
    cls_label, dist_label = top1["cls"], top1["distillation"]
    if cls_label == dist_label:
        lines = [f"The cls and distillation heads agree: **{cls_label}**."]
    else:
        lines = [
            f"The heads disagree: the cls head (trained on the labels) says **{cls_label}** "
            f"({scores['cls'][cls_label]:.0%}), the distillation head (trained on the teacher's predictions) says "
            f"**{dist_label}** ({scores['distillation'][dist_label]:.0%}); fused: **{top1['fused']}**."
        ]
    if "teacher" in top1:
        followers = [head for head in ("cls", "distillation") if top1[head] == top1["teacher"]]
        agreeing = "both heads agree" if len(followers) == 2 else (
            f"the {followers[0]} head agrees" if followers else "neither head agrees")
        lines.append(f"The teacher says **{top1['teacher']}**: {agreeing} with it.")
    return "\n\n".join(lines)


def cosine_markdown(explanation: Explanation) -> str:
    rows = [f"| {name} | {value:.3f} |" for name, value in zip(explanation.layer_names, explanation.cosine)]
    return "\n".join(["| layer | cosine(cls token, distillation token) |", "|---|---:|", *rows])


# ---------------------------------------------------------------------------------------------------------------
# Loading and the page
# ---------------------------------------------------------------------------------------------------------------


def load_model(name_or_path: str, device: str | None = None):
    """(model, image processor) through transformers' Auto classes, with the model's own saved code (works where
    hf_deit is not installed). A local folder or a Hub id."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(name_or_path, trust_remote_code=True)
    _check_distilled(model)
    processor = AutoImageProcessor.from_pretrained(name_or_path)
    return model.to(device or "cpu").eval(), processor


def image_files(folder: str | os.PathLike | None) -> list[str]:
    """The image files directly in `folder` (sorted), for the page's examples."""
    if not folder:
        return []
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"no such examples folder: {folder}")
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    return sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the page works offline; no usage pings
    try:
        import gradio
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return gradio


def build_demo(model, processor, teacher: Teacher | None = None, examples: Sequence[str] = (), title: str = "",
               top_k: int = 5):  # fmt: skip
    """The gradio page (a `gr.Blocks`). Its one event, `explain` (also an API endpoint: gradio_client can call it),
    returns the heads' top-k, the agreement text, the attention panels and the cosine table."""
    gr = import_gradio()
    heads = [*HEADS, "teacher"] if teacher is not None else list(HEADS)

    def run(path):
        if not path:
            return [None] * len(heads) + ["", [], ""]
        result = explain(model, processor, decode_image(path), teacher=teacher, top_k=top_k)
        panels = [(enlarged(result.crop, display_size(result.crop)), "what the model sees")]
        panels += [(heatmap_overlay(result.crop, value), name) for name, value in result.maps.items()]
        return [result.predictions[h] for h in heads] + [agreement_markdown(result), panels, cosine_markdown(result)]

    title = title or f"DeiT with a distillation token: {Path(model.config.name_or_path or 'demo').name}"
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\n{_intro(model.config)}")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label="Image", elem_id="input-image", height=300)
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[image])
            agreement = gr.Markdown(elem_id="agreement")
        with gr.Row():
            labels = [gr.Label(num_top_classes=top_k, label=f"{h} head" if h in HEADS else h, elem_id=f"head-{h}")
                      for h in heads]  # fmt: skip
        maps = gr.Gallery(label="Attention to the patches (each map from its lowest, dark, to its highest, bright)",
                          elem_id="attention-maps", columns=5, height=280, object_fit="contain")  # fmt: skip
        cosine = gr.Markdown(elem_id="cosine")
        image.change(run, inputs=image, outputs=[*labels, agreement, maps, cosine], api_name="explain")
    return demo


def _intro(config) -> str:
    return (
        f"{config.num_labels} classes, {config.num_hidden_layers} blocks, {config.image_size} px input, fusion "
        f"`{config.fusion}`. Drop or pick an image. The cls head is trained on the labels, the distillation head on "
        "the teacher's predictions; the fused prediction combines them. Attention maps: what the cls and the "
        "distillation token attend to among the patches, in the last block and rolled out over all blocks."
    )


def main(argv: list[str] | None = None) -> None:
    """`python app.py [MODEL] [--examples DIR] [--port N] [--host H]`; without MODEL, app_config.json beside this
    file says what to show (what `hf-deit space` writes)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a saved distilled hf_deit folder or Hub id")
    parser.add_argument("--examples", default=None, help="a folder of example images")
    parser.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT or 7860")
    parser.add_argument("--host", default=None, help="default: $GRADIO_SERVER_NAME or 127.0.0.1 (a Space: 0.0.0.0)")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent
    settings = json.loads((here / APP_CONFIG).read_text()) if (here / APP_CONFIG).is_file() else {}
    model_spec = args.model or settings.get("model")
    if not model_spec:
        parser.error(f"give MODEL (a folder or Hub id), or put {APP_CONFIG} with a 'model' entry beside {__file__}")
    # Paths in app_config.json are relative to the Space folder; a Hub id stays as it is.
    local = here / model_spec
    model, processor = load_model(str(local) if not args.model and local.is_dir() else model_spec)
    examples_dir = args.examples or (str(here / settings["examples"]) if settings.get("examples") else None)
    demo = build_demo(model, processor, examples=image_files(examples_dir), title=settings.get("title", ""))
    demo.launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()

"""Conversion between hf_deit and the other DeiT implementations: timm, the paper's `.pth` files, transformers.

    model = from_timm(timm_model)                       # or a state dict, a .pth/.safetensors path, a timm name
    model = from_official("deit_small_distilled_patch16_224-649709d9.pth")
    model = from_transformers("facebook/deit-base-distilled-patch16-224")   # or a model / a local directory
    timm_model = to_timm(model)

Every direction goes through one explicit key map (`KEY_MAP`, timm name -> ours), used forwards by `from_timm` and
backwards by `to_timm`. The paper's checkpoints use timm's names, so `from_official` is `from_timm` after loading.
transformers v5 uses our names except for attention (separate q/k/v) and the head of its one-head class.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from ..models.configuration_deit import PRESETS, DeiTConfig
from ..models.modeling_deit import DeiTForImageClassification
from ..sources import locate, require_source

logger = logging.get_logger(__name__)

# (timm / paper name, hf_deit name). "{i}" is a block index. Shapes are identical on both sides, including the fused
# qkv projection: (3 * hidden, hidden), rows ordered q, k, v, then heads, then head_dim, as timm and the paper.
KEY_MAP: list[tuple[str, str]] = [
    ("cls_token", "deit.embeddings.cls_token"),
    ("dist_token", "deit.embeddings.distillation_token"),
    ("pos_embed", "deit.embeddings.position_embeddings"),  # (1, prefix + grid*grid, hidden), [cls, dist, patches]
    ("patch_embed.proj", "deit.embeddings.patch_embeddings.projection"),
    ("blocks.{i}.norm1", "deit.layers.{i}.layernorm_before"),
    ("blocks.{i}.attn.qkv", "deit.layers.{i}.attention.qkv_proj"),
    ("blocks.{i}.attn.proj", "deit.layers.{i}.attention.o_proj"),
    ("blocks.{i}.norm2", "deit.layers.{i}.layernorm_after"),
    ("blocks.{i}.mlp.fc1", "deit.layers.{i}.mlp.fc1"),
    ("blocks.{i}.mlp.fc2", "deit.layers.{i}.mlp.fc2"),
    ("norm", "deit.layernorm"),
    ("head", "cls_classifier"),
    ("head_dist", "distillation_classifier"),
]

# Released DeiT widths (tiny, small, base) -> heads: every DeiT model uses 64 channels per head.
_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12}


def _compile(pairs: list[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    compiled = []
    for source, target in pairs:
        pattern = re.escape(source).replace(r"\{i\}", r"(?P<i>\d+)")
        compiled.append((re.compile(rf"{pattern}(?P<suffix>\.weight|\.bias)?"), target))
    return compiled


_FORWARD = _compile(KEY_MAP)
_BACKWARD = _compile([(ours, theirs) for theirs, ours in KEY_MAP])


def _rename(state_dict: Mapping[str, torch.Tensor], rules: list[tuple[re.Pattern, str]], what: str) -> dict:
    renamed, unknown = {}, []
    for key, tensor in state_dict.items():
        for pattern, target in rules:
            match = pattern.fullmatch(key)
            if match:
                new_key = target.replace("{i}", match.group("i") or "") if "{i}" in target else target
                renamed[new_key + (match.group("suffix") or "")] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} {what} weights have no place in a DeiT model: {', '.join(unknown[:8])}"
            f"{' ...' if len(unknown) > 8 else ''}. Only DeiT (v1, plain or distilled) checkpoints convert: layer scale "
            "(DeiT III, `ls1.gamma`), register tokens, fc_norm or pre-norm variants have no equivalent here."
        )
    return renamed


def imagenet_id2label() -> dict[int, str]:
    """ImageNet-1k class names ("tench, Tinca tinca", ...), shipped offline with timm; the released checkpoints'
    label order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return {i: info.index_to_description(i) for i in range(info.num_classes())}


def _state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The tensors of an in-memory state dict, unwrapped from {"state_dict"/"model": ...} like timm's
    `load_state_dict` does for files, DDP / torch.compile prefixes removed by timm's `clean_state_dict`."""
    from timm.models import clean_state_dict

    if isinstance(checkpoint, Mapping):
        checkpoint = next((checkpoint[k] for k in ("state_dict", "model") if isinstance(checkpoint.get(k), Mapping)),
                          checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"Expected a state dict (a mapping of names to tensors), got {type(checkpoint).__name__}.")
    # Non-tensor entries (epoch counters, args) are no weights.
    return {k: v for k, v in clean_state_dict(dict(checkpoint)).items() if isinstance(v, torch.Tensor)}


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` file or a torch checkpoint, read by timm's `load_state_dict`
    (weights_only=True: no pickled code; {"state_dict"/"model": ...} unwrapped, "module." prefixes removed).
    The non-EMA weights are taken, as the paper reports them."""
    from timm.models import load_state_dict

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"No checkpoint file at {path}: {path!r} is neither an existing checkpoint file nor a timm model name "
            "(e.g. 'deit_tiny_patch16_224')."
        )
    return _state_dict(load_state_dict(str(path), use_ema=False))


def _shapes_of_timm_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The DeiTConfig fields that a timm DeiT state dict's tensor shapes show (all but the heads and numerics)."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "head.weight"):
        if key not in state_dict:
            missing = "the classification head" if key == "head.weight" else f"{key!r}"
            raise ValueError(
                f"The checkpoint has no {missing}: it is not a complete timm/DeiT image classifier "
                "(a headless model, num_classes=0, cannot be converted; reset_classifier(num_classes) first)."
            )
    hidden_size = state_dict["cls_token"].shape[-1]
    distilled = "dist_token" in state_dict
    patch_weight = state_dict["patch_embed.proj.weight"]  # (hidden, channels, patch, patch)
    patch_size, num_channels = patch_weight.shape[-1], patch_weight.shape[1]
    num_patches = state_dict["pos_embed"].shape[1] - (2 if distilled else 1)
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(
            f"pos_embed has {state_dict['pos_embed'].shape[1]} positions, which is not the prefix tokens plus a square "
            "grid of patches: position embeddings without class-token slots (DeiT III, no_embed_class) do not convert."
        )
    depth = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
    return dict(
        hidden_size=hidden_size,
        use_distillation_token=distilled,
        patch_size=patch_size,
        num_channels=num_channels,
        image_size=grid * patch_size,
        num_hidden_layers=depth,
        mlp_ratio=state_dict["blocks.0.mlp.fc1.weight"].shape[0] / hidden_size,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        num_labels=state_dict["head.weight"].shape[0],
    )


def _config_from_timm_state_dict(
    state_dict: Mapping[str, torch.Tensor], preset: str | None, known: dict[str, Any], overrides: dict[str, Any]
) -> tuple[DeiTConfig, str | None]:
    """Read the architecture off the tensor shapes; `known` holds what a timm model object states outright."""
    inferred = {**_shapes_of_timm_state_dict(state_dict), **known}
    hidden_size = inferred["hidden_size"]
    if preset is None:
        preset = DeiTConfig.find_preset(
            **{k: inferred[k] for k in ("hidden_size", "use_distillation_token", "patch_size", "image_size")}
        )
    elif preset not in PRESETS:
        DeiTConfig.from_preset(preset)  # raises the error that lists the known presets
    fields = dict(PRESETS.get(preset, {}))
    for name in ("hidden_size", "use_distillation_token"):
        if name in fields and fields[name] != inferred[name]:
            raise ValueError(
                f"preset={preset!r} has {name}={fields[name]} but the checkpoint has {name}={inferred[name]}: "
                "pass the matching preset, or none to infer it from the weights."
            )
    # The weights are the truth for every shape (a preset cut to depth 2 in tests stays depth 2); heads are not
    # visible in any shape, so they come from the model, the preset, or the width of a released DeiT.
    fields.update(inferred)
    if "num_attention_heads" not in fields and "num_attention_heads" not in overrides:
        if hidden_size not in _HEADS_BY_WIDTH:
            raise ValueError(
                f"Cannot infer the number of attention heads of a hidden_size={hidden_size} checkpoint: pass "
                "num_attention_heads=... (or the timm model itself rather than its state dict)."
            )
        fields["num_attention_heads"] = _HEADS_BY_WIDTH[hidden_size]
    if fields["num_labels"] == 1000 and "id2label" not in overrides:
        fields["id2label"] = imagenet_id2label()
        del fields["num_labels"]
    fields.update(overrides)
    return DeiTConfig(**fields), preset


def _from_timm_name(name: str) -> nn.Module:
    import timm

    if not (name.startswith("hf-hub:") or timm.is_model(name)):
        raise FileNotFoundError(
            f"{name!r} is neither an existing checkpoint file nor a timm model name (e.g. 'deit_tiny_patch16_224')."
        )
    try:
        return timm.create_model(name, pretrained=True)
    except (OSError, RuntimeError) as error:  # huggingface_hub's offline / not-found errors are OSErrors
        raise OSError(
            f"Could not download the timm weights of {name!r} ({type(error).__name__}: {error}). Without access to the "
            "Hugging Face Hub, pass a local checkpoint instead: a .pth/.safetensors path "
            "(`hf-deit convert --from timm ./deit.pth OUT`), a state dict, or a timm model object."
        ) from error


def from_timm(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor] | str | Path,
    preset: str | None = None,
    **config_overrides: Any,
) -> DeiTForImageClassification:
    """A `DeiTForImageClassification` with the weights of a timm DeiT (`VisionTransformer` or `VisionTransformerDistilled`).

    `model_or_state_dict`: a timm model; its state dict; a path to a `.pth`/`.pt`/`.bin`/`.safetensors` file; or a timm
    model name (downloaded with `timm.create_model(name, pretrained=True)`, so it needs the Hub).
    `preset`: a `DeiTConfig` preset name, needed only for a state dict whose width is not a released DeiT's.
    `config_overrides`: any `DeiTConfig` field (e.g. `fusion="cls"`, `id2label={...}`).
    The architecture is read from the weights; 1,000-class checkpoints get ImageNet class names. The result is in
    eval mode; its fused `logits` equal timm's eval output (the mean of the two heads for distilled DeiT).
    """
    known: dict[str, Any] = {}
    if isinstance(model_or_state_dict, (str, Path)):
        source = str(model_or_state_dict)
        located = locate(source)
        if located.local:  # else a timm name or Hub id (a missing local path: load_checkpoint says so)
            model_or_state_dict = load_checkpoint(located.location)
            preset = preset or _preset_from_filename(source)
        else:
            model_or_state_dict = _from_timm_name(source)
            preset = preset or _preset_from_filename(source)
    if isinstance(model_or_state_dict, nn.Module):
        known = _timm_model_facts(model_or_state_dict)
        state_dict = model_or_state_dict.state_dict()
    else:
        state_dict = _state_dict(model_or_state_dict)
    config, preset = _config_from_timm_state_dict(state_dict, preset, known, config_overrides)
    model = DeiTForImageClassification(config)
    model.load_state_dict(_rename(state_dict, _FORWARD, "timm"), strict=True)
    logger.info("Converted a timm DeiT (%s) to hf_deit.", preset or "custom size")
    return model.eval()


def _preset_from_filename(name: str) -> str | None:
    """The preset a file or model name starts with: "deit_small_distilled_patch16_224-649709d9.pth",
    "timm/deit_tiny_patch16_224.fb_in1k"."""
    stem = Path(name).name.split(".")[0].split("-")[0]
    return stem if stem in PRESETS else None


def _timm_model_facts(model: nn.Module) -> dict[str, Any]:
    """What a timm model states but its weights do not show; refuses variants our model does not implement."""
    if getattr(model, "global_pool", "token") != "token" or getattr(model, "no_embed_class", False):
        raise ValueError(
            "Only DeiT-style timm models convert (global_pool='token', class-token position embedding); got "
            f"global_pool={model.global_pool!r}, no_embed_class={model.no_embed_class}."
        )
    block = model.blocks[0]
    if not isinstance(block.mlp.act, nn.GELU) or block.mlp.act.approximate != "none":
        raise ValueError(f"Only exact GELU MLPs convert; this model uses {block.mlp.act}.")
    return dict(
        num_attention_heads=block.attn.num_heads,
        layer_norm_eps=model.norm.eps,
    )


def from_official(path: str | Path, preset: str | None = None, **config_overrides: Any) -> DeiTForImageClassification:
    """A model from one of the paper's released files (facebookresearch/deit), e.g.
    `deit_base_distilled_patch16_224-df68dfff.pth`: `{"model": state_dict}` with timm's names.

    Loaded with `torch.load(weights_only=True)`. The preset comes from the file name when it starts with one,
    otherwise from the tensor shapes.
    """
    state_dict = load_checkpoint(path)
    return from_timm(state_dict, preset=preset or _preset_from_filename(str(path)), **config_overrides)


# timm's LayerNorm default, the only eps a timm config.json can rebuild: `save_for_hf` records the model's creation
# arguments as JSON, and a `partial(nn.LayerNorm, eps=...)` norm layer is not JSON (timm: "not serializable").
TIMM_LAYER_NORM_EPS = 1e-6
# Every tensor that writes into the residual stream (timm names): the embeddings and each block's output projections.
_RESIDUAL_WRITERS = re.compile(
    r"cls_token|dist_token|pos_embed|patch_embed\.proj\.(weight|bias)|blocks\.\d+\.(attn\.proj|mlp\.fc2)\.(weight|bias)"
)


def _rescale_residual_stream(state_dict: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Multiply the residual stream by `scale`: every tensor that writes into it, in float64 then back."""
    return {
        key: (value.double() * scale).to(value.dtype) if _RESIDUAL_WRITERS.fullmatch(key) else value
        for key, value in state_dict.items()
    }


def to_timm(model: DeiTForImageClassification, *, exact_weights: bool = False) -> nn.Module:
    """The same network as a timm model (`VisionTransformerDistilled` for distilled DeiT), in eval mode.

    Its eval output equals our fused `logits` when `config.fusion == "mean"` (timm always averages the heads), and
    timm saves and reloads it as it is: `timm.models.save_for_hf(m, dir)` then
    `timm.create_model(f"local-dir:{dir}", pretrained=True)` gives the same logits.

    A LayerNorm eps other than timm's 1e-6 (transformers' DeiT ports use 1e-12) cannot be written in a timm config,
    so it is moved into the weights instead: in a pre-norm ViT the residual stream is read only through LayerNorms,
    and LN(c x; eps') = LN(x; eps) for c = sqrt(eps' / eps). Every tensor that writes into the stream (tokens,
    position and patch embeddings, each block's attention and MLP output projections) is multiplied by c, and the
    timm model keeps timm's eps. The logits are the same (up to float rounding); the scaled tensors are not ours
    bit for bit, and for eps = 1e-12 (c = 1000) the stream's values are 1000 times larger, which fp16 may overflow
    (bf16 and fp32 are fine). `exact_weights=True` keeps our tensors as they are and passes the eps as
    `partial(nn.LayerNorm, eps=...)`, which timm's `save_for_hf` refuses. With eps = 1e-6 both are the same.
    """
    import timm

    config = model.config
    if config.hidden_act != "gelu":
        raise ValueError(f"timm's DeiT uses exact GELU; this model has hidden_act={config.hidden_act!r}.")
    distilled = config.use_distillation_token
    eps = config.layer_norm_eps
    norm = {"norm_layer": partial(nn.LayerNorm, eps=eps)} if exact_weights and eps != TIMM_LAYER_NORM_EPS else {}
    timm_model = timm.create_model(
        # The registered name only supplies pretrained_cfg (ImageNet mean/std); every shape is overridden below.
        "deit_base_distilled_patch16_224" if distilled else "deit_base_patch16_224",
        pretrained=False,
        img_size=config.image_size,
        patch_size=config.patch_size,
        in_chans=config.num_channels,
        num_classes=config.num_labels,
        embed_dim=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
        drop_path_rate=config.drop_path_rate,
        **norm,
    )
    state_dict = _rename(model.state_dict(), _BACKWARD, "hf_deit")
    if not exact_weights and eps != TIMM_LAYER_NORM_EPS:
        state_dict = _rescale_residual_stream(state_dict, math.sqrt(TIMM_LAYER_NORM_EPS / eps))
    timm_model.load_state_dict(state_dict, strict=True)
    timm_model.pretrained_cfg = _timm_pretrained_cfg(config, timm_model.pretrained_cfg)
    return timm_model.eval()


def _timm_pretrained_cfg(config: DeiTConfig, base: dict[str, Any]) -> dict[str, Any]:
    """timm's record of how to feed the model, from our config, so that `timm.data.resolve_data_config({}, model=m)`
    and `timm.data.create_transform(...)` preprocess exactly like our image processor (`image_processor_for`)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    # The registered name's cfg describes the released weights (224 px, crop 0.9, their download URL); keep only
    # its layout fields (first_conv, classifier names).
    cfg = {k: v for k, v in base.items() if k not in ("url", "hf_hub_id", "tag", "license", "file")}
    cfg.update(
        input_size=(config.num_channels, config.image_size, config.image_size),
        fixed_input_size=True,
        interpolation="bicubic",
        crop_pct=config.crop_pct,
        crop_mode="center",
        mean=tuple(IMAGENET_DEFAULT_MEAN),
        std=tuple(IMAGENET_DEFAULT_STD),
        num_classes=config.num_labels,
    )
    if config.id2label:
        cfg["label_names"] = [config.id2label[i] for i in range(config.num_labels)]
    return cfg


def _transformers_head_classes():
    from transformers import DeiTForImageClassification as HFDeiTForImageClassification
    from transformers import DeiTForImageClassificationWithTeacher

    return HFDeiTForImageClassification, DeiTForImageClassificationWithTeacher


def from_transformers(model_or_dir: nn.Module | str | Path, **config_overrides: Any) -> DeiTForImageClassification:
    """A model from transformers' `DeiTForImageClassificationWithTeacher` or `DeiTForImageClassification` (an instance,
    a saved directory or a Hub id; legacy key names are renamed by transformers' own loading).

    - `...WithTeacher` (two heads, logits = their mean) -> our distilled model with `fusion="mean"`.
    - `DeiTForImageClassification` has the distillation token but only a cls head (the distillation token's output
      is unused). It becomes our distilled model with `fusion="cls"`, which reproduces its logits exactly, and the
      distillation head initialised as a copy of the cls head: the natural start for fine-tuning with a teacher.
      (The copy reads the distillation token, which that model never trained, so other fusions change its
      predictions until it is trained.)
    transformers' q/k/v projections are concatenated into our fused `qkv_proj` (rows q, then k, then v);
    `layer_norm_eps` (transformers' default is 1e-12, the released DeiT weights used 1e-6) and `hidden_act` carry over.
    """
    hf_model = _load_transformers_deit(model_or_dir)
    config = _config_from_transformers(hf_model, config_overrides)
    model = DeiTForImageClassification(config)
    model.load_state_dict(_state_dict_from_transformers(hf_model, config), strict=True)
    return model.eval()


def _load_transformers_deit(model_or_dir: nn.Module | str | Path) -> nn.Module:
    """transformers' DeiT with or without the teacher head: the instance given, or loaded from a directory / Hub id."""
    one_head_cls, teacher_cls = _transformers_head_classes()
    if isinstance(model_or_dir, (str, Path)):
        from transformers import AutoConfig

        model_or_dir = require_source(str(model_or_dir), "transformers model folder").location
        hf_config = AutoConfig.from_pretrained(model_or_dir)
        architectures = hf_config.architectures or []
        if hf_config.model_type != "deit":
            raise ValueError(f"{model_or_dir} is a {hf_config.model_type!r} checkpoint, not transformers' 'deit'.")
        model_cls = one_head_cls if architectures == ["DeiTForImageClassification"] else teacher_cls
        model_or_dir = model_cls.from_pretrained(str(model_or_dir))
    if not isinstance(model_or_dir, (one_head_cls, teacher_cls)):
        raise TypeError(
            "from_transformers expects transformers' DeiTForImageClassificationWithTeacher or DeiTForImageClassification"
            f" (or a directory / Hub id of one), got {type(model_or_dir).__name__}."
        )
    return model_or_dir


def _config_from_transformers(hf_model: nn.Module, config_overrides: dict[str, Any]) -> DeiTConfig:
    hf_config = hf_model.config
    image_size, patch_size = hf_config.image_size, hf_config.patch_size
    if isinstance(image_size, (list, tuple)):
        if image_size[0] != image_size[1]:
            raise ValueError(f"Only square inputs are supported; this model has image_size={image_size}.")
        image_size = image_size[0]
    if isinstance(patch_size, (list, tuple)):
        patch_size = patch_size[0]
    mlp_ratio = hf_config.intermediate_size / hf_config.hidden_size
    if int(hf_config.hidden_size * mlp_ratio) != hf_config.intermediate_size:
        raise ValueError(f"intermediate_size={hf_config.intermediate_size} is not a ratio of hidden_size we can store.")
    preset = DeiTConfig.find_preset(
        hidden_size=hf_config.hidden_size, use_distillation_token=True, patch_size=patch_size, image_size=image_size
    )
    fields = dict(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=hf_config.num_channels,
        hidden_size=hf_config.hidden_size,
        num_hidden_layers=hf_config.num_hidden_layers,
        num_attention_heads=hf_config.num_attention_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=hf_config.qkv_bias,
        layer_norm_eps=hf_config.layer_norm_eps,
        hidden_act=hf_config.hidden_act,
        hidden_dropout_prob=hf_config.hidden_dropout_prob,
        attention_probs_dropout_prob=hf_config.attention_probs_dropout_prob,
        initializer_range=hf_config.initializer_range,
        use_distillation_token=True,
        fusion="mean" if isinstance(hf_model, _transformers_head_classes()[1]) else "cls",
        crop_pct=PRESETS.get(preset or "", {}).get("crop_pct", 0.875),
        id2label=dict(hf_config.id2label),
    )
    return DeiTConfig(**{**fields, **config_overrides})


def _state_dict_from_transformers(hf_model: nn.Module, config: DeiTConfig) -> dict[str, torch.Tensor]:
    hf_state = hf_model.state_dict()
    state_dict = {}
    for key, tensor in hf_state.items():
        if re.search(r"attention\.[qkv]_proj\.", key):
            continue  # fused below
        if key.startswith("classifier."):  # the one-head model's head
            state_dict[key.replace("classifier.", "cls_classifier.")] = tensor
            state_dict[key.replace("classifier.", "distillation_classifier.")] = tensor.clone()
        else:
            state_dict[key] = tensor
    for i in range(config.num_hidden_layers):
        prefix = f"deit.layers.{i}.attention."
        for kind in ("weight", "bias") if config.qkv_bias else ("weight",):
            # 3 x (hidden, hidden) -> (3 * hidden, hidden), the q, k, v row order that DeiTAttention unpacks.
            state_dict[f"{prefix}qkv_proj.{kind}"] = torch.cat([hf_state[f"{prefix}{p}_proj.{kind}"] for p in "qkv"])
    state_dict.pop("deit.embeddings.mask_token", None)  # only DeiTForMaskedImageModeling uses it
    return state_dict


def to_transformers(model: DeiTForImageClassification) -> nn.Module:
    """The same distilled network as transformers' `DeiTForImageClassificationWithTeacher` (which always averages the
    heads, i.e. our `fusion="mean"`). Plain DeiT has no transformers equivalent (transformers' DeiT always has a
    distillation token)."""
    from transformers import DeiTConfig as HFDeiTConfig

    config = model.config
    if not config.use_distillation_token:
        raise ValueError("transformers' DeiT always has a distillation token: plain DeiT has no equivalent there.")
    _, teacher_cls = _transformers_head_classes()
    hf_config = HFDeiTConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        qkv_bias=config.qkv_bias,
        layer_norm_eps=config.layer_norm_eps,
        hidden_act=config.hidden_act,
        id2label=dict(config.id2label),
    )
    hf_model = teacher_cls(hf_config)
    state_dict = {}
    for key, tensor in model.state_dict().items():
        if ".qkv_proj." in key:
            # (3 * hidden, ...) -> q, k, v, each (hidden, ...)
            for name, part in zip("qkv", tensor.chunk(3, dim=0)):
                state_dict[key.replace("qkv_proj", f"{name}_proj")] = part.clone()
        else:
            state_dict[key] = tensor
    hf_model.load_state_dict(state_dict, strict=True)
    return hf_model.eval()


def _hub_id(source_format: str, source: str) -> str | None:
    """The Hub id a conversion starts from, for the card's `base_model` (None for local files)."""
    if locate(source).local or source_format == "official":
        return None
    if source_format == "timm":
        if source.startswith("hf-hub:"):
            return source.removeprefix("hf-hub:")
        from timm.models import get_pretrained_cfg

        pretrained_cfg = get_pretrained_cfg(source)  # e.g. "timm/deit_tiny_distilled_patch16_224.fb_in1k"
        return pretrained_cfg.hf_hub_id if pretrained_cfg is not None else None
    return source


def convert_cli(source_format: str, source: str, output_dir: str | Path, preset: str | None = None) -> str:
    """`hf-deit convert`: convert, then save safetensors + config + preprocessor config + a model card."""
    from ..models.image_processing import image_processor_for
    from .model_card import build_model_card

    if source_format == "timm":
        model = from_timm(source, preset=preset)
    elif source_format == "official":
        model = from_official(source, preset=preset)
    elif source_format == "transformers":
        model = from_transformers(source)
    else:
        raise ValueError(f"source_format={source_format!r}: use 'timm', 'official' or 'transformers'.")
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    image_processor_for(model.config).save_pretrained(output_dir)
    hub_id = _hub_id(source_format, source)
    # A local file is named by its file name only: the card is public, the machine's paths are not.
    card = build_model_card(model.config, source=hub_id or Path(source).name, base_model=hub_id)
    card.save(output_dir / "README.md")
    return str(output_dir)


__all__ = [
    "KEY_MAP",
    "from_timm",
    "from_official",
    "from_transformers",
    "to_timm",
    "to_transformers",
    "imagenet_id2label",
    "load_checkpoint",
    "convert_cli",
]

# Copyright 2026 The hf_deit Authors. All rights reserved.
# Licensed under the Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).
"""DeiTConfig: one flat, typed configuration for plain and distilled DeiT.

transformers v5 turns every `PreTrainedConfig` subclass into a keyword-only dataclass, so the annotated class
attributes below are the constructor's arguments. Checks live in `__post_init__` and say what to change.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

# The fusion rules for the two heads at inference (see DeiTForImageClassification.fuse_logits).
FUSIONS = ("mean", "softmax_mean", "cls", "distillation")

# The fields that define a released architecture; resolution, head size and numerics may differ (fine-tunes, CIFAR).
ARCHITECTURE_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "mlp_ratio", "use_distillation_token"
)


def eval_resize_size(image_size: int, crop_pct: float) -> int:
    """The short side evaluation resizes to before center-cropping `image_size`: int(image_size / crop_pct) (224 / 0.875
    = 256; 32 / 0.875 = 36.57 -> 36; 384 / 1.0 = 384). Truncated as timm's eval transform (math.floor) and
    transformers' PoolFormer processor (int) compute it; tests/test_inference_decoding.py checks both agree."""
    return int(image_size / crop_pct)


# The eight models released with the paper, under their timm names. Each differs from the defaults only here.
PRESETS: dict[str, dict[str, Any]] = {
    "deit_tiny_patch16_224": dict(hidden_size=192, num_attention_heads=3, use_distillation_token=False),
    "deit_small_patch16_224": dict(hidden_size=384, num_attention_heads=6, use_distillation_token=False),
    "deit_base_patch16_224": dict(hidden_size=768, num_attention_heads=12, use_distillation_token=False),
    "deit_base_patch16_384": dict(
        hidden_size=768, num_attention_heads=12, use_distillation_token=False, image_size=384, crop_pct=1.0
    ),
    "deit_tiny_distilled_patch16_224": dict(hidden_size=192, num_attention_heads=3, use_distillation_token=True),
    "deit_small_distilled_patch16_224": dict(hidden_size=384, num_attention_heads=6, use_distillation_token=True),
    "deit_base_distilled_patch16_224": dict(hidden_size=768, num_attention_heads=12, use_distillation_token=True),
    "deit_base_distilled_patch16_384": dict(
        hidden_size=768, num_attention_heads=12, use_distillation_token=True, image_size=384, crop_pct=1.0
    ),
}


class DeiTConfig(PreTrainedConfig):
    r"""Configuration of a DeiT model (Touvron et al., 2021).

    The defaults are DeiT-B/16 at 224 px with a distillation token, ImageNet-1k (1,000 labels) and the released
    checkpoints' numerics (LayerNorm eps 1e-6, exact GELU, qkv bias). Use `DeiTConfig.from_preset(name)` for the
    eight released models.

    Args:
        image_size: input resolution (square) the position embeddings are built for.
        patch_size: side of the square patches; must divide `image_size`.
        num_channels: input channels.
        hidden_size: token width; must be divisible by `num_attention_heads`.
        num_hidden_layers: number of transformer blocks (depth).
        num_attention_heads: heads per block.
        mlp_ratio: MLP hidden width = `mlp_ratio * hidden_size` (timm's and the paper's parameter).
        intermediate_size: MLP hidden width (transformers' ViT/DeiT parameter). When given it wins and `mlp_ratio`
            becomes `intermediate_size / hidden_size`; when None it is `int(mlp_ratio * hidden_size)`. Both are saved,
            so a transformers DeiT/ViT `config.json` and our own round-trip.
        qkv_bias: bias on the fused query/key/value projection.
        layer_norm_eps: epsilon of every LayerNorm.
        hidden_act: MLP activation (a transformers `ACT2FN` name; "gelu" is exact erf GELU as in the paper).
        drop_path_rate: stochastic depth, linearly increasing from 0 to this value over the blocks.
        hidden_dropout_prob: dropout after the embeddings, the attention projection and the MLP.
        attention_probs_dropout_prob: dropout on attention probabilities.
        classifier_dropout_prob: dropout on the token features fed to the heads.
        initializer_range: std of the truncated normal used for linear weights, the tokens and position embeddings.
        use_distillation_token: distilled DeiT (cls + distillation token, two heads) or plain DeiT (cls only).
        fusion: how the two heads combine into `logits` at inference: "mean" of logits (the paper's code and every
            released checkpoint), "softmax_mean" (mean of probabilities, returned as log-probabilities; the paper's
            text), "cls" or "distillation" (one head alone). Ignored by plain DeiT.
        crop_pct: evaluation preprocessing: resize the short side to `eval_resize_size(image_size, crop_pct)`
            (= int(image_size / crop_pct)), then center-crop `image_size`.
    """

    model_type = "hf_deit"
    # What a plain `transformers.Trainer` leaves out of the predictions it collects: only the fused `logits` reach
    # `compute_metrics` (a generic `np.argmax(p.predictions, axis=1)` works). DistillationTrainer keeps the two heads.
    keys_to_ignore_at_inference = ["cls_logits", "distillation_logits", "hidden_states", "attentions"]

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    mlp_ratio: float = 4.0
    intermediate_size: int | None = None
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu"
    drop_path_rate: float = 0.0
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    classifier_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    use_distillation_token: bool = True
    fusion: str = "mean"
    crop_pct: float = 0.875

    def __post_init__(self, **kwargs):
        # num_labels is a property of PreTrainedConfig; default to ImageNet-1k's 1,000 when no labels are given.
        if self.id2label is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = 1000
        super().__post_init__(**kwargs)
        if self.intermediate_size is None:
            self.intermediate_size = int(self.hidden_size * self.mlp_ratio)
        elif isinstance(self.hidden_size, int) and self.hidden_size > 0:  # else _check_sizes says what is wrong
            self.mlp_ratio = self.intermediate_size / self.hidden_size
        if self.id2label is not None and self.label2id is None:
            # transformers v5 does not derive label2id from a given id2label; pipelines and users expect both.
            self.label2id = {label: index for index, label in self.id2label.items()}
        self._check()

    def _check_sizes(self) -> None:
        # First, so that a zero or negative size gets this message rather than a ZeroDivisionError below.
        sizes = ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads")
        for name in sizes:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        if self.patch_size > self.image_size:
            raise ValueError(f"patch_size={self.patch_size} is larger than image_size={self.image_size}.")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio={self.mlp_ratio} must be > 0 (DeiT: 4.0).")

    def _check(self) -> None:
        self._check_sizes()
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}: choose an image_size "
                f"that is a multiple of {self.patch_size} (e.g. {self.image_size // self.patch_size * self.patch_size}"
                f" or {(self.image_size // self.patch_size + 1) * self.patch_size})."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}: "
                "each head gets hidden_size / num_attention_heads channels, so pick values that divide evenly "
                "(DeiT-Ti 192/3, DeiT-S 384/6, DeiT-B 768/12)."
            )
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion={self.fusion!r} is unknown: use one of {', '.join(map(repr, FUSIONS))}.")
        if self.fusion == "softmax_mean" and self.problem_type in ("regression", "multi_label_classification"):
            raise ValueError(
                f"fusion='softmax_mean' averages class probabilities, which problem_type={self.problem_type!r} does "
                "not have: use fusion='mean' (the mean of the two heads' outputs)."
            )
        for name in ("drop_path_rate", "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value} must be in [0, 1).")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct={self.crop_pct} must be in (0, 1]; DeiT uses 0.875 at 224 px and 1.0 at 384.")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_prefix_tokens(self) -> int:
        """cls (+ distillation) tokens in front of the patch tokens."""
        return 2 if self.use_distillation_token else 1

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "DeiTConfig":
        """A released DeiT architecture by its timm name, e.g. `DeiTConfig.from_preset("deit_small_distilled_patch16_224")`.

        `overrides` replace any field (for example `num_hidden_layers=2` for tests, `num_labels=10` for CIFAR-10).
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown DeiT preset {name!r}. Known presets: {', '.join(sorted(PRESETS))}.")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def find_preset(cls, **fields: Any) -> str | None:
        """The first preset (in `PRESETS` order) whose configuration has all of these field values, or None."""
        for name in PRESETS:
            preset = cls.from_preset(name)
            if all(getattr(preset, key) == value for key, value in fields.items()):
                return name
        return None

    def preset_name(self) -> str | None:
        """The released architecture this config has (`ARCHITECTURE_FIELDS`), preferring the preset at its
        resolution (deit_base_patch16_384 over ..._224); None for a custom architecture."""
        architecture = {key: getattr(self, key) for key in ARCHITECTURE_FIELDS}
        return self.find_preset(**architecture, image_size=self.image_size) or self.find_preset(**architecture)


__all__ = ["ARCHITECTURE_FIELDS", "DeiTConfig", "PRESETS", "FUSIONS", "eval_resize_size"]

# Copyright 2026 The hf_deit Authors. All rights reserved.
# Licensed under the Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).
"""DeiT: a ViT with a distillation token (Touvron et al., 2021, https://arxiv.org/abs/2012.12877).

How it differs from ViT, and nothing else:
  * one extra learned token (the distillation token) after the cls token, so two extra position slots;
  * two linear heads: `cls_classifier` on the cls token, `distillation_classifier` on the distillation token;
  * at inference the two heads' logits are fused (config.fusion; "mean" of logits is what every released
    checkpoint and the paper's code do).
Plain DeiT (config.use_distillation_token=False) is a ViT with the DeiT recipe: one token, one head.

Numerical choices, stated where the anchors disagree:
  * cls token, distillation token and position embeddings start from trunc-normal(std=initializer_range=0.02), as
    in the paper's code and timm; transformers' port zeroes them (irrelevant for loading, it matters for training).
  * Attention uses one fused qkv projection (as timm and the paper's code; one matmul instead of three).
  * Position embeddings are resized with bicubic interpolation (antialias on, align_corners off), which is
    timm's `resample_abs_pos_embed`, so a 224 -> 384 fine-tune starts from the same weights in both.

This file imports only torch and transformers, so a saved model loads with `trust_remote_code=True` on a machine
without hf_deit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_deit import DeiTConfig

# The heads' names, in the order of their logits in DeiTImageClassificationOutput (logits = "fused", cls_logits,
# distillation_logits): the order the Trainer collects them in, and the metric names' infix (eval_cls_top1).
HEADS = ("fused", "cls", "distillation")


@dataclass
class DeiTImageClassificationOutput(ModelOutput):
    """Output of `DeiTForImageClassification`, the same fields in train and eval mode.

    Args:
        loss: classification loss when `labels` are given (see `DeiTForImageClassification.forward`).
        logits: (batch, num_labels) the fused prediction (`config.fusion`); what `pipeline`, `evaluate` and the
            Trainer read. For plain DeiT it is the cls head.
        cls_logits: (batch, num_labels) the cls-token head.
        distillation_logits: (batch, num_labels) the distillation-token head; None for plain DeiT.
        hidden_states: embeddings output + each block's output, each (batch, seq_len, hidden_size), on request.
        attentions: each block's attention probabilities (batch, heads, seq_len, seq_len), on request.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cls_logits: torch.Tensor | None = None
    distillation_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def resize_position_embeddings(
    position_embeddings: torch.Tensor, num_prefix_tokens: int, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Bicubic resize of the patch part of (1, prefix + H*W, dim) position embeddings; prefix slots are kept."""
    if old_grid == new_grid:
        return position_embeddings
    prefix, patch = position_embeddings[:, :num_prefix_tokens], position_embeddings[:, num_prefix_tokens:]
    dim = patch.shape[-1]
    # (1, H*W, dim) -> (1, dim, H, W) for interpolate; float32 because bicubic is not implemented for every dtype.
    patch = patch.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=new_grid, mode="bicubic", align_corners=False, antialias=True)
    patch = patch.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(position_embeddings.dtype)
    return torch.cat([prefix, patch], dim=1)


class DeiTPatchEmbeddings(nn.Module):
    """(batch, channels, H, W) -> (batch, H/p * W/p, hidden_size) with one strided convolution."""

    def __init__(self, config: DeiTConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the model expects {self.num_channels}: "
                "convert images to RGB (the image processor does) or set config.num_channels."
            )
        # (B, C, H, W) -> (B, hidden, H/p, W/p) -> (B, H/p * W/p, hidden)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class DeiTEmbeddings(nn.Module):
    """Patch embeddings with the cls (+ distillation) token in front, plus learned position embeddings."""

    def __init__(self, config: DeiTConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = DeiTPatchEmbeddings(config)
        self.num_prefix_tokens = config.num_prefix_tokens
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.hidden_size))
        self.distillation_token = (
            nn.Parameter(torch.empty(1, 1, config.hidden_size)) if config.use_distillation_token else None
        )
        self.position_embeddings = nn.Parameter(
            torch.empty(1, config.num_patches + self.num_prefix_tokens, config.hidden_size)
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    @property
    def grid_size(self) -> tuple[int, int]:
        side = self.config.image_size // self.config.patch_size
        return side, side

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        batch_size, _, height, width = pixel_values.shape
        # The pixel size, not the patch grid: a 36x36 input to a 32 px, patch-8 model has the same 4x4 grid, and the
        # convolution would silently drop its last 4 rows and columns (transformers' ViT and DeiT refuse it too).
        if (height, width) != (self.config.image_size, self.config.image_size) and not interpolate_pos_encoding:
            raise ValueError(
                f"Input image size ({height}x{width}) does not match the model ({self.config.image_size}x"
                f"{self.config.image_size}). Preprocess with the model's image processor (it crops to that size), "
                "pass interpolate_pos_encoding=True to interpolate the position embeddings for this call, or call "
                "model.resize_position_embeddings(new_size) to fine-tune at another size."
            )
        new_grid = (height // self.config.patch_size, width // self.config.patch_size)
        embeddings = self.patch_embeddings(pixel_values)
        tokens = [self.cls_token.expand(batch_size, -1, -1)]
        if self.distillation_token is not None:
            tokens.append(self.distillation_token.expand(batch_size, -1, -1))
        # (B, prefix + num_patches, hidden): the paper's layout, [cls, dist, patch_1 ... patch_N].
        embeddings = torch.cat([*tokens, embeddings], dim=1)
        position_embeddings = resize_position_embeddings(
            self.position_embeddings, self.num_prefix_tokens, self.grid_size, new_grid
        )
        return self.dropout(embeddings + position_embeddings)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scaling) v, returning (batch, seq, heads, head_dim) and the attention probabilities."""
    attn_weights = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class DeiTAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection; SDPA unless config asks for another kernel."""

    def __init__(self, config: DeiTConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, num_queries: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`num_queries`: attend from the first `num_queries` tokens only (keys/values still come from all)."""
        batch_size, seq_len, hidden_size = hidden_states.shape
        # (B, S, 3*hidden) -> (3, B, heads, S, head_dim)
        qkv = self.qkv_proj(hidden_states).view(batch_size, seq_len, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if num_queries is not None:
            query = query[:, :, :num_queries]  # (B, heads, num_queries, head_dim)

        # transformers' way of choosing the kernel: config._attn_implementation ("sdpa" by default, changed by
        # `model.set_attn_implementation(...)`); eager is the fallback and the only one that returns probabilities.
        attention_interface: Callable = eager_attention_forward
        if not output_attentions:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            scaling=self.scaling,
            dropout=self.config.attention_probs_dropout_prob if self.training else 0.0,
        )
        # (B, Q, heads, head_dim) -> (B, Q, hidden), Q = num_queries or S
        attn_output = attn_output.reshape(batch_size, query.shape[2], hidden_size)
        return self.o_dropout(self.o_proj(attn_output)), attn_weights


class DeiTMLP(nn.Module):
    def __init__(self, config: DeiTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.activation_fn(self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescaling survivors by 1/keep_prob."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    # one Bernoulli draw per sample, broadcast over (seq, hidden)
    mask = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)).bernoulli_(keep_prob)
    return hidden_states * mask / keep_prob


class DeiTLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, config: DeiTConfig, layer_idx: int):
        super().__init__()
        # Stochastic depth grows linearly with depth, from 0 at the first block to drop_path_rate at the last.
        depth = config.num_hidden_layers
        self.drop_path_rate = config.drop_path_rate * layer_idx / max(depth - 1, 1)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = DeiTAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = DeiTMLP(config)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, num_queries: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`num_queries`: return only the first `num_queries` tokens' outputs, computing nothing for the others."""
        attn_output, attn_weights = self.attention(self.layernorm_before(hidden_states), output_attentions, num_queries)
        if num_queries is not None:
            hidden_states = hidden_states[:, :num_queries]
        hidden_states = hidden_states + drop_path(attn_output, self.drop_path_rate, self.training)
        mlp_output = self.mlp(self.layernorm_after(hidden_states))
        hidden_states = hidden_states + drop_path(mlp_output, self.drop_path_rate, self.training)
        return hidden_states, attn_weights


class DeiTPreTrainedModel(PreTrainedModel):
    config_class = DeiTConfig
    config: DeiTConfig
    base_model_prefix = "deit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["DeiTEmbeddings", "DeiTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # transformers.initialization's functions skip tensors already loaded from a checkpoint.
        # The paper's code (timm 0.3 VisionTransformer + DistilledVisionTransformer): linears and the three
        # embeddings trunc-normal(0.02), LayerNorms ones/zeros, and the patch-embedding conv left at PyTorch's
        # default (uniform, bound 1/sqrt(fan_in): std ~0.08 for 4x4x3 patches, 4x the 0.02 transformers' port
        # uses). That conv init measured +0.6 top-1 (3 seeds) in the 6-epoch CIFAR-10 table (docs/method.md,
        # benchmarks/init_study.py).
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):  # what nn.Conv2d.reset_parameters does
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())  # 1 / sqrt(fan_in)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, DeiTEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            if module.distillation_token is not None:
                init.trunc_normal_(module.distillation_token, mean=0.0, std=std)


class DeiTModel(DeiTPreTrainedModel):
    """The DeiT encoder: embeddings, blocks, final LayerNorm.

    `last_hidden_state` is (batch, prefix + num_patches, hidden); `pooler_output` is the cls token's final
    feature, or the mean of the cls and distillation tokens' features for distilled DeiT (timm's `pre_logits`).
    """

    def __init__(self, config: DeiTConfig):
        super().__init__(config)
        self.embeddings = DeiTEmbeddings(config)
        self.layers = nn.ModuleList([DeiTLayer(config, i) for i in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def resize_position_embeddings(self, image_size: int) -> None:
        """Permanently resize the position embeddings (bicubic) for a new input resolution, e.g. 224 -> 384
        before fine-tuning there as the paper does. Updates `config.image_size`."""
        embeddings = self.embeddings
        new_side = image_size // self.config.patch_size
        if new_side * self.config.patch_size != image_size:
            raise ValueError(f"image_size={image_size} must be a multiple of patch_size={self.config.patch_size}.")
        resized = resize_position_embeddings(
            embeddings.position_embeddings.data, embeddings.num_prefix_tokens, embeddings.grid_size, (new_side, new_side)
        )
        embeddings.position_embeddings = nn.Parameter(resized)
        self.config.image_size = image_size

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        prefix_tokens_only: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """`prefix_tokens_only=True`: `last_hidden_state` (and the last entry of `hidden_states`/`attentions`) covers
        only the cls (+ distillation) tokens. The last block then computes queries, projection and MLP for those
        tokens alone (keys and values still come from every token): the same numbers up to fp32 rounding (smaller
        matmuls block differently, ~1e-7), and a 12-block model does about 7% less work. `DeiTForImageClassification`
        uses it, since its heads read nothing else."""
        # An argument passed here overrides the config, in both directions (transformers' convention).
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        # Inputs may arrive in another dtype (e.g. fp32 images into a bf16 model).
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)

        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        last_layer = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            num_queries = self.embeddings.num_prefix_tokens if prefix_tokens_only and i == last_layer else None
            hidden_states, attn_weights = layer(hidden_states, output_attentions, num_queries=num_queries)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)

        sequence_output = self.layernorm(hidden_states)
        pooled_output = sequence_output[:, : self.embeddings.num_prefix_tokens].mean(dim=1)
        if not return_dict:
            return tuple(v for v in (sequence_output, pooled_output, all_hidden_states, all_attentions) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


class DeiTForImageClassification(DeiTPreTrainedModel):
    """DeiT with a head on the cls token and, when distilled, a second head on the distillation token.

    The same typed output in train and eval mode: `cls_logits` and `distillation_logits` separately (what the
    distillation loss needs), and `logits`, their fusion by `config.fusion` (what inference reads).
    """

    def __init__(self, config: DeiTConfig):
        super().__init__(config)
        self.deit = DeiTModel(config)
        self.classifier_dropout = nn.Dropout(config.classifier_dropout_prob)
        self.cls_classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.distillation_classifier = (
            nn.Linear(config.hidden_size, config.num_labels) if config.use_distillation_token else None
        )
        self.post_init()

    def resize_position_embeddings(self, image_size: int) -> None:
        """See `DeiTModel.resize_position_embeddings`."""
        self.deit.resize_position_embeddings(image_size)

    def fuse_logits(self, cls_logits: torch.Tensor, distillation_logits: torch.Tensor | None) -> torch.Tensor:
        """Late fusion of the two heads.

        "mean": (cls + dist) / 2 on logits, what the paper's code and every released checkpoint do.
        "softmax_mean": log((softmax(cls) + softmax(dist)) / 2), the paper's text ("we add the softmax output by
            the two classifiers"); returned as log-probabilities so that softmax/argmax downstream stay right.
        "cls" / "distillation": one head alone (the paper's Table 3 columns).
        """
        if distillation_logits is None:
            return cls_logits
        fusion = self.config.fusion
        if fusion == "mean":
            return (cls_logits + distillation_logits) / 2
        if fusion == "softmax_mean":
            probs = (cls_logits.float().softmax(-1) + distillation_logits.float().softmax(-1)) / 2
            return probs.log().to(cls_logits.dtype)
        if fusion == "cls":
            return cls_logits
        return distillation_logits

    def head_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of one head's logits (batch, num_labels) against `labels`, by `config.problem_type`.

        "regression": mean squared error (with one label, logits (batch, 1) against targets (batch,));
        "multi_label_classification": binary cross-entropy with logits, per class, averaged;
        "single_label_classification": cross-entropy against class ids, or against probabilities (batch, num_labels);
        None (not set): regression when num_labels == 1, otherwise single-label. Unlike transformers' classifiers,
            float (batch, num_labels) labels then mean probabilities (Mixup/CutMix soft targets), not multi-label:
            set problem_type="multi_label_classification" for that. The config is never changed here.
        Computed in float32 whatever the model's dtype.
        """
        logits = logits.float()
        problem_type = self.config.problem_type
        if problem_type is None:
            problem_type = "regression" if self.config.num_labels == 1 else "single_label_classification"
        if problem_type == "regression":
            if self.config.num_labels == 1:
                return F.mse_loss(logits.squeeze(-1), labels.float().view(-1))
            return F.mse_loss(logits, labels.float())
        if problem_type == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        if labels.is_floating_point() and labels.shape == logits.shape:  # probabilities (soft targets)
            return F.cross_entropy(logits, labels)
        return F.cross_entropy(logits, labels.long().view(-1))

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DeiTImageClassificationOutput | tuple:
        """`labels`: class ids (batch,) or soft targets (batch, num_labels), e.g. from Mixup/CutMix; for
        `config.problem_type="regression"` targets (batch,) or (batch, num_labels), for "multi_label_classification"
        0/1 targets (batch, num_labels).

        The loss (when labels are given) is `head_loss` of each head against the labels, for a distilled model
        averaged over both heads: without a teacher each head learns the labels, so the fused prediction stays
        meaningful. (The paper's code trains only the cls head in that case and leaves the distillation head
        untrained.) Training *with* a teacher goes through `hf_deit.DistillationTrainer`, whose loss replaces this one.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        outputs = self.deit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            # The heads read only the prefix tokens: skip the last block's work on the patch tokens unless the caller
            # asked for every token's states (measured in benchmarks/bench_model.py, docs/benchmarks.md).
            prefix_tokens_only=not (output_hidden_states or output_attentions),
        )
        sequence_output = self.classifier_dropout(outputs.last_hidden_state)
        cls_logits = self.cls_classifier(sequence_output[:, 0])
        distillation_logits = None
        if self.distillation_classifier is not None:
            distillation_logits = self.distillation_classifier(sequence_output[:, 1])
        logits = self.fuse_logits(cls_logits, distillation_logits)

        loss = None
        if labels is not None:
            heads = [cls_logits] if distillation_logits is None else [cls_logits, distillation_logits]
            labels = labels.to(cls_logits.device)
            loss = sum(self.head_loss(head, labels) for head in heads) / len(heads)

        output = DeiTImageClassificationOutput(
            loss=loss,
            logits=logits,
            cls_logits=cls_logits,
            distillation_logits=distillation_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "HEADS",
    "DeiTImageClassificationOutput",
    "DeiTPreTrainedModel",
    "DeiTModel",
    "DeiTForImageClassification",
]

"""The speed path of modeling_deit: the last block computes only the prefix tokens the heads read.

DeiTForImageClassification takes it unless hidden states or attentions are requested; asking for them runs every
token through every block, so comparing the two calls checks the shortcut against the plain computation.
"""

import pytest
import torch
import torch.nn.functional as F

from hf_deit import DeiTConfig, DeiTForImageClassification, DeiTModel

ATOL = 1e-6  # fp32; only kernel blocking differs between the two paths (observed ~1e-7)


def tiny_model(distilled: bool, attn: str = "sdpa", **overrides) -> DeiTForImageClassification:
    torch.manual_seed(0)
    config = DeiTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_labels=5,
        use_distillation_token=distilled, attn_implementation=attn, **overrides,
    )  # fmt: skip
    model = DeiTForImageClassification(config)
    with torch.no_grad():  # move LayerNorms, biases and tokens off their initial values so every path matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def heads_loss_and_grads(model, pixel_values, labels, full: bool, seed: int = 0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same drop-path draws in both calls
    out = model(pixel_values, output_hidden_states=full)
    heads = [out.cls_logits] if out.distillation_logits is None else [out.cls_logits, out.distillation_logits]
    loss = sum(F.cross_entropy(h, labels) for h in heads)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return [h.detach() for h in heads], out.logits.detach(), grads


@pytest.mark.parametrize("distilled", [True, False])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_prefix_only_last_block_gives_the_same_heads_and_gradients(distilled, attn):
    model = tiny_model(distilled, attn, drop_path_rate=0.2).train()
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 4])
    fast_heads, fast_logits, fast_grads = heads_loss_and_grads(model, pixel_values, labels, full=False)
    full_heads, full_logits, full_grads = heads_loss_and_grads(model, pixel_values, labels, full=True)
    for fast, full in zip(fast_heads, full_heads):
        assert (fast - full).abs().max() <= ATOL
    assert (fast_logits - full_logits).abs().max() <= ATOL
    for name, grad in full_grads.items():
        # patch-token-only parameters of the last block (none exist) would show up here as a missing gradient
        assert (fast_grads[name] - grad).abs().max() <= ATOL * max(1.0, grad.abs().max().item()), name
    # every block, the last included, still trains: its weights receive gradient through the prefix tokens
    assert all(g.abs().sum() > 0 for n, g in fast_grads.items() if n.startswith("deit.layers.1."))


def test_model_prefix_tokens_only_returns_the_prefix_rows():
    model = tiny_model(distilled=True).deit.eval()
    assert isinstance(model, DeiTModel)
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(pixel_values)
        fast = model(pixel_values, prefix_tokens_only=True)
    assert full.last_hidden_state.shape == (2, 2 + 16, 32)
    assert fast.last_hidden_state.shape == (2, 2, 32)
    assert (fast.last_hidden_state - full.last_hidden_state[:, :2]).abs().max() <= ATOL
    assert (fast.pooler_output - full.pooler_output).abs().max() <= ATOL


def test_requested_hidden_states_and_attentions_cover_every_token():
    model = tiny_model(distilled=True, attn="eager").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32), output_hidden_states=True, output_attentions=True)
    assert all(h.shape == (2, 18, 32) for h in out.hidden_states)
    assert all(a.shape == (2, 2, 18, 18) for a in out.attentions)

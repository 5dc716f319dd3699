"""The model's own properties: heads and fusion, attention kernels, checkpointing, stochastic depth, sizes, loss, init."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_deit import DeiTConfig, DeiTForImageClassification


def tiny_config(**kwargs) -> DeiTConfig:
    defaults = dict(
        image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, num_labels=5
    )
    return DeiTConfig(**{**defaults, **kwargs})


def tiny_model(seed: int = 0, **kwargs) -> DeiTForImageClassification:
    torch.manual_seed(seed)
    return DeiTForImageClassification(tiny_config(**kwargs)).eval()


def images(size: int = 32, batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_plain_deit_has_one_head():
    model = tiny_model(use_distillation_token=False)
    assert model.distillation_classifier is None and model.deit.embeddings.distillation_token is None
    assert model.deit.embeddings.position_embeddings.shape[1] == 16 + 1
    with torch.no_grad():
        out = model(images())
    assert out.distillation_logits is None
    assert torch.equal(out.logits, out.cls_logits)


@pytest.mark.parametrize("fusion", ["mean", "softmax_mean", "cls", "distillation"])
def test_each_fusion_is_its_definition(fusion):
    model = tiny_model(fusion=fusion)
    with torch.no_grad():
        out = model(images())
    cls, dist = out.cls_logits, out.distillation_logits
    assert not torch.allclose(cls, dist)  # two different heads on two different tokens
    expected = {
        "mean": (cls + dist) / 2,
        "softmax_mean": torch.log((cls.softmax(-1) + dist.softmax(-1)) / 2),
        "cls": cls,
        "distillation": dist,
    }[fusion]
    torch.testing.assert_close(out.logits, expected, rtol=0, atol=1e-6)
    if fusion == "softmax_mean":  # log-probabilities: softmax of the output is the averaged probabilities
        torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(3))


def test_train_mode_separate_heads_eval_mode_fused():
    model = tiny_model(fusion="mean")
    x = images()
    model.train()  # no dropout configured: train and eval compute the same numbers
    train_out = model(x)
    assert train_out.cls_logits.shape == train_out.distillation_logits.shape == (3, 5)
    assert train_out.cls_logits.requires_grad and train_out.distillation_logits.requires_grad
    assert not torch.allclose(train_out.cls_logits, train_out.distillation_logits)
    model.eval()
    with torch.no_grad():
        eval_out = model(x)
    torch.testing.assert_close(eval_out.logits, (eval_out.cls_logits + eval_out.distillation_logits) / 2)
    torch.testing.assert_close(eval_out.cls_logits, train_out.cls_logits.detach())


def test_attention_probabilities_and_eager_equals_sdpa():
    sdpa = tiny_model()
    eager = tiny_model(attn_implementation="eager")
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    eager.load_state_dict(sdpa.state_dict())
    x = images()
    with torch.no_grad():
        out = sdpa(x, output_attentions=True, output_hidden_states=True)
        torch.testing.assert_close(sdpa(x).logits, eager(x).logits, rtol=0, atol=1e-5)
    seq = 16 + 2
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3
    for probs in out.attentions:
        assert probs.shape == (3, 3, seq, seq)
        assert (probs >= 0).all()
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, 3, seq))
    torch.testing.assert_close(out.logits, eager(x).logits, rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    x, labels = images(), torch.tensor([0, 3, 4])

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = tiny_model().train()
        if checkpointing:
            # transformers >= 5.2x calls it activation_checkpointing_enable (the old name warns); older 5.x only
            # has gradient_checkpointing_enable. pyproject allows both.
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        calls = []
        # (the first op of the block: torch stops recomputing once the saved tensors are rebuilt)
        model.deit.layers[0].layernorm_before.register_forward_hook(lambda *_: calls.append(1))
        model(x, labels=labels).loss.backward()
        assert len(calls) == (2 if checkpointing else 1)  # checkpointing recomputes the block in backward
        return {n: p.grad for n, p in model.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=0, atol=1e-6, msg=name)


def test_stochastic_depth_only_in_training():
    model = tiny_model(drop_path_rate=0.5, num_hidden_layers=3)
    reference = tiny_model(num_hidden_layers=3)
    reference.load_state_dict(model.state_dict())
    assert [layer.drop_path_rate for layer in model.deit.layers] == [0.0, 0.25, 0.5]  # linear over depth
    x = images(batch=8)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x).logits, rtol=0, atol=0)
        model.train()
        torch.manual_seed(0)
        first = model(x).logits
        torch.manual_seed(1)
        second = model(x).logits
    assert not torch.allclose(first, second)
    assert not torch.allclose(first, reference(x).logits)


def test_any_resolution_only_on_request():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"Input image size \(48x48\) does not match the model \(32x32\).*"
                       r"interpolate_pos_encoding=True"):  # fmt: skip
        model(images(48))
    with torch.no_grad():
        out = model(images(48), interpolate_pos_encoding=True)
        same = model(images(32), interpolate_pos_encoding=True).logits
    assert out.logits.shape == (3, 5)
    torch.testing.assert_close(same, model(images(32)).logits, rtol=0, atol=0)  # same size: no resampling


@pytest.mark.parametrize("size", [36, 39, 33])
def test_a_size_with_the_same_patch_grid_is_refused_like_transformers(size):
    """36 or 39 px into a 32 px, patch-8 model: the same 4x4 grid, but the last rows and columns would be dropped.
    transformers' DeiT refuses it; ours must too (it compared the grid once and accepted it silently)."""
    from transformers import DeiTConfig as TransformersDeiTConfig
    from transformers import DeiTForImageClassificationWithTeacher

    theirs = DeiTForImageClassificationWithTeacher(TransformersDeiTConfig(
        image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=96,
        num_labels=5)).eval()  # fmt: skip
    with pytest.raises(ValueError, match=rf"{size}\*{size}"):
        theirs(images(size))
    with pytest.raises(ValueError, match=rf"Input image size \({size}x{size}\) does not match the model \(32x32\)"):
        tiny_model()(images(size))
    with torch.no_grad():  # on request, as transformers: the convolution covers what the patches cover
        assert tiny_model()(images(size), interpolate_pos_encoding=True).logits.shape == (3, 5)


def test_loss_is_the_mean_of_both_heads_cross_entropy():
    model = tiny_model()
    x = images()
    ids = torch.tensor([1, 0, 4])
    soft = torch.softmax(torch.randn(3, 5, generator=torch.Generator().manual_seed(2)), dim=-1)  # Mixup-like targets
    with torch.no_grad():
        for labels in (ids, soft):
            out = model(x, labels=labels)
            expected = (F.cross_entropy(out.cls_logits, labels) + F.cross_entropy(out.distillation_logits, labels)) / 2
            torch.testing.assert_close(out.loss, expected)
        plain = tiny_model(use_distillation_token=False)
        out = plain(x, labels=ids)
        torch.testing.assert_close(out.loss, F.cross_entropy(out.cls_logits, ids))


def test_tokens_and_position_embeddings_start_trunc_normal():
    model = tiny_model(hidden_size=192, num_attention_heads=3, image_size=64)
    embeddings = model.deit.embeddings
    for name in ("cls_token", "distillation_token", "position_embeddings"):
        tensor = getattr(embeddings, name)
        assert tensor.abs().sum() > 0, f"{name} is zero (transformers' port zeroes it; DeiT does not)"
    pos = embeddings.position_embeddings  # 66 x 192 values: enough to estimate the std
    assert 0.018 < pos.std().item() < 0.022 and abs(pos.mean().item()) < 0.002
    # distinct draws, not one shared value
    assert not torch.equal(embeddings.cls_token, embeddings.distillation_token)


def test_patch_embedding_conv_starts_at_pytorch_default_like_the_papers_code(tmp_path):
    """The paper's code leaves the patch-embedding conv at nn.Conv2d's default init: uniform(+-1/sqrt(fan_in))
    for weight and bias; linears are trunc-normal(0.02). A saved model loads its conv back untouched."""
    model = tiny_model(hidden_size=192, num_attention_heads=3, image_size=64)
    conv = model.deit.embeddings.patch_embeddings.projection
    bound = 1 / math.sqrt(conv.weight[0].numel())
    for tensor in (conv.weight, conv.bias):
        assert tensor.abs().max().item() <= bound
        assert 0.9 * bound / math.sqrt(3) < tensor.std().item() < 1.1 * bound / math.sqrt(3)  # uniform's std
    linear = model.deit.layers[0].mlp.fc1
    assert 0.018 < linear.weight.std().item() < 0.022 and linear.bias.abs().sum() == 0
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path)
    assert torch.equal(reloaded.deit.embeddings.patch_embeddings.projection.weight, conv.weight)


def test_return_dict_false_gives_a_tuple():
    model = tiny_model()
    with torch.no_grad():
        as_tuple = model(images(), return_dict=False)
        as_output = model(images())
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_output.logits)


def test_intermediate_size_sets_the_mlp_width():
    model = tiny_model(intermediate_size=37)
    assert model.deit.layers[0].mlp.fc1.out_features == 37 and model.config.mlp_ratio == 37 / 48


@pytest.mark.parametrize(
    "problem_type, num_labels, make_labels, reference",
    [
        ("regression", 1, lambda: torch.randn(3), lambda head, y: F.mse_loss(head.squeeze(-1), y)),
        ("regression", 5, lambda: torch.randn(3, 5), F.mse_loss),
        ("multi_label_classification", 5, lambda: (torch.rand(3, 5) > 0.5).float(), F.binary_cross_entropy_with_logits),
        ("single_label_classification", 5, lambda: torch.tensor([0, 4, 2]), F.cross_entropy),
        (None, 5, lambda: torch.tensor([1, 1, 3]), F.cross_entropy),
        (None, 5, lambda: torch.rand(3, 5).softmax(-1), F.cross_entropy),  # Mixup/CutMix soft targets
    ],
)
def test_loss_follows_problem_type_on_both_heads(problem_type, num_labels, make_labels, reference):
    model = tiny_model(problem_type=problem_type, num_labels=num_labels)
    torch.manual_seed(2)
    labels = make_labels()
    out = model(images(), labels=labels)
    expected = (reference(out.cls_logits, labels) + reference(out.distillation_logits, labels)) / 2
    torch.testing.assert_close(out.loss, expected)
    assert model.config.problem_type == problem_type  # the config is not changed by a forward


def test_set_attn_implementation_takes_effect():
    model = tiny_model()
    calls = []
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    ALL_ATTENTION_FUNCTIONS["sdpa"] = lambda *args, **kwargs: calls.append(1) or sdpa(*args, **kwargs)
    try:
        with torch.no_grad():
            model(images())
            assert len(calls) == 2  # one per block
            model.set_attn_implementation("eager")
            assert model.config._attn_implementation == "eager"
            model(images())
            assert len(calls) == 2  # no SDPA call any more
    finally:
        ALL_ATTENTION_FUNCTIONS["sdpa"] = sdpa


def test_output_flags_passed_to_forward_override_the_config():
    model = tiny_model(output_attentions=True, output_hidden_states=True)
    with torch.no_grad():
        from_config = model(images())
        overridden = model(images(), output_attentions=False, output_hidden_states=False)
        encoder = model.deit(images(), output_attentions=False, output_hidden_states=False)
    assert len(from_config.attentions) == 2 and len(from_config.hidden_states) == 3
    assert overridden.attentions is None and overridden.hidden_states is None
    assert encoder.attentions is None and encoder.hidden_states is None

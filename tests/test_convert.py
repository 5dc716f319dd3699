"""Conversion: the same weights in timm / the paper's .pth / transformers and in hf_deit give the same numbers out."""

import pytest
import timm
import torch
import transformers
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

import hf_deit
from hf_deit import PRESETS
from hf_deit.hub.convert import (
    KEY_MAP,
    convert_cli,
    from_official,
    from_timm,
    from_transformers,
    load_checkpoint,
    to_timm,
    to_transformers,
)

ATOL = 1e-5  # fp32; the classifier skips the last block's patch-token work, so matmul shapes (and rounding) differ: ~1e-6 observed


def perturb_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its initial value (timm zeroes biases, transformers zeroes tokens, LayerNorms start
    at 1/0), so that a swapped or dropped tensor in a key map changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return model.eval()


def timm_deit(name: str, depth: int | None = 2, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    extra = {} if depth is None else {"depth": depth}
    return perturb_(timm.create_model(name, pretrained=False, **extra, **kwargs), seed)


def images(size: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    assert diff <= ATOL, f"max abs diff {diff}"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_matches_timm_both_ways(name):
    timm_model = timm_deit(name)
    model = from_timm(timm_model)
    preset = PRESETS[name]
    config = model.config
    # The architecture is read off the model: the preset's fields, depth 2 as built, ImageNet names for 1,000 classes.
    assert config.hidden_size == preset["hidden_size"] and config.num_attention_heads == preset["num_attention_heads"]
    assert config.use_distillation_token == preset["use_distillation_token"]
    assert config.image_size == preset.get("image_size", 224) and config.crop_pct == preset.get("crop_pct", 0.875)
    assert config.num_hidden_layers == 2 and config.num_labels == 1000
    assert config.id2label[0] == "tench, Tinca tinca"

    x = images(config.image_size, batch=1)
    with torch.no_grad():
        expected = timm_model(x)
        out = model(x)
        assert_close(out.logits, expected)  # timm's eval output: the mean of the two heads for distilled DeiT
        if config.use_distillation_token:
            assert_close(out.cls_logits, timm_model.head(timm_model.forward_features(x)[:, 0]))
            assert not torch.allclose(out.cls_logits, out.distillation_logits)

        back = to_timm(model)
        assert type(back) is type(timm_model)
        assert_close(back(x), expected)
    original = timm_model.state_dict()
    assert back.state_dict().keys() == original.keys()
    assert all(torch.equal(back.state_dict()[k], original[k]) for k in original)


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_full_depth_tiny_matches_timm(name):
    timm_model = timm_deit(name, depth=None)
    model = from_timm(timm_model)
    assert model.config.num_hidden_layers == 12
    x = images(224)
    with torch.no_grad():
        expected = timm_model(x)
        assert_close(model(x).logits, expected)
        assert_close(to_timm(model)(x), expected)


def test_state_dict_pth_and_safetensors_sources(tmp_path):
    timm_model = timm_deit("deit_small_distilled_patch16_224", depth=1)
    state_dict = timm_model.state_dict()
    torch.save(state_dict, tmp_path / "student.pth")
    save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp_path / "student.safetensors")
    ddp_style = {f"module.{k}": v for k, v in state_dict.items()}  # what a DDP-wrapped model saves
    x = images(224, batch=1)
    with torch.no_grad():
        expected = timm_model(x)
        for source in (state_dict, ddp_style, tmp_path / "student.pth", str(tmp_path / "student.safetensors")):
            model = from_timm(source)
            # heads are invisible in shapes: inferred from the released width (384 -> DeiT-S, 6 heads)
            assert model.config.num_attention_heads == 6
            assert_close(model(x).logits, expected)


def test_from_official_pth(tmp_path):
    timm_model = timm_deit("deit_tiny_distilled_patch16_224", depth=2)
    # The paper's release format: {"model": state_dict}, timm-era names, a hash after the preset name.
    path = tmp_path / "deit_tiny_distilled_patch16_224-b40b3cf7.pth"
    torch.save({"model": timm_model.state_dict()}, path)
    model = from_official(path)
    x = images(224)
    with torch.no_grad():
        assert_close(model(x).logits, timm_model(x))
    assert model.config.fusion == "mean" and model.config.num_attention_heads == 3
    # `hf-deit convert --from official` writes a directory that loads back to the same model
    out = convert_cli("official", str(path), tmp_path / "out")
    with torch.no_grad():
        assert_close(transformers.AutoModelForImageClassification.from_pretrained(out)(x).logits, timm_model(x))


def test_training_checkpoint_layouts(tmp_path):
    """The paper's training checkpoints ({"model", "model_ema", "optimizer", "args": Namespace}) load with
    weights_only (timm's loader allows the Namespace) and give the non-EMA weights; compiled/DDP prefixes go."""
    import argparse

    timm_model = timm_deit("deit_tiny_patch16_224", depth=1)
    state_dict = timm_model.state_dict()
    ema = {k: torch.zeros_like(v) for k, v in state_dict.items()}
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": state_dict, "model_ema": ema, "epoch": 3, "args": argparse.Namespace(lr=1e-3)}, path)
    loaded = load_checkpoint(path)
    assert loaded.keys() == state_dict.keys() and all(torch.equal(loaded[k], state_dict[k]) for k in state_dict)
    compiled = {f"_orig_mod.module.{k}": v for k, v in state_dict.items()}
    assert from_timm({"state_dict": compiled, "epoch": 3}).state_dict().keys() == from_timm(state_dict).state_dict().keys()
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        load_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(TypeError, match="Expected a state dict"):
        from_timm([1, 2])


def test_bad_checkpoints_fail_with_a_reason(tmp_path):
    state_dict = timm_deit("deit_tiny_patch16_224", depth=1).state_dict()
    with pytest.raises(ValueError, match=r"ls1\.gamma"):  # DeiT III layer scale has no place here
        from_timm({**state_dict, "blocks.0.ls1.gamma": torch.ones(192)})
    headless = {k: v for k, v in state_dict.items() if not k.startswith("head")}
    with pytest.raises(ValueError, match="headless"):
        from_timm(headless)
    with pytest.raises(ValueError, match="Known presets: deit_base_distilled_patch16_224"):
        from_timm(state_dict, preset="deit_huge_patch16_224")
    with pytest.raises(ValueError, match="hidden_size=384 but the checkpoint has hidden_size=192"):
        from_timm(state_dict, preset="deit_small_patch16_224")
    odd_width = {k: v for k, v in state_dict.items()}
    odd_width["cls_token"] = torch.zeros(1, 1, 200)
    with pytest.raises(ValueError, match="num_attention_heads"):
        from_timm(odd_width)


def test_timm_name_without_hub_says_how_to_use_a_local_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"pass a local checkpoint instead: a \.pth/\.safetensors path"):
        from_timm("deit_tiny_patch16_224")
    with pytest.raises(FileNotFoundError, match="neither an existing checkpoint file nor a timm model name"):
        from_timm("./no_such_checkpoint.pth")


def test_key_map_is_one_to_one_and_exported():
    assert hf_deit.from_timm is from_timm and hf_deit.to_timm is to_timm  # the package's lazy exports
    timm_names = [t for t, _ in KEY_MAP]
    our_names = [o for _, o in KEY_MAP]
    assert len(set(timm_names)) == len(timm_names) and len(set(our_names)) == len(our_names)


def tiny_transformers_config(**kwargs) -> transformers.DeiTConfig:
    defaults = dict(
        image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=192, num_labels=7, hidden_act="gelu",
    )  # fmt: skip
    return transformers.DeiTConfig(**{**defaults, **kwargs})


@pytest.mark.parametrize("layer_norm_eps", [1e-6, 1e-12])
def test_from_transformers_with_teacher(layer_norm_eps):
    torch.manual_seed(0)
    hf_model = perturb_(
        transformers.DeiTForImageClassificationWithTeacher(tiny_transformers_config(layer_norm_eps=layer_norm_eps))
    )
    model = from_transformers(hf_model)
    assert model.config.layer_norm_eps == layer_norm_eps and model.config.fusion == "mean"
    assert model.config.id2label == hf_model.config.id2label
    x = images(32)
    with torch.no_grad():
        expected, out = hf_model(x), model(x)
        assert_close(out.logits, expected.logits)
        assert_close(out.cls_logits, expected.cls_logits)
        assert_close(out.distillation_logits, expected.distillation_logits)
        # and back: our fused qkv split into transformers' q/k/v again
        assert_close(to_transformers(model)(x).logits, expected.logits)


def test_from_transformers_one_head_model():
    torch.manual_seed(0)
    hf_model = perturb_(transformers.DeiTForImageClassification(tiny_transformers_config(hidden_act="gelu_new")))
    model = from_transformers(hf_model)
    assert model.config.fusion == "cls" and model.config.hidden_act == "gelu_new"
    assert torch.equal(model.distillation_classifier.weight, model.cls_classifier.weight)
    x = images(32)
    with torch.no_grad():
        assert_close(model(x).logits, hf_model(x).logits)


def test_transformers_timm_and_hf_deit_agree():
    """One set of weights, three implementations: timm -> hf_deit -> transformers gives timm's logits."""
    timm_model = timm_deit("deit_tiny_distilled_patch16_224", depth=2)
    hf_model = to_transformers(from_timm(timm_model))
    x = images(224)
    with torch.no_grad():
        assert_close(hf_model(x).logits, timm_model(x))


def test_from_transformers_directory_and_cli(tmp_path):
    torch.manual_seed(0)
    hf_model = perturb_(transformers.DeiTForImageClassificationWithTeacher(tiny_transformers_config()))
    hf_model.save_pretrained(tmp_path / "hf")
    x = images(32)
    with torch.no_grad():
        assert_close(from_transformers(tmp_path / "hf")(x).logits, hf_model(x).logits)

    out = convert_cli("transformers", str(tmp_path / "hf"), tmp_path / "ours")
    for file in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md"):
        assert (tmp_path / "ours" / file).is_file(), file
    card = (tmp_path / "ours" / "README.md").read_text()
    assert "library_name: transformers" in card and "image-classification" in card
    loaded = transformers.AutoModelForImageClassification.from_pretrained(out)
    with torch.no_grad():
        assert_close(loaded(x).logits, hf_model(x).logits)


def test_position_embedding_resize_matches_timm():
    timm_model = timm_deit("deit_tiny_distilled_patch16_224", depth=1)
    model = from_timm(timm_model)
    x = images(384, batch=1)
    with torch.no_grad():
        dynamic = model(x, interpolate_pos_encoding=True).logits  # per call, weights untouched
        model.resize_position_embeddings(384)  # permanent, as before fine-tuning at 384
        expected_pos = resample_abs_pos_embed(timm_model.pos_embed, new_size=(24, 24), num_prefix_tokens=2)
        assert_close(model.deit.embeddings.position_embeddings, expected_pos)
        assert model.config.image_size == 384

        timm_384 = timm.create_model("deit_tiny_distilled_patch16_224", depth=1, img_size=384).eval()
        timm_384.load_state_dict({**timm_model.state_dict(), "pos_embed": expected_pos})
        expected = timm_384(x)
        assert_close(model(x).logits, expected)
        assert_close(dynamic, expected)
        # timm's own per-call path agrees too
        timm_dynamic = timm.create_model("deit_tiny_distilled_patch16_224", depth=1, dynamic_img_size=True).eval()
        timm_dynamic.load_state_dict(timm_model.state_dict())
        assert_close(timm_dynamic(x), dynamic)


# Our tensors that write into the residual stream (the embeddings, each block's attention and MLP output projections).
STREAM_WRITERS = ("cls_token", "distillation_token", "position_embeddings", "patch_embeddings", "o_proj", "fc2")


@pytest.mark.parametrize("eps", [1e-6, 1e-12])  # timm's LayerNorm eps, transformers' DeiT default
def test_to_timm_saves_and_reloads_with_timm_alone(tmp_path, eps):
    """timm's own save_for_hf, then timm.create_model("local-dir:...", pretrained=True): the logits of our model.

    The residual stream is made small (values ~1e-3, variance ~1e-6, as large as timm's eps), so that the eps decides
    the logits: a reload that fell back to timm's eps would be off by far more than float rounding."""
    from timm.models import save_for_hf

    from hf_deit import DeiTConfig, DeiTForImageClassification

    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        num_labels=5, layer_norm_eps=eps)  # fmt: skip
    model = perturb_(DeiTForImageClassification(config))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if any(part in name for part in STREAM_WRITERS):
                parameter.mul_(1e-3)
    x = images(32)
    with torch.no_grad():
        expected = model(x).logits
        save_for_hf(to_timm(model), tmp_path)
        reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
        assert type(reloaded).__name__ == "VisionTransformerDistilled" and reloaded.num_classes == 5
        torch.testing.assert_close(reloaded(x), expected, rtol=1e-4, atol=1e-5)
        # The same model at timm's eps gives other logits: the check above can tell the eps apart.
        model.apply(lambda m: setattr(m, "eps", 1e-6) if isinstance(m, torch.nn.LayerNorm) else None)
        assert eps == 1e-6 or (model(x).logits - expected).abs().max() > 1e-2


def test_to_timm_exact_weights_keeps_our_tensors():
    from hf_deit import DeiTConfig, DeiTForImageClassification

    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        num_labels=5, layer_norm_eps=1e-12)  # fmt: skip
    model = perturb_(DeiTForImageClassification(config))
    exact, scaled = to_timm(model, exact_weights=True), to_timm(model)
    assert exact.norm.eps == 1e-12 and scaled.norm.eps == 1e-6
    assert torch.equal(exact.pos_embed, model.deit.embeddings.position_embeddings)
    torch.testing.assert_close(scaled.pos_embed, 1000 * model.deit.embeddings.position_embeddings)
    x = images(32)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), exact(x), rtol=1e-4, atol=1e-5)


def test_to_timm_carries_our_preprocessing_for_timm_data(imagenet_photos):
    """timm's own data config + eval transform on the exported model give our image processor's pixels."""
    import timm.data
    from PIL import Image

    from hf_deit import DeiTConfig, DeiTForImageClassification, image_processor_for

    config = DeiTConfig(image_size=48, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=3,
                        num_labels=7, crop_pct=0.75)  # fmt: skip
    model = DeiTForImageClassification(config).eval()
    timm_model = to_timm(model)
    data_config = timm.data.resolve_data_config({}, model=timm_model)
    assert data_config["input_size"] == (3, 48, 48) and data_config["crop_pct"] == 0.75
    assert timm_model.pretrained_cfg["num_classes"] == 7 and "hf_hub_id" not in timm_model.pretrained_cfg
    transform = timm.data.create_transform(**data_config)
    image = Image.open(imagenet_photos[0][0]).convert("RGB")
    ours = image_processor_for(config, backend="pil")(image, return_tensors="pt")["pixel_values"]
    theirs = transform(image).unsqueeze(0)
    assert theirs.shape == ours.shape == (1, 3, 48, 48)
    # Both resize the short side with Pillow's bicubic, crop the same centre box and normalise alike.
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(timm_model(theirs), model(theirs).logits, rtol=1e-4, atol=1e-4)

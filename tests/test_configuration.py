"""DeiTConfig: presets, derived sizes, save/load, and a clear error for each bad setting."""

import pytest

from hf_deit import PRESETS, DeiTConfig
from hf_deit.models.configuration_deit import FUSIONS


def test_presets_are_the_papers_models():
    # (width, heads, distilled, resolution) of the eight released models, from the paper's Table 1 and its 384 rows.
    expected = {
        "deit_tiny_patch16_224": (192, 3, False, 224),
        "deit_small_patch16_224": (384, 6, False, 224),
        "deit_base_patch16_224": (768, 12, False, 224),
        "deit_base_patch16_384": (768, 12, False, 384),
        "deit_tiny_distilled_patch16_224": (192, 3, True, 224),
        "deit_small_distilled_patch16_224": (384, 6, True, 224),
        "deit_base_distilled_patch16_224": (768, 12, True, 224),
        "deit_base_distilled_patch16_384": (768, 12, True, 384),
    }
    assert set(PRESETS) == set(expected)
    for name, (width, heads, distilled, size) in expected.items():
        config = DeiTConfig.from_preset(name)
        got = (config.hidden_size, config.num_attention_heads, config.use_distillation_token, config.image_size)
        assert got == (width, heads, distilled, size), name
        assert config.num_hidden_layers == 12 and config.patch_size == 16 and config.num_labels == 1000
        assert config.num_patches == (size // 16) ** 2
        assert config.num_prefix_tokens == (2 if distilled else 1)
        assert config.intermediate_size == 4 * width
        assert config.crop_pct == (1.0 if size == 384 else 0.875)


def test_preset_overrides_and_save_load(tmp_path):
    config = DeiTConfig.from_preset(
        "deit_small_distilled_patch16_224", num_hidden_layers=2, num_labels=10, fusion="cls"
    )
    assert (config.num_hidden_layers, config.num_labels, config.fusion, config.hidden_size) == (2, 10, "cls", 384)
    config.save_pretrained(tmp_path)
    loaded = DeiTConfig.from_pretrained(tmp_path)
    for field in ("hidden_size", "num_attention_heads", "num_hidden_layers", "use_distillation_token", "fusion",
                  "crop_pct", "layer_norm_eps", "num_labels", "image_size"):  # fmt: skip
        assert getattr(loaded, field) == getattr(config, field), field
    assert loaded.model_type == "hf_deit"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=225, patch_size=16), r"image_size=225 is not divisible by patch_size=16.*224 or 240"),
        (dict(hidden_size=100, num_attention_heads=3), r"hidden_size=100 is not divisible by num_attention_heads=3"),
        (dict(fusion="max"), r"fusion='max' is unknown: use one of 'mean', 'softmax_mean', 'cls', 'distillation'"),
        (dict(drop_path_rate=1.0), r"drop_path_rate=1.0 must be in \[0, 1\)"),
        (dict(crop_pct=0.0), r"crop_pct=0.0 must be in \(0, 1\]"),
    ],
)
def test_bad_config_raises_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeiTConfig(**kwargs)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        DeiTConfig.from_preset("deit_large_patch16_224")
    assert "Unknown DeiT preset 'deit_large_patch16_224'" in str(error.value)
    assert all(name in str(error.value) for name in PRESETS)


def test_every_fusion_is_accepted():
    for fusion in FUSIONS:
        assert DeiTConfig(fusion=fusion).fusion == fusion


def test_intermediate_size_from_transformers_configs_and_round_trip():
    import transformers

    # transformers' DeiT/ViT config.json (intermediate_size, no mlp_ratio) loads; mlp_ratio is derived from it.
    config = DeiTConfig.from_dict(transformers.DeiTConfig(hidden_size=192, intermediate_size=576).to_dict())
    assert (config.intermediate_size, config.mlp_ratio) == (576, 3.0)
    assert DeiTConfig(intermediate_size=3072).mlp_ratio == 4.0
    assert DeiTConfig(hidden_size=192, mlp_ratio=2.0).intermediate_size == 384  # and the other way round
    odd = DeiTConfig(hidden_size=32, num_attention_heads=4, intermediate_size=37)
    again = DeiTConfig.from_dict(odd.to_dict())
    assert again.to_dict() == odd.to_dict() and again.intermediate_size == 37


def test_softmax_mean_fusion_needs_class_probabilities():
    with pytest.raises(ValueError, match="fusion='softmax_mean' averages class probabilities"):
        DeiTConfig(fusion="softmax_mean", problem_type="regression", num_labels=1)


def test_preset_names():
    """One preset lookup (DeiTConfig.find_preset / preset_name) serves the model card and the converters."""
    assert DeiTConfig.from_preset("deit_base_patch16_384").preset_name() == "deit_base_patch16_384"
    # The architecture defines the preset; resolution and labels may differ (CIFAR fine-tunes).
    cifar = DeiTConfig.from_preset("deit_tiny_distilled_patch16_224", image_size=32, num_labels=10)
    assert cifar.preset_name() == "deit_tiny_distilled_patch16_224"
    assert DeiTConfig.from_preset("deit_tiny_patch16_224", num_hidden_layers=2).preset_name() is None
    found = DeiTConfig.find_preset(hidden_size=768, use_distillation_token=True, patch_size=16, image_size=384)
    assert found == "deit_base_distilled_patch16_384"
    assert DeiTConfig.find_preset(hidden_size=768, use_distillation_token=True, image_size=32) is None

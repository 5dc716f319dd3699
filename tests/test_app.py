"""The demo page's logic (hf_deit/app.py) without a browser: one image through the model's saved code gives what
hf_deit's own model gives, the token maths, the words, and the missing-gradio error. The page in a real browser:
tests/test_app_browser.py; the page as a Space without hf_deit: tests/test_space.py."""

from __future__ import annotations

import sys

import pytest
import torch

from hf_deit import DeiTForImageClassification
from hf_deit.app import (
    Explanation,
    agreement_markdown,
    attention_rollout,
    decode_image,
    explain,
    heatmap_overlay,
    load_model,
    prefix_attention_maps,
    token_cosine_similarity,
)
from hf_deit.cli import main


def test_one_image_through_the_saved_code_matches_hf_deit(tiny_student, imagenet_photos):
    """The model's saved code (what a Space without hf_deit runs): its heads, attention (eager, through
    output_attentions) and token similarities for one image equal hf_deit's own model on the same pixels."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    # Where hf_deit is imported the Auto classes pick its registered class; the saved code is loaded explicitly.
    _, processor = load_model(str(tiny_student))
    saved_code = get_class_from_dynamic_module("modeling_deit.DeiTForImageClassification", str(tiny_student))
    assert saved_code.__module__.startswith("transformers_modules.")
    model = saved_code.from_pretrained(tiny_student)
    image = decode_image(imagenet_photos[0][0])
    result = explain(model, processor, image, top_k=3)

    ours = DeiTForImageClassification.from_pretrained(tiny_student).eval()
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        outputs = ours(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
    for head, logits in (("fused", outputs.logits), ("cls", outputs.cls_logits),
                         ("distillation", outputs.distillation_logits)):  # fmt: skip
        probabilities = logits[0].softmax(-1)
        top = probabilities.topk(3)
        expected = [ours.config.id2label[int(i)] for i in top.indices]
        assert list(result.predictions[head]) == expected
        torch.testing.assert_close(torch.tensor(list(result.predictions[head].values())), top.values, atol=1e-6, rtol=0)
    assert result.top1["cls"] != result.top1["distillation"]  # the fixture's heads disagree

    attentions = outputs.attentions
    assert all(torch.allclose(a.sum(-1), torch.ones(())) for a in attentions)  # probabilities: rows sum to 1
    grid = ours.deit.embeddings.grid_size
    last = prefix_attention_maps(attentions[-1], 2, grid)[0]
    rollout = attention_rollout(attentions, 2, grid)[0]
    torch.testing.assert_close(result.maps["cls token, last block"], last[0])
    torch.testing.assert_close(result.maps["distillation token, rollout"], rollout[1])
    cosine = token_cosine_similarity(outputs.hidden_states, ours.deit.layernorm)[:, 0]
    assert result.cosine == pytest.approx(cosine.tolist(), abs=1e-4)
    assert result.layer_names == ["embeddings", "block 1", "block 2", "final norm"]
    assert result.crop.shape == (32, 32, 3) and result.crop.dtype.name == "uint8"


def test_a_teacher_sees_the_students_crop_and_is_shown(tiny_student, imagenet_photos):
    model, processor = load_model(str(tiny_student))
    seen = []

    def teacher(pixel_values):  # says "ship" with certainty
        seen.append(pixel_values)
        return torch.nn.functional.one_hot(torch.tensor([8]), 10).float() * 20

    result = explain(model, processor, decode_image(imagenet_photos[0][0]), teacher=teacher)
    assert seen[0].shape == (1, 3, 32, 32)  # the student's normalised crop, as in training (FrozenTeacher adapts it)
    assert next(iter(result.predictions["teacher"].items())) == ("ship", pytest.approx(1.0, abs=1e-6))
    assert "The teacher says **ship**" in agreement_markdown(result)


def test_attention_rollout_is_the_product_of_residual_mixed_attention():
    """Abnar & Zuidema's rollout: (A_2 + I)/2 @ (A_1 + I)/2 for row-stochastic A averaged over heads (order matters)."""
    generator = torch.Generator().manual_seed(0)
    prefix, grid = 2, (2, 3)
    seq = prefix + 6
    attentions = [torch.rand(1, 4, seq, seq, generator=generator).softmax(-1) for _ in range(2)]
    mixed = [(a.mean(1) + torch.eye(seq)) / 2 for a in attentions]
    expected = (mixed[1] @ mixed[0])[:, :2, prefix:].reshape(1, 2, *grid)
    torch.testing.assert_close(attention_rollout(attentions, prefix, grid), expected)
    wrong_order = (mixed[0] @ mixed[1])[:, :2, prefix:].reshape(1, 2, *grid)
    assert not torch.allclose(expected, wrong_order)
    one_block = attention_rollout(attentions[:1], prefix, grid)
    torch.testing.assert_close(one_block, mixed[0][:, :2, prefix:].reshape(1, 2, *grid))


def explanation(top1: dict[str, str]) -> Explanation:
    predictions = {head: {label: 0.5, "other": 0.25} for head, label in top1.items()}
    return Explanation(predictions=predictions, crop=torch.zeros(4, 4, 3, dtype=torch.uint8).numpy(), maps={})


def test_agreement_words():
    text = agreement_markdown(explanation({"fused": "cat", "cls": "cat", "distillation": "dog", "teacher": "dog"}))
    assert "cls head (trained on the labels) says **cat**" in text and "distillation head" in text
    assert "The teacher says **dog**: the distillation head agrees with it." in text
    text = agreement_markdown(explanation({"fused": "cat", "cls": "cat", "distillation": "cat"}))
    assert text == "The cls and distillation heads agree: **cat**."
    text = agreement_markdown(explanation({"fused": "cat", "cls": "cat", "distillation": "cat", "teacher": "cat"}))
    assert text.endswith("The teacher says **cat**: both heads agree with it.")
    text = agreement_markdown(explanation({"fused": "cat", "cls": "cat", "distillation": "cat", "teacher": "dog"}))
    assert text.endswith("The teacher says **dog**: neither head agrees with it.")


def test_heatmap_is_the_crop_enlarged_with_the_map_over_it():
    crop = torch.full((8, 8, 3), 100, dtype=torch.uint8).numpy()
    attention_map = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    overlay = heatmap_overlay(crop, attention_map)
    assert overlay.size == (224, 224)  # 8 px -> 28x, whole pixels per patch
    dark, bright = overlay.getpixel((10, 10)), overlay.getpixel((200, 10))
    assert sum(bright) > sum(dark) + 200


def test_app_without_gradio_says_what_to_install(tiny_student, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError, as where it is not installed
    assert main(["app", str(tiny_student)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and 'pip install -e ".[app]"' in error


def test_app_command_loads_a_timm_teacher_folder(tiny_student, imagenet_photos, tmp_path, monkeypatch):
    """`hf-deit app MODEL --teacher T --examples DIR --port N`: the page gets a frozen teacher over the student's
    classes and the examples, and is served on the port (gradio's launch recorded, nothing served)."""
    pytest.importorskip("gradio", reason='gradio is not installed: pip install -e ".[app]"')
    import timm
    from timm.models import save_for_hf

    import hf_deit.app

    save_for_hf(timm.create_model("resnet10t", pretrained=False, num_classes=10), tmp_path / "teacher")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(imagenet_photos[0][0].read_bytes())
    built = {}

    class Page:
        def launch(self, **kwargs):
            built["launch"] = kwargs

    def build_demo(model, processor, teacher=None, examples=()):
        built.update(teacher=teacher, examples=examples)
        return Page()

    monkeypatch.setattr(hf_deit.app, "build_demo", build_demo)
    args = ["app", str(tiny_student), "--teacher", str(tmp_path / "teacher"), "--examples", str(tmp_path / "photos"),
            "--port", "7999"]  # fmt: skip
    assert main(args) == 0
    assert built["launch"] == {"server_name": None, "server_port": 7999}
    assert built["examples"] == [str(tmp_path / "photos" / "a.jpg")]
    assert built["teacher"](torch.zeros(1, 3, 32, 32)).shape == (1, 10)

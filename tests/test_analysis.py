"""hf_deit.analysis: the token analysis against a hand-written forward pass, and `hf-deit analyze` end to end."""

import json

import pytest
import torch

from hf_deit import DeiTConfig, DeiTForImageClassification
from hf_deit.analysis import analyze_model, link_from_model_card, write_analysis


def tiny_distilled(seed: int = 0) -> DeiTForImageClassification:
    torch.manual_seed(seed)
    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                        num_labels=5)
    model = DeiTForImageClassification(config).eval()
    with torch.no_grad():  # tokens apart from the init's near-zero draw, so the similarities are not all ~0
        model.deit.embeddings.distillation_token.normal_(0, 1)
    return model


def reference(model: DeiTForImageClassification, pixel_values: torch.Tensor):
    """The cosine per layer and last-block prefix attention, from the blocks' parameters written out by hand."""
    deit = model.deit
    h = deit.embeddings(pixel_values)
    states = [h]
    for layer in deit.layers:
        attention = layer.attention
        x = layer.layernorm_before(h)
        batch, seq, width = x.shape
        heads, dim = attention.num_heads, width // attention.num_heads
        q, k, v = attention.qkv_proj(x).split(width, dim=-1)
        q, k, v = (t.reshape(batch, seq, heads, dim).transpose(1, 2) for t in (q, k, v))  # (B, heads, S, dim)
        probs = torch.softmax(q @ k.transpose(-1, -2) / dim**0.5, dim=-1)
        h = h + attention.o_proj((probs @ v).transpose(1, 2).reshape(batch, seq, width))
        h = h + layer.mlp(layer.layernorm_after(h))
        states.append(h)
    states.append(deit.layernorm(h))
    cosine = [float(((s[:, 0] * s[:, 1]).sum(-1) / (s[:, 0].norm(dim=-1) * s[:, 1].norm(dim=-1))).mean()) for s in states]
    grid = 32 // 8
    attention_maps = probs.mean(1)[:, :2, 2:].reshape(batch, 2, grid, grid)  # rows cls, dist; columns patches
    return cosine, attention_maps


def batches(pixel_values, labels, size=4):
    return [{"pixel_values": pixel_values[i : i + size], "labels": labels[i : i + size]}
            for i in range(0, len(labels), size)]


def test_analysis_matches_a_hand_written_forward():
    model = tiny_distilled()
    pixel_values = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 5, (10,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 5)).eval()

    result = analyze_model(model, batches(pixel_values, labels), teacher=teacher, num_attention_images=3)

    with torch.no_grad():
        cosine, maps = reference(model, pixel_values)
        out = model(pixel_values)
        teacher_top1 = teacher(pixel_values).argmax(-1)
    assert result.layer_names == ["embeddings", "block 1", "block 2", "final norm"]
    assert result.cosine_similarity == pytest.approx(cosine, abs=1e-5)
    assert len(set(round(c, 3) for c in cosine)) == 4  # the layers differ: a wrong index could not pass
    cls, dist, fused = out.cls_logits.argmax(-1), out.distillation_logits.argmax(-1), out.logits.argmax(-1)
    expected = {
        "cls vs distillation": (cls == dist).float().mean(),
        "cls vs teacher": (cls == teacher_top1).float().mean(),
        "distillation vs teacher": (dist == teacher_top1).float().mean(),
        "fused vs teacher": (fused == teacher_top1).float().mean(),
    }
    for pair, value in expected.items():
        assert result.agreement[pair] == pytest.approx(float(value), abs=1e-6), pair
    assert result.top1["teacher"] == pytest.approx(float((teacher_top1 == labels).float().mean()))
    assert result.num_images == 10
    first_of_class = [labels.tolist().index(c) for c in dict.fromkeys(labels.tolist())][:3]  # one image per class
    torch.testing.assert_close(result.attention_maps, maps[first_of_class], atol=1e-5, rtol=1e-4)


def test_analysis_refuses_a_plain_deit():
    model = DeiTForImageClassification(DeiTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1,
                                                  num_attention_heads=3, num_labels=5, use_distillation_token=False))
    with pytest.raises(ValueError, match="distilled DeiT"):
        analyze_model(model, [])


def test_written_files_and_model_card_link(tmp_path):
    model = tiny_distilled()
    pixel_values, labels = torch.randn(6, 3, 32, 32), torch.randint(0, 5, (6,))
    result = analyze_model(model, batches(pixel_values, labels), num_attention_images=2)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "README.md").write_text("# card\n")
    paths = write_analysis(result, str(model_dir / "analysis"))
    assert json.loads((model_dir / "analysis" / "analysis.json").read_text())["num_images"] == 6
    assert (model_dir / "analysis" / "attention_maps.png").stat().st_size > 0
    assert "| final norm |" in (model_dir / "analysis" / "analysis.md").read_text()
    assert set(paths) == {"json", "markdown", "png"}
    for _ in range(2):  # rerunning replaces the section instead of appending a second one
        assert link_from_model_card(str(model_dir), str(model_dir / "analysis"), result)
    card = (model_dir / "README.md").read_text()
    assert card.startswith("# card") and card.count("## Token analysis") == 1
    assert "(analysis/analysis.md)" in card


def test_analyze_command_on_a_saved_model(tmp_path, imagenet_photos):
    """`hf-deit analyze MODEL DATA` on an image folder: files written and linked from the card."""
    from PIL import Image

    from hf_deit.cli import main

    data = tmp_path / "data"
    for index, (path, _) in enumerate(imagenet_photos[:6]):
        folder = data / "val" / f"class{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").resize((64, 64)).save(folder / f"{index}.jpg")
    model = tiny_distilled()
    model.config.num_labels = 5
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "README.md").write_text("# card\n")
    main(["analyze", str(tmp_path / "model"), str(data), "--split", "validation", "--num-images", "2",
          "--batch-size", "4", "--device", "cpu"])
    record = json.loads((tmp_path / "model" / "analysis" / "analysis.json").read_text())
    assert record["num_images"] == 6 and len(record["cosine_similarity"]) == 4
    assert "## Token analysis" in (tmp_path / "model" / "README.md").read_text()


def test_analyze_preprocesses_as_the_models_image_processor(tmp_path, imagenet_photos, monkeypatch):
    """The evaluation images reach the model as its saved image processor gives them: its size and its crop_pct
    (0.5 here, far from the data arguments' default 0.875), not the data pipeline's defaults."""
    from PIL import Image

    from hf_deit import analysis, image_processor_for
    from hf_deit.cli import main

    data = tmp_path / "data"
    photo = Image.open(imagenet_photos[0][0]).convert("RGB").resize((64, 48))  # not square: the crop shows
    for index in range(4):
        (data / "val" / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        photo.save(data / "val" / f"class{index % 2}" / f"{index}.png")
    model = tiny_distilled()
    model.config.crop_pct = 0.5
    model.save_pretrained(tmp_path / "model")
    seen = []

    def analyze_and_keep_the_pixels(model, loader, **kwargs):
        seen.extend(batch["pixel_values"] for batch in loader)
        return analyze_model(model, loader, **kwargs)

    monkeypatch.setattr(analysis, "analyze_model", analyze_and_keep_the_pixels)
    main(["analyze", str(tmp_path / "model"), str(data), "--split", "validation", "--device", "cpu"])
    expected = image_processor_for(model.config, backend="pil")(photo, return_tensors="pt")["pixel_values"]
    pixels = torch.cat(seen)
    assert pixels.shape == (4, 3, 32, 32)
    torch.testing.assert_close(pixels, expected.expand(4, -1, -1, -1), rtol=0, atol=1e-5)

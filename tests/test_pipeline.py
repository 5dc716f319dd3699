"""The Hugging Face surface: Auto classes, pipeline on a real photo, trust_remote_code without hf_deit, the CLI."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

import hf_deit
from hf_deit import DeiTForImageClassification, image_processor_for
from hf_deit.cli import main
from hf_deit.hub.convert import from_timm

REPO_ROOT = Path(__file__).resolve().parents[1]


def perturbed_timm(depth: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=depth)
    with torch.no_grad():
        for p in model.parameters():  # off timm's zero biases / unit norms, so every tensor matters
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> tuple[Path, DeiTForImageClassification]:
    """A converted 1,000-class distilled DeiT-Ti (one block) with ImageNet names, saved the HF way."""
    model = from_timm(perturbed_timm())
    directory = tmp_path_factory.mktemp("deit-tiny")
    model.save_pretrained(directory)
    image_processor_for(model.config).save_pretrained(directory)
    return directory, model


def run(args: list[str], cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_auto_class_round_trip(saved_model):
    directory, model = saved_model
    assert (directory / "model.safetensors").is_file()
    loaded = AutoModelForImageClassification.from_pretrained(directory)
    assert type(loaded) is DeiTForImageClassification
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    # the saved keys are the module names: nothing renamed, nothing missing
    assert loaded.state_dict().keys() == model.state_dict().keys()


def test_pipeline_names_labels_on_a_real_photo(saved_model, imagenet_photos):
    directory, model = saved_model
    photo = imagenet_photos[0][0]
    classifier = pipeline("image-classification", model=str(directory), device="cpu")
    predictions = classifier(str(photo), top_k=5)
    names = set(model.config.id2label.values())
    assert len(predictions) == 5
    assert all(p["label"] in names for p in predictions)  # ImageNet names, not LABEL_123
    assert not any(p["label"].startswith("LABEL_") for p in predictions)
    # The pipeline's scores are our model's softmax on our eval preprocessing (random weights: no claim on which).
    processor = AutoImageProcessor.from_pretrained(directory)
    inputs = processor(Image.open(photo).convert("RGB"), return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 224, 224)
    with torch.no_grad():
        probs = model(**inputs).logits.softmax(-1)[0]
    top = probs.topk(5)
    assert [p["label"] for p in predictions] == [model.config.id2label[i] for i in top.indices.tolist()]
    torch.testing.assert_close(torch.tensor([p["score"] for p in predictions]), top.values, atol=1e-5, rtol=0)


def test_trust_remote_code_without_hf_deit(saved_model, tmp_path, imagenet_photos):
    directory, model = saved_model
    config = json.loads((directory / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"].endswith("DeiTForImageClassification")
    assert (directory / "modeling_deit.py").is_file() and (directory / "configuration_deit.py").is_file()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    torch.save(x, tmp_path / "x.pt")
    photo = Image.open(imagenet_photos[2][0]).convert("RGB").crop((0, 0, 512, 340))
    photo.save(tmp_path / "photo.png")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_deit"] = None  # `import hf_deit` now fails, even where it is pip-installed
        import torch
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(directory)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            torch.save(model(torch.load({str(tmp_path / "x.pt")!r})).logits, {str(tmp_path / "logits.pt")!r})
        processor = AutoImageProcessor.from_pretrained({str(directory)!r})  # transformers' own class, no remote code
        pixels = processor(Image.open({str(tmp_path / "photo.png")!r}), return_tensors="pt")["pixel_values"]
        torch.save(pixels, {str(tmp_path / "pixels.pt")!r})
        """
    )
    # cwd is a temp folder and PYTHONPATH is cleared, so the source tree is not importable either.
    env = {**os.environ, "PYTHONPATH": "", "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    run([sys.executable, "-c", script], cwd=tmp_path, env=env)
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "logits.pt"), model(x).logits)
    # Without hf_deit the saved preprocessing computes ours: resize to 256, crop 224, ImageNet statistics.
    ours = image_processor_for(model.config)(Image.open(tmp_path / "photo.png"), return_tensors="pt")["pixel_values"]
    assert torch.equal(torch.load(tmp_path / "pixels.pt"), ours)


def test_cli_convert_and_predict(tmp_path, imagenet_photos, capsys):
    timm_model = perturbed_timm()
    torch.save(timm_model.state_dict(), tmp_path / "student.pth")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "hf_deit.cli"]
    stdout = run(
        [*cli, "convert", "--from", "timm", str(tmp_path / "student.pth"), str(tmp_path / "out")], tmp_path, env
    )
    assert "Saved to" in stdout
    out = tmp_path / "out"
    for file in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md"):
        assert (out / file).is_file(), file
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["size"] == {"shortest_edge": 224} and preprocessor["crop_pct"] == 0.875  # resize to 256
    assert preprocessor["image_mean"][0] == pytest.approx(0.485)
    converted = hf_deit.DeiTForImageClassification.from_pretrained(out).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (converted(x).logits - timm_model(x)).abs().max() <= 1e-5

    # predict in-process (the same argparse entry point; a second subprocess would only re-pay the imports)
    photo = imagenet_photos[1][0]
    main(["predict", str(out), str(photo), "--top-k", "3", "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == str(photo) and len(lines) == 4
    names = set(converted.config.id2label.values())
    for line in lines[1:]:
        score, label = line.strip().split("  ", 1)
        assert 0.0 <= float(score) <= 1.0 and label in names

"""End to end on real CIFAR-10 images: examples/train_teacher.py makes a tiny timm teacher, examples/distill.py
distils a tiny DeiT from it (both as subprocesses, like a user runs them), and the output directory is checked:
loss fell, it loads with AutoModelForImageClassification and pipeline, and its card reports the run's numbers.

400 images (30 train + 10 test per class, copied from ../shared/data/cifar10), 32 px, DeiT of depth 2 / width 64,
a resnet10t teacher trained 1 epoch, 30 distillation steps. Augmentation is switched off so that 30 steps show a
falling loss; the recipe's augmentations are tested in the data tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NO_AUGMENT = ["--mixup", "0", "--cutmix", "0", "--auto_augment", "none", "--reprob", "0", "--repeated_aug", "1"]


def run_example(script: str, *args: str, cache: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2", "HF_DATASETS_CACHE": str(cache)}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / script), *args, "--data_cache_dir", str(cache)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def cifar_subset(shared_data, tmp_path_factory) -> Path:
    """A balanced CIFAR-10 folder: the first 30 train / 10 test images of each class (the source is class-sorted)."""
    source = shared_data / "cifar10"
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    root = tmp_path_factory.mktemp("cifar10_subset")
    for split, count in (("train", 30), ("test", 10)):
        for name in CIFAR10:
            (root / split / name).mkdir(parents=True)
            for path in sorted((source / split / name).glob("*.jpg"))[:count]:
                shutil.copy(path, root / split / name / path.name)
    return root


@pytest.fixture(scope="module")
def teacher_run(cifar_subset, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("teacher")
    stdout = run_example(
        "train_teacher.py", "--dataset_name", str(cifar_subset), "--eval_split", "test", "--image_size", "32",
        "--model_name", "resnet10t", "--epochs", "1", "--batch_size", "32", "--num_workers", "0",
        "--output_dir", str(out), *NO_AUGMENT, cache=tmp_path_factory.mktemp("cache"),
    )
    return out, stdout


@pytest.fixture(scope="module")
def student_run(cifar_subset, teacher_run, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("student")
    stdout = run_example(
        "distill.py", "--dataset_name", str(cifar_subset), "--eval_split", "test", "--image_size", "32",
        "--patch_size", "8", "--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "2",
        "--teacher_name_or_path", str(teacher_run[0]), "--distillation_type", "hard", "--output_dir", str(out),
        "--max_steps", "30", "--per_device_train_batch_size", "32", "--learning_rate", "1e-3",
        "--warmup_epochs", "0", "--logging_steps", "2", "--eval_strategy", "steps", "--eval_steps", "15",
        "--save_strategy", "no", "--dataloader_num_workers", "0", "--use_cpu", "--report_to", "none",
        "--seed", "0", *NO_AUGMENT, cache=tmp_path_factory.mktemp("cache"),
    )
    return out, stdout


def test_teacher_folder_is_timm_format_and_loads_as_teacher(teacher_run):
    import timm

    from hf_deit import load_teacher

    folder, stdout = teacher_run
    assert "eval top-1" in stdout
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet10t" and config["num_classes"] == 10
    assert config["label_names"] == list(CIFAR10)
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    teacher = load_teacher(str(folder), num_labels=10)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # Same statistics for student and teacher (both ImageNet mean/std): the wrapper must not change the input.
        torch.testing.assert_close(teacher(x), model(x))


def load_train_teacher():
    """examples/train_teacher.py as a module (an example script, not part of the package)."""
    import importlib.util

    if "train_teacher" not in sys.modules:
        spec = importlib.util.spec_from_file_location("train_teacher", REPO_ROOT / "examples" / "train_teacher.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["train_teacher"] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules["train_teacher"]


def test_teacher_folder_loads_with_transformers_timm_wrapper(teacher_run):
    """timm's save_for_hf repeats num_classes inside model_args, which transformers' TimmWrapper cannot take; the
    script drops it there, and timm (hf_deit's loader) still builds 10 classes from the root num_classes."""
    import timm
    from transformers import AutoModelForImageClassification

    folder, _ = teacher_run
    config = json.loads((folder / "config.json").read_text())
    assert "num_classes" not in config.get("model_args", {})
    wrapper = AutoModelForImageClassification.from_pretrained(folder).eval()
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert [wrapper.config.id2label[i] for i in range(10)] == list(CIFAR10) and model.num_classes == 10
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x).logits, model(x))
    record = json.loads((folder / "eval_results.json").read_text())
    assert record["curve"] == [[1, record["eval_top1"]]] and record["params"] == sum(
        p.numel() for p in model.parameters())
    assert "no weight decay on norms and biases" in record["optimizer"]


def test_teacher_optimizer_skips_norms_and_biases_and_schedule_is_cosine():
    module = load_train_teacher()
    args = module.TeacherArguments(model_name="resnet10t", epochs=2, learning_rate=1e-3, weight_decay=0.05,
                                   warmup_epochs=1)
    model, optimizer, scheduler = module.build_model(args, num_classes=10, steps_per_epoch=4)
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    for name, parameter in model.named_parameters():
        assert (id(parameter) in decayed) == (parameter.ndim > 1), name  # conv/linear weights only
    lrs = []
    for _ in range(8):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    # transformers' cosine: linear warm-up over 4 steps from 0, then half a cosine to 0 over the other 4
    assert lrs[:5] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[6] == pytest.approx(5e-4) and scheduler.get_last_lr()[0] == pytest.approx(0.0)


def test_teacher_mixes_in_the_training_step():
    from hf_deit.distillation.mixing import MixupArguments

    module = load_train_teacher()
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3])
    pixels = torch.randn(4, 3, 8, 8)
    mix = module.batch_mixing(MixupArguments(mixup=0.8, cutmix=0.0), 0.1, num_classes=10)
    mixed, targets = mix(pixels.clone(), labels)
    assert targets.shape == (4, 10) and torch.allclose(targets.sum(-1), torch.ones(4))
    assert not torch.equal(mixed, pixels)  # Mixup blended the images
    plain = module.batch_mixing(MixupArguments(mixup=0.0, cutmix=0.0), 0.1, num_classes=10)
    same, smoothed = plain(pixels.clone(), labels)
    assert torch.equal(same, pixels) and smoothed[0, 0] == pytest.approx(0.91) and smoothed[0, 1] == pytest.approx(0.01)


def test_distillation_loss_falls(student_run):
    folder, _ = student_run
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    train = [entry for entry in history if "loss" in entry]
    assert len(train) == 15  # 30 steps, logged every 2
    assert all("base_loss" in entry and "distillation_loss" in entry for entry in train)
    first, last = (sum(e["loss"] for e in part) / len(part) for part in (train[:4], train[-4:]))
    assert last < first - 0.05, f"training loss did not fall: first 4 logs {first:.3f}, last 4 {last:.3f}"


def test_output_loads_with_auto_class_and_pipeline(student_run, cifar_subset):
    from transformers import AutoModelForImageClassification, pipeline

    from hf_deit import DeiTForImageClassification
    from hf_deit.data import DataArguments, build_eval_transform

    folder, _ = student_run
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert isinstance(model, DeiTForImageClassification)
    assert [model.config.id2label[i] for i in range(10)] == list(CIFAR10)

    photo = sorted((cifar_subset / "test" / "cat").glob("*.jpg"))[0]
    classifier = pipeline("image-classification", model=str(folder), top_k=10)
    predictions = classifier(str(photo))
    assert {p["label"] for p in predictions} == set(CIFAR10)
    # The saved processor must preprocess as the training run evaluated: compare with the data pipeline's eval
    # transform (timm) feeding the model directly.
    transform = build_eval_transform(DataArguments(image_size=32))
    with torch.no_grad():
        probs = model(transform(Image.open(photo).convert("RGB"))[None]).logits.softmax(-1)[0]
    for p in predictions:
        assert abs(p["score"] - probs[model.config.label2id[p["label"]]].item()) < 1e-4


def test_card_reports_the_run(student_run, teacher_run):
    folder, stdout = student_run
    card = ModelCard.load(folder / "README.md")
    final = json.loads((folder / "eval_results.json").read_text())
    reported = {r.metric_name: r.metric_value for r in card.data.eval_results}
    for head in ("fused", "cls", "distillation"):
        assert reported[f"top-1 ({head})"] == round(final[f"eval_{head}_top1"], 2)
        assert f"{head:<14}{final[f'eval_{head}_top1']:>8.2f}" in stdout  # the script's printed table
    assert card.data.tags and "distillation" in card.data.tags
    assert "Distillation: hard, alpha = 0.5" in card.text and "![Training curves" in card.text
    # The teacher is named, but not by a path of the machine that trained it.
    assert f"Teacher: `{teacher_run[0].name}` (a local checkpoint)" in card.text
    assert str(teacher_run[0].parent) not in card.text
    assert (folder / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_same_command_same_weights(cifar_subset, teacher_run, tmp_path_factory):
    """Two runs of one distill.py command (same --seed) end with the same weights: the student's random init, the
    augmentations in a DataLoader worker (the DeiT recipe: RandAugment, random erasing, RA sampler) and Mixup/CutMix
    must all follow the seed."""
    from safetensors.torch import load_file

    weights = []
    for _ in range(2):
        out = tmp_path_factory.mktemp("repeat")
        run_example(
            "distill.py", "--dataset_name", str(cifar_subset), "--eval_split", "test", "--image_size", "32",
            "--patch_size", "8", "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
            "--teacher_name_or_path", str(teacher_run[0]), "--distillation_type", "hard", "--output_dir", str(out),
            "--max_steps", "3", "--per_device_train_batch_size", "16", "--eval_strategy", "no", "--save_strategy",
            "no", "--dataloader_num_workers", "1", "--use_cpu", "--report_to", "none", "--seed", "3",
            cache=tmp_path_factory.mktemp("cache"),
        )
        weights.append(load_file(out / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=0, atol=0, msg=f"{name} differs between the runs")

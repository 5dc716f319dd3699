"""Model cards: metadata that huggingface_hub parses and round-trips, content that matches the model, the curves
PNG, and the upload path up to the Hub client (HfApi calls captured, no network).

`ModelCard.validate()` posts to the Hub, so the metadata is validated locally instead: YAML parse, ModelCardData
parse, and the `model-index` <-> EvalResult round trip with huggingface_hub's own converters.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
from transformers import Trainer, TrainingArguments

from hf_deit import DataArguments, DeiTConfig, DeiTForImageClassification, image_processor_for
from hf_deit.distillation.card_facts import gather_card_facts, model_card_from_trainer
from hf_deit.hub.model_card import (
    build_model_card,
    count_parameters,
    head_metrics,
    plot_training_curves,
    push_model_to_hub,
    render_model_card,
)

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_labels=4)
METRICS = {  # as trainer.evaluate() returns them: percentages, per head
    "eval_loss": 1.2,
    "eval_fused_top1": 61.234,
    "eval_fused_top5": 97.5,
    "eval_cls_top1": 58.0,
    "eval_cls_top5": 96.0,
    "eval_distillation_top1": 60.0,
    "eval_distillation_top5": 97.0,
}


def header(card: ModelCard) -> dict:
    """The YAML block between the first two '---' lines, parsed by PyYAML (not by huggingface_hub)."""
    return yaml.safe_load(str(card).split("---")[1])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_converted_card_is_complete_and_claims_no_results():
    config = DeiTConfig.from_preset("deit_tiny_distilled_patch16_224")
    source = "timm/deit_tiny_distilled_patch16_224.fb_in1k"
    card = build_model_card(config, source=source, base_model=source)
    meta = header(card)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "image-classification" and meta["base_model"] == source
    assert {"image-classification", "deit", "distillation", "hf_deit", "vision"} <= set(meta["tags"])
    assert "model-index" not in meta  # nothing was measured here: no made-up results
    text = card.text
    assert f"converted from `{source}`" in text and "No evaluation results were recorded" in text
    assert "`deit_tiny_distilled_patch16_224`" in text and "pmlr-v139-touvron21a" in text
    # 5.91 M is DeiT-Ti distilled's size; compare with a real model, not a constant.
    real = sum(p.numel() for p in DeiTForImageClassification(DeiTConfig(**TINY)).parameters())
    assert count_parameters(DeiTConfig(**TINY)) == real
    assert f"{count_parameters(config) / 1e6:.2f} M" in text
    assert ModelCard(str(card)).data.base_model == source  # huggingface_hub parses what we wrote


def test_local_base_model_is_not_written_as_hub_id(tmp_path):
    card = build_model_card(DeiTConfig(**TINY), source=str(tmp_path), base_model=str(tmp_path))
    assert "base_model" not in header(card)


def test_trained_card_eval_results_round_trip(tmp_path):
    config = DeiTConfig(**TINY)
    card = build_model_card(
        config, teacher="runs/teacher", distillation_type="soft", alpha=0.3, tau=3.0, dataset="uoft-cs/cifar10",
        eval_split="test", recipe={"epochs": 3, "learning rate": 5e-4}, eval_results=METRICS,
        curves_png="training_curves.png", repo_id="someone/deit-cifar",
    )
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    results = {r.metric_name: r.metric_value for r in loaded.data.eval_results}
    assert results == {
        "top-1 (fused)": 61.23, "top-5 (fused)": 97.5, "top-1 (cls)": 58.0, "top-5 (cls)": 96.0,
        "top-1 (distillation)": 60.0, "top-5 (distillation)": 97.0,
    }
    assert {r.dataset_type for r in loaded.data.eval_results} == {"uoft-cs/cifar10"}
    assert {r.dataset_split for r in loaded.data.eval_results} == {"test"}
    assert {r.task_type for r in loaded.data.eval_results} == {"image-classification"}
    # model-index -> EvalResult -> model-index with huggingface_hub's converters is the identity.
    model_index = header(loaded)["model-index"]
    name, parsed = model_index_to_eval_results(model_index)
    assert name == "deit-cifar" and eval_results_to_model_index(name, parsed) == model_index
    assert header(loaded)["datasets"] == ["uoft-cs/cifar10"]
    text = loaded.text
    assert "| fused: mean of both heads (`logits`) | 61.23 | 97.5 |" in text
    assert "tau = 3.0" in text and "alpha = 0.3" in text and "`runs/teacher`" in text
    assert "![Training curves" in text and "(training_curves.png)" in text
    assert 'pipeline("image-classification", model="someone/deit-cifar"' in text
    assert 'AutoModelForImageClassification.from_pretrained("someone/deit-cifar"' in text
    assert "| learning rate | 0.0005 |" in text


def test_plain_deit_card_names_its_single_head():
    config = DeiTConfig(**{**TINY, "use_distillation_token": False})
    card = build_model_card(config, distillation_type="hard", teacher="resnet18", alpha=0.5, dataset="uoft-cs/cifar10",
                            eval_results={"eval_fused_top1": 50.0, "eval_cls_top1": 50.0})
    assert "A DeiT (cls token, one head)" in card.text and "the cls head against the teacher's argmax" in card.text
    assert "| fused = cls (`logits`) | 50.0 | - |" in card.text and "distillation token |" not in card.text
    assert count_parameters(config) < count_parameters(DeiTConfig(**TINY))  # one token and one head fewer


def test_eval_results_without_dataset_stay_out_of_model_index():
    card = build_model_card(DeiTConfig(**TINY), eval_results=METRICS)
    assert "model-index" not in header(card) and card.data.eval_results is None
    assert "| fused: mean of both heads (`logits`) | 61.23 | 97.5 |" in card.text
    assert "an evaluation set this card does not record" in card.text


def test_head_metrics_reads_trainer_names_only():
    heads = head_metrics({**METRICS, "eval_runtime": 3.0, "epoch": 1.0, "test_cls_top1": 1.0})
    assert heads["fused"] == {"top1": 61.23, "top5": 97.5}
    assert heads["cls"]["top1"] == 1.0  # the later key wins; both prefixes are understood
    assert head_metrics({"loss": 2.0, "eval_loss": 1.0}) == {}


def test_training_curves_png(tmp_path):
    log = [{"step": s, "loss": 3.0 - s / 10, "base_loss": 2.0, "distillation_loss": 1.0 - s / 20} for s in range(1, 9)]
    log += [{"step": 4, "eval_fused_top1": 30.0, "eval_cls_top1": 25.0}, {"step": 8, "eval_fused_top1": 40.0}]
    path = plot_training_curves(log, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png" and png_size(path) == (1000, 380)
    assert plot_training_curves([{"step": 1, "eval_loss": 1.0}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n: int, classes: int, size: int = 32) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=generator)
        self.y = torch.randint(0, classes, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def top_k_metrics(eval_pred) -> dict:
    """fused top-1/top-5 (%) from the Trainer's predictions: the metric names DistillationTrainer logs."""
    # A plain Trainer collects the fused logits only (the config's keys_to_ignore_at_inference).
    logits, labels = torch.as_tensor(eval_pred.predictions), torch.as_tensor(eval_pred.label_ids)
    top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
    return {
        "fused_top1": 100.0 * (top5[:, 0] == labels).float().mean().item(),
        "fused_top5": 100.0 * (top5 == labels[:, None]).any(-1).float().mean().item(),
    }


def test_model_card_from_plain_trainer(tmp_path):
    """A plain transformers Trainer (no distillation fields): the card still renders, from the real log."""
    model = DeiTForImageClassification(DeiTConfig(**TINY))
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=8, logging_steps=1,
        eval_strategy="steps", eval_steps=2, report_to=[], use_cpu=True, learning_rate=1e-3,
    )
    trainer = Trainer(model=model, args=args, train_dataset=RandomImages(32, 4), eval_dataset=RandomImages(16, 4),
                      compute_metrics=top_k_metrics)
    trainer.train()
    card = model_card_from_trainer(trainer, data_args=DataArguments(dataset_name="uoft-cs/cifar10", eval_split="test"))
    last = [e for e in trainer.state.log_history if "eval_fused_top1" in e][-1]
    assert {r.metric_name: r.metric_value for r in card.data.eval_results}["top-1 (fused)"] == round(
        last["eval_fused_top1"], 2
    )
    assert png_size(tmp_path / "run" / "training_curves.png")[0] > 0
    assert "| steps | 4 |" in card.text and "| batch size (total) | 8 |" in card.text
    assert "Teacher" not in card.text  # no distillation was configured, so none is claimed


def capture_hub(monkeypatch) -> dict:
    """Replace the Hub client's network calls with recorders; returns what they saw."""
    from huggingface_hub import CommitInfo, RepoUrl

    seen: dict = {"files": None}
    # push_model_to_hub checks first that the Hub can be written to: online, with a token.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")

    def commit_info(repo_id):
        url = f"https://huggingface.co/{repo_id}/commit/0"
        return CommitInfo(commit_url=url, commit_message="", commit_description="", oid="0" * 40)

    def create_repo(self, repo_id, **kwargs):
        seen["repo_id"] = repo_id
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        ignored = kwargs.get("ignore_patterns") or []
        root = Path(folder_path)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        seen.update(files=[f for f in files if not any(Path(f).match(pat) for pat in ignored)], repo=repo_id)
        seen["readme"] = (root / "README.md").read_text() if (root / "README.md").exists() else None
        return commit_info(repo_id)

    def create_commit(self, repo_id, operations, **kwargs):
        seen.update(files=sorted(op.path_in_repo for op in operations), repo=repo_id)
        readme = [op for op in operations if op.path_in_repo == "README.md"]
        seen["readme"] = Path(readme[0].path_or_fileobj).read_text() if readme else None
        return commit_info(repo_id)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return seen


UPLOAD = {"model.safetensors", "config.json", "preprocessor_config.json", "README.md",
          "configuration_deit.py", "modeling_deit.py"}


def test_push_model_to_hub_uploads_everything(monkeypatch, tmp_path):
    seen = capture_hub(monkeypatch)
    model = DeiTForImageClassification(DeiTConfig(**TINY))
    push_model_to_hub(model, "someone/tiny-deit", tags=["cifar"])
    assert seen["repo_id"] == "someone/tiny-deit" and UPLOAD <= set(seen["files"])
    assert 'model="someone/tiny-deit"' in seen["readme"]  # a fresh card, built for this repo
    assert {"cifar", "deit"} <= set(ModelCard(seen["readme"]).data.tags)

    # A model loaded from a training run's folder uploads that run's card and curves, not a blank one.
    run = tmp_path / "run"
    model.save_pretrained(run)
    build_model_card(model.config, dataset="uoft-cs/cifar10", eval_results=METRICS, curves_png="training_curves.png",
                     repo_id="someone/tiny-deit").save(run / "README.md")
    plot_training_curves([{"step": 1, "loss": 1.0}], run / "training_curves.png")
    push_model_to_hub(DeiTForImageClassification.from_pretrained(run), "someone/tiny-deit",
                      image_processor=image_processor_for(model.config))
    assert UPLOAD | {"training_curves.png"} <= set(seen["files"])
    assert "top-1 (fused)" in seen["readme"]


def test_model_class_does_not_import_the_publishing_layer():
    """The model files travel as remote code and import nothing of hf_deit: the model keeps transformers' own
    push_to_hub (a generic card), and the card comes with `push_model_to_hub` or the trainer's push_to_hub."""
    import ast

    import hf_deit.models as models
    from transformers import PreTrainedModel

    assert DeiTForImageClassification.push_to_hub is PreTrainedModel.push_to_hub
    for path in Path(models.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1 and not (node.module or "").startswith("hf_deit"), (path.name, node.module)
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("hf_deit") for alias in node.names), path.name


def test_trainer_push_to_hub_uploads_run_folder(monkeypatch, tmp_path):
    """DistillationTrainer.push_to_hub: save, card (with the curves), upload of output_dir, all in one call."""
    from hf_deit import DeiTTrainingArguments
    from hf_deit.distillation.trainer import DistillationTrainer

    seen = capture_hub(monkeypatch)
    teacher = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(3 * 16, 4))
    args = DeiTTrainingArguments(
        output_dir=str(tmp_path / "run"), hub_model_id="someone/distilled-tiny", max_steps=4,
        per_device_train_batch_size=8, logging_steps=1, eval_strategy="steps", eval_steps=2, save_strategy="no",
        report_to=[], use_cpu=True, distillation_type="soft", distillation_alpha=0.5, distillation_tau=2.0,
        teacher_name_or_path=None, warmup_epochs=0, learning_rate=1e-3,
    )
    trainer = DistillationTrainer(model=DeiTForImageClassification(DeiTConfig(**TINY)), args=args, teacher=teacher,
                                  train_dataset=RandomImages(32, 4), eval_dataset=RandomImages(16, 4))
    trainer.train()
    trainer.push_to_hub()
    assert seen["repo"] == "someone/distilled-tiny"
    assert UPLOAD | {"training_curves.png"} <= set(seen["files"])
    assert not any(f.startswith("checkpoint-") for f in seen["files"])
    card = ModelCard(seen["readme"])
    assert "Distillation: soft, alpha = 0.5" in card.text and "tau = 2.0" in card.text
    assert 'model="someone/distilled-tiny"' in card.text
    assert "| steps | 4 |" in card.text
    # No data arguments were given, so the dataset is unknown: results are shown but kept out of model-index.
    assert card.data.eval_results is None and "| fused: mean of both heads (`logits`) |" in card.text


def test_fine_tuned_student_card_names_its_base_model(tmp_path):
    """A student loaded from a checkpoint (as `--model_name_or_path` does) gets `base_model` in its card."""
    from hf_deit.distillation.student import prepare_student

    DeiTForImageClassification(DeiTConfig(**TINY)).save_pretrained(tmp_path / "base")
    student = prepare_student(str(tmp_path / "base"), num_labels=4)
    assert student.config._name_or_path == str(tmp_path / "base")
    # On the Hub the same loader records the repo id: that is what the card's metadata must carry.
    student.config._name_or_path = "someone/deit-tiny-base"
    args = TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True)
    trainer = Trainer(model=student, args=args)
    assert header(model_card_from_trainer(trainer))["base_model"] == "someone/deit-tiny-base"
    from_scratch = Trainer(model=DeiTForImageClassification(DeiTConfig(**TINY)), args=args)
    assert "base_model" not in header(model_card_from_trainer(from_scratch))


def test_trainer_facts_are_plain_values_and_render_the_saved_card(tmp_path):
    """DistillationTrainer.create_model_card = the facts gathered from the run, rendered by the template: the facts
    are plain values (JSON-serialisable), local paths reduced to folder names."""
    import dataclasses
    import json

    from hf_deit import DeiTTrainingArguments
    from hf_deit.distillation.trainer import DistillationTrainer
    from hf_deit.hub.model_card import Reference

    teacher_dir = tmp_path / "my-teacher"
    teacher_dir.mkdir()
    teacher = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(3 * 16, 4))
    args = DeiTTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=8, report_to=[], use_cpu=True,
        distillation_type="hard", teacher_name_or_path=str(teacher_dir), warmup_epochs=0,
        mixup=0.0, cutmix=0.0,
    )
    data_args = DataArguments(dataset_name=str(tmp_path), eval_split="test", image_size=32)
    trainer = DistillationTrainer(model=DeiTForImageClassification(DeiTConfig(**TINY)), args=args, teacher=teacher,
                                  data_args=data_args, train_dataset=RandomImages(32, 4))
    trainer.state.log_history = [{"step": 1, "loss": 2.0}, {"step": 4, **METRICS}]
    facts = gather_card_facts(trainer, trainer.data_args, trainer.teacher_source)
    json.dumps(dataclasses.asdict(facts))  # plain values only: no config, trainer or argument objects
    assert facts.dataset == Reference(tmp_path.name, local=True) and facts.train_examples == 32
    assert facts.teacher == Reference("Sequential") and facts.distillation_type == "hard"
    assert facts.results["fused"] == {"top1": 61.23, "top5": 97.5} and facts.recipe["steps"] == 4
    assert facts.recipe["mixup alpha"] == 0.0 and facts.recipe["RandAugment"] == "rand-m9-mstd0.5-inc1"
    trainer.create_model_card()
    saved = (tmp_path / "run" / "README.md").read_text()
    assert saved == str(render_model_card(dataclasses.replace(facts, curves_png="training_curves.png")))
    assert f"local folder `{tmp_path.name}`" in saved and str(tmp_path.parent) not in saved


def test_example_card_is_what_the_template_renders():
    """model_cards/example_cifar10_distilled.md (a real run's card, model_cards/README.md) is exactly what the
    template renders from that run's facts: the example shows the current wording and layout."""
    from hf_deit import __version__
    from hf_deit.hub.model_card import ArchitectureFacts, ModelCardFacts, Reference

    config = DeiTConfig(image_size=32, patch_size=4, hidden_size=96, num_hidden_layers=4, num_attention_heads=3,
                        num_labels=10, crop_pct=1.0)
    recipe = {"epochs": 8.0, "batch size (total)": 64, "optimizer": "adamw_torch_fused", "learning rate": 0.001,
              "weight decay": 0.05, "lr schedule": "cosine", "warmup epochs": 1.0, "image size": 32, "RandAugment": "off",
              "mixup alpha": 0.0, "cutmix alpha": 0.0, "label smoothing": 0.1, "random erasing": 0.25,
              "repeated augmentation": 1, "drop path": 0.1}
    facts = ModelCardFacts(
        architecture=ArchitectureFacts.of(config), repo_id="deit-tiny-cifar10-2k",
        dataset=Reference("cifar10-2k", local=True), train_examples=2000, distillation_type="hard",
        teacher=Reference("teacher", local=True), alpha=0.5, recipe=recipe, eval_split="test",
        results={"fused": {"top1": 33.0, "top5": 84.2}, "cls": {"top1": 31.4, "top5": 85.2},
                 "distillation": {"top1": 33.8, "top5": 83.4}},
        curves_png="training_curves.png",
    )
    example = Path(__file__).parent.parent / "model_cards" / "example_cifar10_distilled.md"
    expected = example.read_text().replace("hf_deit 0.1.0.", f"hf_deit {__version__}.")
    assert str(render_model_card(facts)).strip() == expected.strip()

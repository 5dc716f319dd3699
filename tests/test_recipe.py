"""The paper's recipe by default: every element against the official code's value (facebookresearch/deit), the
resolution of batch / lr / precision / workers for a machine, the schedule against timm's CosineLRScheduler stepped
as the official main.py steps it, `hf-deit recipe`, and docs/recipe.md's generated tables."""

from pathlib import Path

import pytest
import timm
import torch
from datasets import Dataset
from timm.scheduler import CosineLRScheduler
from transformers import TrainerCallback

from hf_deit import DeiTTrainingArguments, DistillationTrainer
from hf_deit.data import DataArguments
from hf_deit.distillation.arguments import StudentArguments
from hf_deit.distillation.recipe import Environment, RecipeError, resolve
from hf_deit.distillation.recipe_cli import recipe_report
from hf_deit.distillation.recipe_table import ELEMENTS, REFERENCE_ENVIRONMENT, compare, markdown_table, run_values
from hf_deit.distillation.student import prepare_student
from hf_deit.hub.convert import _BACKWARD, _rename

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
GPU = dict(gpu=True, bf16_supported=True, cpu_count=96)


def reference_values(recipe="pretrain", **training):
    args = DeiTTrainingArguments(output_dir="unused", recipe=recipe, **training)
    data = DataArguments(image_size=384 if recipe == "finetune" else 224)
    return run_values(args, data, StudentArguments(), env=REFERENCE_ENVIRONMENT)


@pytest.mark.parametrize("recipe", ["pretrain", "finetune"])
@pytest.mark.parametrize("element", ELEMENTS, ids=lambda element: element.name)
def test_every_recipe_element_is_the_official_value_or_a_marked_deliberate_difference(element, recipe):
    row = next(row for row in compare(reference_values(recipe), recipe) if row.element is element)
    assert row.status in ("same", "deliberate"), (element.name, row.official, row.ours)
    if row.status == "deliberate":
        assert element.reason


def test_a_changed_flag_is_reported_as_a_difference():
    rows = {row.element.name: row.status for row in compare(reference_values(num_train_epochs=100.0, weight_decay=0.1))}
    assert rows["epochs"] == rows["weight decay"] == "DIFFERS" and rows["warmup epochs"] == "same"


def test_recipe_command_prints_the_papers_375300_steps_and_no_unmarked_difference():
    out = recipe_report(["--dataset_size", "1281167", "--world_size", "8", "--per_device_train_batch_size", "128"])
    assert "1,251 per epoch, 375,300 in 300 epochs" in out
    assert "global batch        1,024 = 8 processes x 128 per device x 1 accumulation steps" in out
    assert "learning rate       0.001 = 0.0005 x 1,024 / 512" in out
    assert "teacher forwards    384,307,200" in out  # one per training sample: 375,300 x 1,024
    assert not [line for line in out.splitlines() if line.startswith("  ! ")]
    changed = recipe_report(["--dataset_size", "1281167", "--world_size", "8", "--num_train_epochs", "100"])
    assert [line.split()[1] for line in changed.splitlines() if line.startswith("  ! ")] == ["epochs"]


def test_docs_recipe_tables_are_the_generated_ones():
    page = (ROOT / "docs" / "recipe.md").read_text()
    for recipe in ("pretrain", "finetune"):
        assert markdown_table(recipe) in page, f"docs/recipe.md drifted: paste `hf-deit recipe --markdown` ({recipe})"


# --- resolution for a machine ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "world, given, expected",
    [
        (8, {}, (1024, 128, 1)),  # the paper's 8 GPUs
        (1, {}, (1024, 128, 8)),  # one GPU: the global batch by accumulation
        (16, {}, (1024, 64, 1)),  # run_with_submitit.py's 2 nodes x 8 GPUs x 64
        (8, {"per_device_train_batch_size": 32}, (256, 32, 1)),  # a per-device batch alone keeps its meaning
        (4, {"per_device_train_batch_size": 64, "global_batch_size": 1024}, (1024, 64, 4)),
        (2, {"gradient_accumulation_steps": 2}, (1024, 256, 2)),  # a given accumulation fixes the per-device batch
    ],
)
def test_batch_resolution(world, given, expected):
    values = resolve(given, "pretrain", Environment(world_size=world, **GPU)).values
    got = (values["global_batch_size"], values["per_device_train_batch_size"], values["gradient_accumulation_steps"])
    assert got == expected and values["learning_rate"] == pytest.approx(5e-4 * expected[0] / 512)


@pytest.mark.parametrize(
    "given",
    [
        {"per_device_train_batch_size": 100, "global_batch_size": 1024},  # 1024 / (8 x 100) is no whole number
        {"per_device_train_batch_size": 64, "gradient_accumulation_steps": 1, "global_batch_size": 1024},
        {"global_batch_size": 1020},  # does not split over 8 processes
        {"learning_rate": 1e-3, "base_learning_rate": 5e-4},  # two owners of one value
    ],
)
def test_contradicting_flags_are_refused(given):
    with pytest.raises(RecipeError):
        resolve(given, "pretrain", Environment(world_size=8, **GPU))


def test_learning_rate_has_one_owner():
    assert resolve({"learning_rate": 3e-3}, "pretrain", Environment(**GPU)).values["learning_rate"] == 3e-3
    scaled = resolve({"base_learning_rate": 1e-3, "global_batch_size": 256}, "pretrain", Environment(**GPU))
    assert scaled.values["learning_rate"] == pytest.approx(5e-4) and "1024" not in scaled.notes["learning_rate"]
    with pytest.raises(ValueError, match="not both"):
        DeiTTrainingArguments(output_dir="unused", learning_rate=1e-3, base_learning_rate=1e-3)


def test_precision_follows_the_machine(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert resolve({}, "pretrain", Environment(gpu=True, bf16_supported=True)).values["precision"] == "bf16"
    assert resolve({}, "pretrain", Environment(gpu=True, bf16_supported=False)).values["precision"] == "fp16"
    assert resolve({}, "pretrain", Environment(gpu=False)).values["precision"] == "fp32"
    assert resolve({}, "pretrain", Environment(gpu=True), precision="fp32").values["precision"] == "fp32"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # accelerate launch --mixed_precision fp16
    assert resolve({}, "pretrain", Environment(gpu=True, bf16_supported=True)).values["precision"] == "fp16"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    here = DeiTTrainingArguments(output_dir="unused", use_cpu=True)
    assert here.precision == "fp32" and not here.bf16 and not here.fp16
    explicit = DeiTTrainingArguments(output_dir="unused", use_cpu=True, bf16=True)
    assert explicit.precision == "bf16" and explicit.bf16


def test_loader_workers_are_the_papers_ten_capped_by_cores():
    assert resolve({}, "pretrain", Environment(gpu=True, cpu_count=96, local_world_size=8)).values[
        "dataloader_num_workers"] == 10
    assert resolve({}, "pretrain", Environment(gpu=True, cpu_count=16, local_world_size=8)).values[
        "dataloader_num_workers"] == 2
    assert resolve({}, "pretrain", Environment(gpu=False)).values["dataloader_num_workers"] == 0


def test_finetune_recipe_values():
    values = resolve({}, "finetune", Environment(world_size=16, **GPU)).values
    assert (values["num_train_epochs"], values["global_batch_size"], values["per_device_train_batch_size"]) == (30, 512, 32)
    assert values["learning_rate"] == pytest.approx(5e-6) and values["min_lr"] == 5e-6 and values["weight_decay"] == 1e-8
    assert values["teacher_at_student_resolution"] is True


# --- what the trainer does with it ------------------------------------------------------------------------------
def _student():
    torch.manual_seed(0)
    return prepare_student("deit_tiny_distilled_patch16_224", num_labels=4, drop_path_rate=0.0, **TINY)


def _data(n):
    g = torch.Generator().manual_seed(0)
    return Dataset.from_dict({"pixel_values": torch.randn(n, 3, 32, 32, generator=g).numpy(),
                              "labels": torch.randint(0, 4, (n,), generator=g).tolist()}).with_format("torch")


def _args(tmp_path, **overrides):
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, logging_steps=100, save_strategy="no",
                    report_to="none", disable_tqdm=True, use_cpu=True, seed=0, mixup=0.0, cutmix=0.0,
                    distillation_type="none", model_ema_decay=0.0)
    return DeiTTrainingArguments(**{**defaults, **overrides})


def test_weight_decay_groups_are_the_official_rule(tmp_path):
    """timm 0.3.2's add_weight_decay with the paper's no_weight_decay() = {pos_embed, cls_token}: no decay on 1-D
    parameters, biases and those two; the distillation token IS decayed."""
    model = _student()
    trainer = DistillationTrainer(model=model, args=_args(tmp_path), train_dataset=_data(8))
    ours = set(trainer.get_decay_parameter_names(model))
    timm_names = _rename({name: name for name, _ in model.named_parameters()}, _BACKWARD, "hf_deit")  # timm -> ours
    official = {ours_name for timm_name, ours_name in timm_names.items()
                if not (model.get_parameter(ours_name).ndim <= 1 or timm_name.endswith(".bias")
                        or timm_name in ("pos_embed", "cls_token"))}
    assert ours == official and "deit.embeddings.distillation_token" in ours


class _LearningRates(TrainerCallback):
    def __init__(self):
        self.lrs = []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append(optimizer.param_groups[0]["lr"])


def _official_lrs(epochs, steps_per_epoch, lr, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5):
    """The lr of every step of the official loop: timm's scheduler with main.py's arguments, step(epoch) after
    each epoch (main.py:432)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = CosineLRScheduler(optimizer, t_initial=epochs, lr_min=min_lr, warmup_lr_init=warmup_lr,
                                  warmup_t=warmup_epochs, cycle_limit=1, t_in_epochs=True)
    lrs = []
    for epoch in range(epochs):
        lrs += [optimizer.param_groups[0]["lr"]] * steps_per_epoch
        scheduler.step(epoch)
    return lrs


def test_lr_at_every_step_equals_the_official_loops_per_epoch_schedule(tmp_path):
    """8 images, batch 4, no repeated augmentation: 2 steps per epoch, 12 epochs, 3 of warmup."""
    recorder = _LearningRates()
    args = _args(tmp_path, num_train_epochs=12, warmup_epochs=3, learning_rate=1e-2)
    trainer = DistillationTrainer(model=_student(), args=args, train_dataset=_data(8), callbacks=[recorder])
    trainer.train()
    expected = _official_lrs(12, 2, 1e-2, warmup_epochs=3)
    assert recorder.lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert expected[0] == expected[2] == 1e-6  # epochs 0 and 1 both at warmup_lr: the official one-epoch lag


def test_per_step_schedule_is_timms_curve_per_update(tmp_path):
    """--lr_schedule step: timm's same scheduler evaluated per optimizer step (t_in_epochs=False, its step_update)."""
    recorder = _LearningRates()
    args = _args(tmp_path, num_train_epochs=12, warmup_epochs=3, learning_rate=1e-2, lr_schedule="step")
    DistillationTrainer(model=_student(), args=args, train_dataset=_data(8), callbacks=[recorder]).train()
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-2)
    scheduler = CosineLRScheduler(optimizer, t_initial=24, lr_min=1e-5, warmup_lr_init=1e-6, warmup_t=6,
                                  cycle_limit=1, t_in_epochs=False)
    expected = []
    for step in range(24):
        scheduler.step_update(step)
        expected.append(optimizer.param_groups[0]["lr"])
    assert recorder.lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_ema_is_on_by_default_and_kept_beside_the_final_model(tmp_path):
    args = DeiTTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=1,
                                 report_to="none", disable_tqdm=True, use_cpu=True, distillation_type="none",
                                 mixup=0.0, cutmix=0.0, save_strategy="no")
    assert args.model_ema_decay == 0.99996 and args.eval_strategy == "epoch"
    trainer = DistillationTrainer(model=_student(), args=args, train_dataset=_data(8))
    assert trainer.args.eval_strategy == "no"  # no evaluation data: nothing to evaluate after each epoch
    trainer.train()
    trainer.save_model()
    assert (tmp_path / "model_ema.safetensors").is_file() and (tmp_path / "model.safetensors").is_file()


@pytest.mark.parametrize("at_student_resolution, expected", [(False, (160, 160)), (True, (32, 32))])
def test_finetune_teacher_sees_the_students_resolution(tmp_path, at_student_resolution, expected):
    teacher = timm.create_model("test_resnet", num_classes=4, pretrained=False)  # its pretrained_cfg says 160 px
    args = _args(tmp_path, distillation_type="hard", teacher_at_student_resolution=at_student_resolution)
    trainer = DistillationTrainer(model=_student(), args=args, teacher=teacher, train_dataset=_data(8))
    assert trainer.teacher.input_size == expected

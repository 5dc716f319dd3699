"""DistillationTrainer: routing, frozen teacher, logging, optimizer groups, schedule, metrics, EMA, bf16, fine-tuning."""

import math

import pytest
import timm
import torch
from datasets import Dataset
from timm.layers import resample_abs_pos_embed
from torch import nn

from hf_deit import DeiTTrainingArguments, DistillationLoss, DistillationTrainer
from hf_deit.data import DataArguments
from hf_deit.distillation.teacher import TeacherMismatchError
from hf_deit.distillation.student import prepare_student

C = 4
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)


def student(drop_path_rate=0.0, **overrides):
    torch.manual_seed(0)
    return prepare_student("deit_tiny_distilled_patch16_224", num_labels=C, drop_path_rate=drop_path_rate, **{**TINY, **overrides})


def teacher_net(classes=C):
    torch.manual_seed(1)
    return timm.create_model("resnet10t", num_classes=classes, pretrained=False)


def dataset(n=16, size=32):
    g = torch.Generator().manual_seed(0)
    return Dataset.from_dict(
        {"pixel_values": torch.randn(n, 3, size, size, generator=g).numpy(), "labels": torch.randint(0, C, (n,), generator=g).tolist()}
    ).with_format("torch")


def args(tmp_path, **overrides):
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=8, num_train_epochs=2,
                    logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0,
                    warmup_epochs=1, mixup=0.0, cutmix=0.0, label_smoothing_factor=0.0)  # no mixing unless a test asks
    return DeiTTrainingArguments(**{**defaults, **overrides})


def test_teacher_stays_frozen_and_only_the_student_learns(tmp_path):
    model, teacher = student(), teacher_net()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = DistillationTrainer(model=model, args=args(tmp_path, learning_rate=1e-2), teacher=teacher,
                                  train_dataset=dataset())
    trainer.train()
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())  # BN stats too
    assert all(not p.requires_grad for p in trainer.teacher.parameters()) and not trainer.teacher.training
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in trainer.teacher.parameters()}
    assert not any(m is teacher for m in trainer.model.modules())
    assert any(not torch.equal(student_before[k], v) for k, v in model.state_dict().items())
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 8 and all({"base_loss", "distillation_loss"} <= entry.keys() for entry in logs)
    for entry in logs:  # logged total = (1 - alpha) base + alpha distill (logging_steps=1: one batch each)
        assert math.isclose(entry["loss"], 0.5 * entry["base_loss"] + 0.5 * entry["distillation_loss"], rel_tol=1e-4)


def test_compute_loss_routes_to_the_loss_module(tmp_path):
    model, teacher = student(), teacher_net()
    trainer = DistillationTrainer(model=model, args=args(tmp_path, distillation_type="soft", distillation_tau=2.0),
                                  teacher=teacher)
    batch = {"pixel_values": torch.randn(4, 3, 32, 32), "labels": torch.tensor([0, 1, 2, 3])}
    model.train()
    loss = trainer.compute_loss(model, batch)
    teacher_logits = teacher.eval()(torch.nn.functional.interpolate(batch["pixel_values"], size=(176, 176), mode="bicubic",
                                                                    antialias=True))
    expected = DistillationLoss("soft", 0.5, 2.0, label_smoothing=0.0)(model(batch["pixel_values"]), batch["labels"], teacher_logits)
    torch.testing.assert_close(loss, expected["loss"])


def test_optimizer_groups_lr_rule_and_warmup_in_epochs(tmp_path):
    trainer = DistillationTrainer(model=student(), args=args(tmp_path, distillation_type="none", gradient_accumulation_steps=2,
                                                             lr_schedule="step", min_lr=0.0), train_dataset=dataset())
    assert trainer.args.learning_rate == pytest.approx(5e-4 * 4 * 2 / 512)  # per-device 4 x 1 process x accumulation 2
    decay = set(trainer.get_decay_parameter_names(trainer.model))
    names = dict(trainer.model.named_parameters())
    for name in ("deit.embeddings.position_embeddings", "deit.embeddings.cls_token",
                 "deit.layernorm.weight", "cls_classifier.bias", "deit.layers.0.attention.qkv_proj.bias"):
        assert name in names and name not in decay
    assert {"deit.layers.0.attention.qkv_proj.weight", "deit.layers.0.mlp.fc1.weight", "cls_classifier.weight",
            "deit.embeddings.patch_embeddings.projection.weight", "deit.embeddings.distillation_token"} <= decay
    trainer.train()  # 16 examples / (4 x 2) = 2 optimizer steps per epoch, warmup 1 epoch = 2 steps
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in trainer.optimizer.param_groups}
    assert groups[0.05] == {id(names[n]) for n in decay}
    lrs = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    peak = trainer.args.learning_rate
    # the lr logged at a step is the one it used (--lr_schedule step): linear warmup from 1e-6 over 1 epoch (2 steps),
    # inside a cosine over the 2 epochs (timm's, as the paper), which is half-way down at the end of the first epoch
    assert lrs[:3] == pytest.approx([1e-6, 1e-6 + (peak - 1e-6) / 2, peak / 2]) and lrs[3] < lrs[2]


def test_evaluate_reports_each_head_and_matches_a_direct_count(tmp_path):
    model = student()
    data = dataset(n=12)
    trainer = DistillationTrainer(model=model, args=args(tmp_path), teacher=teacher_net(), eval_dataset=data)
    metrics = trainer.evaluate()
    model.eval()
    with torch.no_grad():
        out = model(data[:]["pixel_values"])
    labels = data[:]["labels"]
    for head, logits in (("fused", out.logits), ("cls", out.cls_logits), ("distillation", out.distillation_logits)):
        assert metrics[f"eval_{head}_top1"] == pytest.approx(100 * (logits.argmax(1) == labels).float().mean().item())
        assert metrics[f"eval_{head}_top5"] == pytest.approx(100.0)  # 4 classes: top-5 covers all
    assert metrics["eval_loss"] == pytest.approx(torch.nn.functional.cross_entropy(out.logits, labels).item(), rel=1e-5)


def test_non_finite_loss_stops_with_the_step_and_parts(tmp_path):
    """A NaN in the inputs makes the loss NaN at the third step (logging every step): the run stops at that log,
    naming the step and each loss part."""
    data = dataset()
    poisoned = data[:]["pixel_values"].clone()
    poisoned[8] = float("nan")  # the third batch of 4 (no shuffling below: the order is the dataset's)
    data = Dataset.from_dict({"pixel_values": poisoned.numpy(), "labels": data[:]["labels"].tolist()}).with_format("torch")
    trainer = DistillationTrainer(model=student(), args=args(tmp_path, distillation_type="none", logging_steps=1),
                                  train_dataset=data, data_args=DataArguments(dataset_name="in memory", repeated_aug=1,
                                                                              image_size=32))
    trainer.get_train_dataloader = lambda: torch.utils.data.DataLoader(data, batch_size=4, collate_fn=trainer.data_collator)
    with pytest.raises(FloatingPointError, match=r"global step 3 \(loss=nan, base_loss=nan, distillation_loss=nan"):
        trainer.train()


@pytest.mark.parametrize("distillation_type", ["hard", "soft"])
def test_a_nan_teacher_stops_the_run_naming_the_step_and_the_teacher(tmp_path, distillation_type):
    """Hard distillation's argmax of NaN logits is class 0 and its loss stays finite: the teacher's logits are
    checked themselves (on the device, read at the next log)."""
    class NaNTeacher(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], C), float("nan"))

    trainer = DistillationTrainer(model=student(), args=args(tmp_path, distillation_type=distillation_type,
                                                             logging_steps=2), teacher=NaNTeacher(), train_dataset=dataset())
    with pytest.raises(FloatingPointError, match=r"teacher NaNTeacher gave non-finite logits .* at global step 1"):
        trainer.train()
    assert trainer.state.global_step == 2  # stopped at the first log after it, not at the end of the run


@pytest.mark.parametrize("distillation_type", ["hard", "soft"])
def test_a_nan_teacher_stops_before_a_checkpoint_is_written_naming_the_teacher(tmp_path, distillation_type):
    """A save step before the next log: the monitor's flags are read before the checkpoint, so nothing trained on the
    NaN teacher's targets is written, and the error names the teacher (the soft loss's NaN reaches the weights, which
    would otherwise be blamed on the learning rate)."""
    class NaNTeacher(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], C), float("nan"))

    trainer = DistillationTrainer(model=student(), args=args(tmp_path, distillation_type=distillation_type,
                                                             logging_steps=50, save_strategy="steps", save_steps=1),
                                  teacher=NaNTeacher(), train_dataset=dataset())
    with pytest.raises(FloatingPointError, match=r"teacher NaNTeacher gave non-finite logits .* at global step 1"):
        trainer.train()
    assert trainer.state.global_step == 1 and not list(tmp_path.glob("checkpoint-*"))


def test_class_mismatch_stops_before_training(tmp_path):
    with pytest.raises(TeacherMismatchError, match="predicts 7 classes but the student has 4"):
        DistillationTrainer(model=student(), args=args(tmp_path), teacher=teacher_net(classes=7), train_dataset=dataset())


def test_bf16_on_cpu_runs_teacher_in_bf16_with_finite_losses(tmp_path):
    trainer = DistillationTrainer(model=student(), args=args(tmp_path, bf16=True, num_train_epochs=1), teacher=teacher_net(),
                                  train_dataset=dataset())
    dtypes = []
    trainer.teacher.model.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    trainer.train()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs and all(math.isfinite(entry[k]) for entry in logs for k in ("loss", "base_loss", "distillation_loss"))


def test_ema_is_evaluated_alongside(tmp_path):
    trainer = DistillationTrainer(model=student(), args=args(tmp_path, model_ema_decay=0.5, num_train_epochs=1,
                                  learning_rate=1e-2), teacher=teacher_net(),
                                  train_dataset=dataset(), eval_dataset=dataset(n=8))
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_fused_top1", "eval_ema_fused_top1", "eval_ema_loss"} <= metrics.keys()
    ema, live = trainer.model_ema.module.state_dict(), trainer.model.state_dict()
    assert any(not torch.equal(ema[k], live[k]) for k in live)


def test_fine_tune_at_a_new_resolution_with_distillation(tmp_path):
    base = student()
    base.save_pretrained(tmp_path / "base")
    model = prepare_student(str(tmp_path / "base"), image_size=48)
    assert model.config.image_size == 48
    old = base.deit.embeddings.position_embeddings.data
    expected = resample_abs_pos_embed(old, new_size=(6, 6), old_size=(4, 4), num_prefix_tokens=2)
    torch.testing.assert_close(model.deit.embeddings.position_embeddings.data, expected)
    sizes = []
    trainer = DistillationTrainer(model=model, args=args(tmp_path / "ft", num_train_epochs=1), teacher=teacher_net(),
                                  train_dataset=dataset(n=8, size=48))
    trainer.teacher.model.register_forward_pre_hook(lambda module, inputs: sizes.append(tuple(inputs[0].shape[-2:])))
    trainer.train()
    assert sizes and set(sizes) == {(176, 176)}  # the teacher gets its own resolution


def test_data_args_give_repeated_augmentation_mixup_and_unmixed_eval(tmp_path):
    from hf_deit.data import DataArguments

    data_args = DataArguments(image_size=32, repeated_aug=3)
    recipe = dict(mixup=0.8, cutmix=1.0, label_smoothing_factor=0.1)  # DeiTTrainingArguments' defaults
    trainer = DistillationTrainer(model=student(), args=args(tmp_path, num_train_epochs=1, **recipe), teacher=teacher_net(),
                                  data_args=data_args, train_dataset=dataset(n=8), eval_dataset=dataset(n=8))
    seen = []
    original = trainer.loss_fn.forward
    trainer.loss_fn.forward = lambda out, labels, teacher=None: (seen.append(labels), original(out, labels, teacher))[1]
    trainer.train()
    from hf_deit.data import RepeatAugBatchOrder

    positional = trainer.get_train_dataloader().batch_sampler.sampler  # keys images by (epoch, position) for seeding
    assert isinstance(positional.sampler, RepeatAugBatchOrder)
    assert len(seen) == 8 // 4  # the paper's epoch: len(dataset) samples (a third of the images, each 3 times)
    assert seen and all(labels.is_floating_point() and labels.shape[1] == C for labels in seen)  # mixed soft targets
    assert trainer.loss_fn.label_smoothing == 0.1
    assert "eval_fused_top1" in trainer.evaluate()


def test_save_model_writes_the_image_processor(tmp_path):
    trainer = DistillationTrainer(model=student(), args=args(tmp_path, distillation_type="none"))
    trainer.save_model(str(tmp_path / "out"))
    assert (tmp_path / "out" / "preprocessor_config.json").is_file() and (tmp_path / "out" / "model.safetensors").is_file()


def test_wrong_arguments_class_is_rejected(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="DeiTTrainingArguments"):
        DistillationTrainer(model=student(), args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True))
    with pytest.raises(ValueError, match="distillation_alpha"):
        args(tmp_path, distillation_alpha=1.5)


@pytest.mark.parametrize("problem_type", ["regression", "multi_label_classification"])
def test_non_classification_problem_types_are_refused(tmp_path, problem_type):
    with pytest.raises(ValueError, match=f"problem_type='{problem_type}'. Train it with transformers.Trainer"):
        DistillationTrainer(model=student(problem_type=problem_type), args=args(tmp_path), teacher=teacher_net())


def test_ema_weights_are_written_into_checkpoints_and_restored_on_resume(tmp_path):
    from safetensors.torch import load_file

    def make():
        return DistillationTrainer(model=student(), teacher=teacher_net(), train_dataset=dataset(),
                                   args=args(tmp_path, model_ema_decay=0.5, num_train_epochs=1, save_strategy="steps",
                                             save_steps=2))
    trainer = make()
    trainer.train()
    saved = load_file(tmp_path / "checkpoint-4" / "model_ema.safetensors")
    assert (tmp_path / "checkpoint-2" / "model_ema.safetensors").is_file()  # written by the on_save callback
    assert all(torch.equal(saved[k], v) for k, v in trainer.model_ema.module.state_dict().items())
    resumed = make()
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))  # the last step: nothing left to train
    assert all(torch.equal(saved[k], v) for k, v in resumed.model_ema.module.state_dict().items())


def test_a_checkpoint_of_another_model_is_refused_before_loading(tmp_path):
    from hf_deit.distillation.checkpoints import CheckpointError

    DistillationTrainer(model=student(), teacher=teacher_net(), train_dataset=dataset(),
                        args=args(tmp_path, num_train_epochs=1, save_strategy="steps", save_steps=2)).train()
    deeper = DistillationTrainer(model=student(num_hidden_layers=2), teacher=teacher_net(), train_dataset=dataset(),
                                 args=args(tmp_path / "other", num_train_epochs=1))
    with pytest.raises(CheckpointError, match=r"does not match the model: missing keys \['deit.layers.1"):
        deeper.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_build_student_takes_resolution_and_crop_from_the_data_and_drop_path_from_the_student_args(caplog):
    from hf_deit import StudentArguments, build_student
    from hf_deit.data import DataArguments

    data_args = DataArguments(image_size=32)  # small images: eval_crop_pct 1.0
    student_args = StudentArguments(patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    model = build_student(student_args, data_args, ["a", "b", "c", "d"])
    assert (model.config.image_size, model.config.crop_pct, model.config.drop_path_rate) == (32, 1.0, 0.1)
    assert model.config.label2id == {"a": 0, "b": 1, "c": 2, "d": 3}
    with caplog.at_level("WARNING", logger="hf_deit.distillation.trainer"):
        DistillationTrainer(model=student(), data_args=data_args,  # crop_pct 0.875: not what evaluation uses
                            args=DeiTTrainingArguments(output_dir="unused", use_cpu=True, report_to="none",
                                                       distillation_type="none"))
    assert "preprocess otherwise than evaluation" in caplog.text

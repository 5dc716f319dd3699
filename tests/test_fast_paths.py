"""Each optional fast path (hf_deit.distillation.fast_paths) gives the default path's loss and gradients within its dtype's
tolerance, through DistillationTrainer.training_step (the real route: autocast, teacher, loss, backward)."""

import pytest
import timm
import torch

from hf_deit import DeiTTrainingArguments, DistillationTrainer, load_teacher
from hf_deit.distillation.fast_paths import sdpa_context
from hf_deit.distillation.student import prepare_student

C = 4
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)


def trainer_for(tmp_path, **overrides) -> DistillationTrainer:
    torch.manual_seed(0)
    student = prepare_student("deit_tiny_distilled_patch16_224", num_labels=C, drop_path_rate=0.0, **TINY)
    torch.manual_seed(1)
    cnn = timm.create_model("test_resnet", num_classes=C, pretrained=False)
    teacher = load_teacher(cnn, num_labels=C, input_size=32)  # a fresh teacher per trainer: fast paths change it
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none", use_cpu=True,
                    save_strategy="no", disable_tqdm=True, distillation_type="soft", distillation_tau=2.0)
    args = DeiTTrainingArguments(**{**defaults, **overrides})
    return DistillationTrainer(model=student, args=args, teacher=teacher)


def batch():
    g = torch.Generator().manual_seed(2)
    return {"pixel_values": torch.randn(4, 3, 32, 32, generator=g), "labels": torch.randint(0, C, (4,), generator=g)}


def loss_and_grads(trainer, inputs=None):
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); training_step divides by it
    loss = trainer.training_step(trainer.model, inputs if inputs is not None else batch())
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return loss_and_grads(trainer_for(tmp_path_factory.mktemp("ref")))


# (overrides, rtol, atol): fp32 paths agree to fp32 rounding; bf16 autocast to bf16's ~3 significant digits.
FAST_PATHS = {
    "teacher_no_grad_instead_of_inference_mode": (dict(teacher_inference_mode=False), 0.0, 0.0),
    "teacher_channels_last": (dict(teacher_channels_last=True), 1e-5, 1e-6),
    "teacher_torch_compile": (dict(teacher_torch_compile=True, torch_compile_backend="aot_eager"), 1e-5, 1e-6),
    "sdpa_math": (dict(sdpa_backend="math"), 1e-5, 1e-6),
    "sdpa_flash": (dict(sdpa_backend="flash"), 1e-5, 1e-6),
    "bf16_autocast_student_and_teacher": (dict(bf16=True), 5e-2, 5e-3),
}


@pytest.mark.parametrize("name", FAST_PATHS)
def test_fast_path_gives_the_default_loss_and_gradients(tmp_path, reference, name):
    overrides, rtol, atol = FAST_PATHS[name]
    trainer = trainer_for(tmp_path, **overrides)
    loss, grads = loss_and_grads(trainer)
    ref_loss, ref_grads = reference
    assert grads.keys() == ref_grads.keys()
    torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=atol)
    if overrides.get("bf16"):
        # elementwise closeness is too strict for bf16 on tiny gradients: compare each tensor's direction and size
        for key, grad in grads.items():
            ref = ref_grads[key]
            assert torch.nn.functional.cosine_similarity(grad.flatten(), ref.flatten(), dim=0) > 0.99, key
            assert abs(grad.norm() / ref.norm() - 1) < 0.05, key
        assert not torch.equal(loss, ref_loss)  # bf16 really ran (autocast reached the student or teacher)
    else:
        for key, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[key], rtol=rtol, atol=atol, msg=key)
    if overrides.get("teacher_channels_last"):
        conv = next(m for m in trainer.teacher.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    if overrides.get("teacher_torch_compile"):
        # a compile backend turns on --torch_compile too: accelerate's prepare_model then compiles the whole teacher
        # (as the student) instead of prepare_teacher compiling its network
        compiled = trainer.teacher if trainer.args.torch_compile else trainer.teacher.model
        assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)


def test_fused_adamw_takes_the_same_step(tmp_path):
    """--optim adamw_torch_fused (transformers' default on torch >= 2.8) vs the foreach AdamW: one step, same grads."""
    params = {}
    for optim in ("adamw_torch", "adamw_torch_fused"):
        trainer = trainer_for(tmp_path / optim, optim=optim, learning_rate=1e-2)
        loss_and_grads(trainer)
        trainer.create_optimizer()
        assert trainer.optimizer.defaults.get("fused") is (True if optim.endswith("fused") else None)
        trainer.optimizer.step()
        params[optim] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    for name, value in params["adamw_torch"].items():
        torch.testing.assert_close(params["adamw_torch_fused"][name], value, rtol=1e-6, atol=1e-7, msg=name)


def test_sdpa_backend_is_really_pinned():
    """The context restricts the kernel: pinning one that cannot run these inputs fails (CPU has no 'efficient')."""
    q = torch.randn(1, 2, 5, 8)
    with sdpa_context("efficient"), pytest.raises(RuntimeError):
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    with pytest.raises(ValueError, match="sdpa_backend"):
        DeiTTrainingArguments(output_dir="unused", sdpa_backend="fastest", use_cpu=True, report_to="none")


def test_flags_parse_from_the_command_line():
    from transformers import HfArgumentParser

    from hf_deit.data import DataArguments

    data_args, args = HfArgumentParser((DataArguments, DeiTTrainingArguments)).parse_args_into_dataclasses([
        "--output_dir", "unused", "--use_cpu", "--report_to", "none", "--sdpa_backend", "flash",
        "--teacher_channels_last", "--teacher_torch_compile", "--teacher_inference_mode", "False", "--uint8_batches",
    ])
    assert (args.sdpa_backend, args.teacher_channels_last, args.teacher_torch_compile) == ("flash", True, True)
    assert args.teacher_inference_mode is False and data_args.uint8_batches is True

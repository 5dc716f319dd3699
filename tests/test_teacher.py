"""load_teacher: frozen, eval mode, fed its own normalisation and size; class-count mismatch stops early."""

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from hf_deit import load_teacher
from hf_deit.distillation.teacher import FrozenTeacher, TeacherMismatchError

MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)


def small_timm(num_classes=4):
    torch.manual_seed(0)
    return timm.create_model("resnet10t", num_classes=num_classes, pretrained=False)


def test_timm_teacher_is_frozen_in_eval_mode_and_stays_there():
    teacher = load_teacher(small_timm(), num_labels=4)
    assert not teacher.training and not teacher.model.training
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()  # a Trainer calling .train() on everything must not switch BatchNorm to batch statistics
    assert not teacher.model.training
    with torch.enable_grad():
        assert not teacher(torch.randn(2, 3, 32, 32)).requires_grad


def test_renormalises_the_students_batch_to_the_teachers_statistics():
    images = torch.rand(2, 3, 16, 16)  # [0, 1] pixels
    student_batch = (images - MEAN) / STD
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.5, 0.75)
    teacher = load_teacher(nn.Identity(), mean=mean, std=std)
    expected = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(teacher.adapt_inputs(student_batch), expected, atol=1e-5, rtol=1e-5)


def test_same_statistics_pass_the_batch_through_unchanged():
    batch = torch.randn(2, 3, 16, 16)
    assert torch.equal(load_teacher(nn.Identity()).adapt_inputs(batch), batch)


def test_timm_teacher_gets_its_pretrained_cfg_size_bicubic():
    model = small_timm()
    teacher = load_teacher(model)
    assert teacher.input_size == tuple(model.pretrained_cfg["input_size"][-2:])  # (176, 176) for resnet10t
    teacher = load_teacher(model, input_size=48)
    batch = torch.randn(1, 3, 32, 32)
    expected = F.interpolate(batch, size=(48, 48), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(teacher.adapt_inputs(batch), expected)
    torch.testing.assert_close(teacher(batch), model.eval()(expected))


def test_class_count_mismatch_says_what_to_do():
    with pytest.raises(TeacherMismatchError, match="predicts 4 classes but the student has 10.*train_teacher"):
        load_teacher(small_timm(4), num_labels=10)
    # a generic module: its class count comes from one forward pass
    with pytest.raises(TeacherMismatchError, match="predicts 3 classes"):
        load_teacher(nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()), num_labels=10, input_size=8)


def test_timm_name_with_local_checkpoint(tmp_path):
    model = small_timm(4)
    path = tmp_path / "teacher.pth"
    torch.save(model.state_dict(), path)
    teacher = load_teacher("resnet10t", num_labels=4, checkpoint_path=str(path))
    batch = torch.randn(2, 3, 32, 32)
    assert teacher.num_labels == 4
    size = tuple(model.pretrained_cfg["input_size"][-2:])
    expected = model.eval()(F.interpolate(batch, size=size, mode="bicubic", align_corners=False, antialias=True))
    torch.testing.assert_close(teacher(batch), expected)


def test_transformers_directory_teacher_uses_its_image_processor(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=4)
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(tmp_path)
    teacher = load_teacher(str(tmp_path), num_labels=4)
    assert teacher.mean == (0.5, 0.5, 0.5) and teacher.input_size == (16, 16)
    images = torch.rand(2, 3, 32, 32)
    student_batch = (images - MEAN) / STD
    expected_input = F.interpolate((images - 0.5) / 0.5, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(teacher(student_batch), model(expected_input).logits, atol=1e-4, rtol=1e-4)


def test_dtype_and_device_placement():
    teacher = load_teacher(small_timm(), num_labels=4, device="cpu", dtype=torch.bfloat16)
    assert isinstance(teacher, FrozenTeacher)
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}
    assert teacher(torch.randn(1, 3, 32, 32).bfloat16()).dtype == torch.bfloat16

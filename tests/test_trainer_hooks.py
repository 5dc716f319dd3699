"""The transformers internals DistillationTrainer still relies on, the order it hands to accelerate, and the timm and
torchvision behaviour hf_deit.data builds on (docs/architecture.md lists both).

Each private Trainer method we override is checked here for the signature we call and for the place transformers
calls it from; a transformers release that renames or stops calling one fails these tests instead of silently
dropping the behaviour (seeded augmentation, a stream's exact resume). Likewise a timm or torchvision release whose
crops stop drawing through `self.get_params`, or whose AugmentOp stops calling `self.aug_fn`, fails here instead of
silently recording wrong crop boxes for a cached teacher or crashing a run on Pillow 13.
"""

import inspect

import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard
from PIL import Image
from timm.data.auto_augment import AugmentOp, RandAugment
from timm.data.transforms import RandomResizedCropAndInterpolation
from torch.utils.data import BatchSampler
from torchvision import transforms
from torchvision.transforms import functional as TF
from transformers import Trainer

from hf_deit.data import DataArguments, RepeatAugBatchOrder, build_train_transform, repeat_aug_sampler
from hf_deit.data.crop_record import record_crops
from hf_deit.data.device_randaugment import LEVEL_DENOM
from hf_deit.data.transforms import _posterize_zero_bits_safe


def _parameters(method):
    return list(inspect.signature(method).parameters)


def test_private_trainer_methods_we_override_keep_their_signatures():
    assert _parameters(Trainer._get_dataloader) == [
        "self", "dataset", "description", "batch_size", "sampler_fn", "is_training", "dataloader_key"
    ]
    assert _parameters(Trainer._init_training_state) == [
        "self", "max_steps", "num_update_steps_per_epoch", "num_train_epochs", "resume_from_checkpoint", "trial"
    ]
    loop = inspect.getsource(Trainer._inner_training_loop)
    # What _init_training_state returns is where the epoch loop starts (our on_epoch_begin relies on it).
    assert "epochs_trained, steps_trained_in_current_epoch = self._init_training_state(" in loop
    assert "for epoch in range(epochs_trained, num_train_epochs):" in loop
    assert loop.index("on_epoch_begin") < loop.index("self._run_epoch(")


def test_private_trainer_methods_we_override_are_still_called_where_we_rely_on_them():
    loop = inspect.getsource(Trainer._inner_training_loop)
    assert "self.get_train_dataloader()" in loop and "self._init_training_state(" in loop
    assert loop.index("self.get_train_dataloader()") < loop.index("self._prepare_for_training(")  # before the scheduler
    # and before _init_training_state, which asks whether the loader has a length (a stream cut into epochs has)
    assert loop.index("self.get_train_dataloader()") < loop.index("self._init_training_state(")
    assert "self._get_dataloader(" in inspect.getsource(Trainer.get_train_dataloader)
    assert "on_save" in inspect.getsource(Trainer._maybe_log_save_evaluate)  # EMA and stream state are written then


def test_on_save_comes_after_every_file_of_a_checkpoint():
    """A checkpoint is marked complete in on_save (hf_deit.distillation.run_folder.CompleteCheckpointCallback): that
    is sound only while transformers writes all of a checkpoint, rotation included, before firing on_save."""
    save_evaluate = inspect.getsource(Trainer._maybe_log_save_evaluate)
    assert save_evaluate.index("self._save_checkpoint(") < save_evaluate.index("callback_handler.on_save(")
    save = inspect.getsource(Trainer._save_checkpoint)
    assert "on_save" not in save and "self.save_model(output_dir, _internal_call=True)" in save
    last_write = max(save.index(name) for name in ("_save_optimizer_and_scheduler", "_save_rng_state", "save_to_json"))
    assert last_write < save.index("rotate_checkpoints(")


def test_the_resume_of_a_stream_epoch_goes_through_get_resumed_dataloader():
    """A stream cut into epochs (hf_deit.data.EpochLoader) resumes by skipping inside it: DistillationTrainer
    overrides the public get_resumed_dataloader, which the epoch loop must still call."""
    epoch = inspect.getsource(Trainer._run_epoch)
    assert "self.get_resumed_dataloader(train_dataloader, steps_trained_in_current_epoch)" in epoch
    assert epoch.index("self.get_resumed_dataloader(") < epoch.index("train_dataloader.set_epoch(epoch)")


def test_accelerate_batch_sharding_of_the_global_order_gives_timms_per_rank_sequences():
    """24 images x 3 repeats over 2 ranks: timm gives each rank 12 (the paper's epoch); batches of 5 keep 2 full
    batches per rank, the last partial one is dropped (the paper's drop_last)."""
    order = RepeatAugBatchOrder(list(range(24)), num_repeats=3, num_replicas=2, batch_size=5, seed=7)
    order.set_epoch(2)
    for rank in range(2):
        shard = BatchSamplerShard(BatchSampler(order, 5, drop_last=False), num_processes=2, process_index=rank)
        got = [index for batch in shard for index in batch]
        expected = repeat_aug_sampler(list(range(24)), 3, num_replicas=2, rank=rank, seed=7)
        expected.set_epoch(2)
        assert len(shard) == 2 and got == list(expected)[:10]


def test_one_process_order_is_timms_in_full_batches():
    order = RepeatAugBatchOrder(list(range(10)), num_repeats=3, num_replicas=1, batch_size=4, seed=0)
    assert list(order) == list(repeat_aug_sampler(list(range(10)), 3, seed=0))[:8] and len(order) == 8


def test_an_epoch_without_a_full_batch_is_refused():
    with pytest.raises(ValueError, match="lower the per-device batch size"):
        RepeatAugBatchOrder(list(range(10)), num_repeats=3, num_replicas=2, batch_size=6)


def test_the_check_above_depends_on_round_robin_batch_sharding():
    """Were accelerate to give each rank a contiguous block of batches instead, the ranks would not get timm's
    sequences: the sharding test above would fail."""
    order = RepeatAugBatchOrder(list(range(24)), num_repeats=3, num_replicas=2, batch_size=5, seed=7)
    indices = list(order)
    expected = list(repeat_aug_sampler(list(range(24)), 3, num_replicas=2, rank=0, seed=7))
    assert indices[: len(indices) // 2] != expected[:10]


def test_the_package_overrides_at_most_two_private_trainer_methods():
    """Issue 22: `_get_dataloader` and `_init_training_state` are the only private transformers.Trainer methods the
    package overrides (each says why, and the tests above pin them); everything else goes through public hooks."""
    import hf_deit.distillation.trainer as trainer_module

    private = {
        name for name, value in vars(trainer_module.DistillationTrainer).items()
        if name.startswith("_") and not name.startswith("__") and callable(value) and hasattr(Trainer, name)
    }
    assert private == {"_get_dataloader", "_init_training_state"}


def test_the_trainer_module_stays_a_router():
    """Issue 22: hf_deit/distillation/trainer.py at most 300 lines (the state lives in callbacks and the data layer)."""
    from pathlib import Path

    import hf_deit.distillation.trainer as trainer_module

    assert len(Path(trainer_module.__file__).read_text().splitlines()) <= 300


def test_timms_mixup_still_computes_the_coefficient_where_we_record_it():
    """LambdaRecordingMixup (hf_deit.distillation.mixing) records the coefficient in timm's private _mix_elem /
    _mix_pair / _mix_batch: they must keep returning it to Mixup.__call__, which must keep calling them."""
    import torch
    from timm.data import Mixup

    from hf_deit.distillation.mixing import LambdaRecordingMixup

    call = inspect.getsource(Mixup.__call__)
    for mode in ("elem", "pair", "batch"):
        assert f"lam = self._mix_{mode}(x)" in call
        mixup = LambdaRecordingMixup(mixup_alpha=0.8, cutmix_alpha=0.0, mode=mode, num_classes=4, label_smoothing=0.0)
        x, target = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        _, soft = mixup(x, target)
        lam = mixup.last_lam if mode == "batch" else mixup.last_lam.flatten()
        # the targets timm made are lam * one_hot(y) + (1 - lam) * one_hot(y.flip(0)): the recorded lam made them
        expected = torch.as_tensor(lam).reshape(-1, 1) * torch.eye(4)[target] + (1 - torch.as_tensor(lam).reshape(-1, 1)) * torch.eye(4)[target.flip(0)]
        torch.testing.assert_close(soft, expected)


# -- timm and torchvision: what hf_deit.data relies on -----------------------------------------------------------------
CROPS = {
    "timm": RandomResizedCropAndInterpolation(24, scale=(0.1, 0.9), interpolation="bicubic"),
    "torchvision": transforms.RandomResizedCrop(24, scale=(0.1, 0.9), interpolation=TF.InterpolationMode.BICUBIC),
    "padded": transforms.RandomCrop(24, padding=(3, 5, 2, 4), padding_mode="reflect"),
}


def _crop_again(image: Image.Image, crop, box, flipped: bool) -> Image.Image:
    """The crop at `box` (fractions of the unpadded image) taken by hand, the way `crop` takes it."""
    left_pad, top_pad = (crop.padding[0], crop.padding[1]) if isinstance(crop, transforms.RandomCrop) else (0, 0)
    x0, y0, x1, y1 = box
    left, top = round(x0 * image.width) + left_pad, round(y0 * image.height) + top_pad
    width, height = round((x1 - x0) * image.width), round((y1 - y0) * image.height)
    if isinstance(crop, transforms.RandomCrop):
        out = TF.crop(TF.pad(image, list(crop.padding), padding_mode=crop.padding_mode), top, left, height, width)
    else:
        out = TF.resized_crop(image, top, left, height, width, list(crop.size), crop.interpolation)
    return TF.hflip(out) if flipped else out


@pytest.mark.parametrize("kind", sorted(CROPS))
def test_timm_and_torchvision_crops_draw_their_box_through_self_get_params(kind):
    """hf_deit.data.crop_record overrides `get_params` in subclasses of these crops: the box it records must be the
    box the crop then cuts, which holds while their `__call__`/`forward` take the box from `self.get_params`."""
    rng = np.random.default_rng(0)
    recorded = record_crops(transforms.Compose([CROPS[kind], transforms.RandomHorizontalFlip()]))
    for height, width in ((37, 53), (61, 29), (48, 48)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for _ in range(4):
            out = recorded(image)
            record = recorded.crop_record
            expected = _crop_again(image, recorded.transform.transforms[0], record.box, record.flipped)
            assert np.array_equal(np.asarray(out), np.asarray(expected)), (kind, record)


def test_timms_augment_op_calls_the_aug_fn_set_on_it():
    """fix_timm_posterize (hf_deit.data.transforms) sets `aug_fn` on the posterize ops of timm's RandAugment, found
    through `RandAugment.ops`: sound while AugmentOp's `__call__` calls `self.aug_fn(image, *level_args, ...)`."""
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    calls = []
    op.aug_fn = lambda image, *args, **kwargs: calls.append(args) or image
    op(Image.new("RGB", (8, 8)))
    assert calls == [(0,)]  # 0 bits at magnitude 10: what Pillow 13's posterize refuses
    steps, pending = [], [build_train_transform(DataArguments())]
    while pending:
        step = pending.pop()
        steps.append(step)
        pending += list(getattr(step, "transforms", []))
    ops = [op for step in steps if isinstance(step, RandAugment) for op in step.ops if op.name.startswith("Posterize")]
    assert ops and all(op.aug_fn is _posterize_zero_bits_safe for op in ops)


def test_timms_magnitude_scale_is_the_one_device_randaugment_copies():
    """hf_deit.data.device_randaugment copies timm's private `_LEVEL_DENOM` (magnitude 10 = an op's strongest)."""
    from timm.data import auto_augment

    assert auto_augment._LEVEL_DENOM == LEVEL_DENOM

"""The transformers internals DistillationTrainer still relies on, and the order it hands to accelerate.

Each private Trainer method we override is checked here for the signature we call and for the place transformers
calls it from; a transformers release that renames or stops calling one fails these tests instead of silently
dropping the behaviour (seeded augmentation, a stream's exact resume)."""

import inspect

import pytest
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler
from transformers import Trainer

from hf_deit.data import RepeatAugBatchOrder, repeat_aug_sampler


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

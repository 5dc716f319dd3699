"""benchmarks/host_syncs.py counts each way of turning a tensor into a Python value once, says where it happened, and
leaves torch.Tensor as it found it."""

import pytest
import torch

from benchmarks.host_syncs import SYNC_METHODS, count_host_syncs


def test_counts_each_sync_once_at_its_site():
    t, v = torch.tensor(2.5), torch.arange(3)
    with count_host_syncs() as syncs:
        t.item()
        bool(t > 0)
        if t:  # __bool__ through an if
            pass
        float(t)
        int(t)
        v.tolist()
        f"{t:.3f}"  # torch's __format__ calls item: counted, at this line
        t + 1  # no sync
    assert dict(syncs.counts) == {"item": 2, "__bool__": 2, "__float__": 1, "__int__": 1, "tolist": 1}
    assert syncs.total == 7
    sites = " ".join(syncs.sites)
    assert "tests/test_host_syncs.py" in sites and "torch/" not in sites
    assert syncs.per_step(7)["item"] == pytest.approx(2 / 7)


def test_methods_are_restored_even_after_an_error():
    before = {name: torch.Tensor.__dict__.get(name) for name in SYNC_METHODS}
    with pytest.raises(ZeroDivisionError), count_host_syncs():
        torch.tensor(1.0).item()
        1 / 0
    assert {name: torch.Tensor.__dict__.get(name) for name in SYNC_METHODS} == before
    with count_host_syncs() as syncs:
        pass
    torch.tensor(1.0).item()  # after the block: not counted
    assert syncs.total == 0


def test_device_type_filter():
    with count_host_syncs(device_type="cuda") as syncs:
        torch.tensor(1.0).item()  # a CPU tensor: no sync with any device
    assert syncs.total == 0


def test_a_distillation_training_step_makes_no_host_sync(tmp_path):
    """Issue 23: zero host syncs in a steady-state DistillationTrainer step (a live teacher, hard distillation, Mixup
    and CutMix, EMA, the per-image seeded sampler, logging off). Logging steps may sync (the loss and the
    non-finite check are read there); so steps 3-12 of a run logging only at its end are counted, inside its first
    epoch (64 images, batches of 4: an epoch's start draws its order on the host, once per epoch)."""
    from transformers import TrainerCallback

    from benchmarks.host_syncs import HostSyncCounter
    from hf_deit import DeiTTrainingArguments, DistillationTrainer
    from test_trainer import dataset, student, teacher_net

    counter = HostSyncCounter()

    class CountSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                counter.start()
            elif state.global_step == 12:
                counter.stop()

    args = DeiTTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=14, logging_steps=100, save_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=True, distillation_type="hard", seed=0,
    )
    assert args.use_model_ema and args.mixup > 0 and not args.logging_nan_inf_filter  # the recipe's defaults
    trainer = DistillationTrainer(model=student(), args=args, teacher=teacher_net(), train_dataset=dataset(n=64),
                                  callbacks=[CountSteps()])
    trainer.train()
    assert counter.total == 0, counter.sites.most_common(5)

"""A tiny DistillationTrainer run driven by the tests (tests/test_resume.py, tests/test_distributed.py).

    python tests/scripts/train_tiny.py OUT_DIR --dataset map|stream [--kill-at-step N | --pause-at-step N] [--resume]
        [--record-ids] [--teacher-cache]
    torchrun --nproc_per_node 2 tests/scripts/train_tiny.py OUT_DIR --dataset map --record-ids

Student: DeiT depth 1, width 32, 32 px, drop path 0.1 (so the RNG state matters); teacher: a 2-layer conv net;
data: 16 random images, Mixup/CutMix (0.8/1.0, smoothing 0.1) applied by the trainer. Writes OUT_DIR/final/ (save_model) and,
with --record-ids, OUT_DIR/ids_rank{r}.json: the example ids each rank trained on, per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

NUM_EXAMPLES, NUM_LABELS = 16, 4


def tiny_teacher() -> nn.Module:
    torch.manual_seed(1234)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, NUM_LABELS),
    )


def tiny_cache():
    """A CachedTeacher of random 2x2 label maps (all classes kept) for the NUM_EXAMPLES rows."""
    from hf_deit.distillation.teacher_cache import CachedTeacher, TeacherCacheInfo

    g = torch.Generator().manual_seed(99)
    info = TeacherCacheInfo(teacher="random", teacher_sha256="", input_size=32, top_k=NUM_LABELS,
                            num_classes=NUM_LABELS, map_size=(2, 2), dataset="tiny", split="train",
                            num_rows=NUM_EXAMPLES, dataset_sha256="")
    values = torch.randn(NUM_EXAMPLES, 2, 2, NUM_LABELS, generator=g).sort(dim=-1, descending=True)
    return CachedTeacher(info, values.values.flatten(1), values.indices.flatten(1))


def tiny_dataset(kind: str, cache_keys: bool = False):
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    data = {
        "pixel_values": torch.randn(NUM_EXAMPLES, 3, 32, 32, generator=g).numpy(),
        "labels": torch.randint(0, NUM_LABELS, (NUM_EXAMPLES,), generator=g).tolist(),
        "idx": list(range(NUM_EXAMPLES)),
    }
    if cache_keys:  # what the recording train transform would give: a crop box and a flip per example
        corner = torch.rand(NUM_EXAMPLES, 2, generator=g) * 0.5
        data["example_key"] = list(range(NUM_EXAMPLES))  # an in-memory cache is keyed by row number
        data["crop_box"] = torch.cat([corner, corner + 0.5], dim=1).numpy()
        data["crop_flip"] = (torch.rand(NUM_EXAMPLES, generator=g) < 0.5).tolist()
    dataset = Dataset.from_dict(data).with_format("torch")
    if kind == "stream":
        # 4 shards (>= world size), shuffled per pass: set_epoch(pass) reseeds the shard order and the buffer.
        dataset = dataset.to_iterable_dataset(num_shards=4).shuffle(seed=7, buffer_size=8)
    return dataset


class IdRecordingCollator:
    """Wraps the training collator; remembers which example ids went into training batches."""

    def __init__(self, collator):
        self.collator = collator
        self.ids: list[list[int]] = [[]]

    def __call__(self, examples):
        self.ids[-1].extend(int(e["idx"]) for e in examples)
        return self.collator([{k: v for k, v in e.items() if k != "idx"} for e in examples])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--dataset", choices=["map", "stream"], default="map")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--save-steps", type=int, default=3)
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--pause-at-step", type=int, default=None, help="after step N, write OUT_DIR/paused_rank{r} "
                        "(this process' id) and wait there for the test to kill the whole launch (tests/test_scale_out.py)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--record-ids", action="store_true")
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--mixup", type=float, default=0.8)
    parser.add_argument("--drop-path", type=float, default=0.1)
    parser.add_argument("--repeated-aug", type=int, default=1)
    parser.add_argument("--teacher-cache", action="store_true", help="a CachedTeacher (random 2x2 label maps) "
                        "instead of the live teacher; examples carry example_key, crop_box and crop_flip")
    cli = parser.parse_args()

    torch.set_num_threads(1)
    from transformers import TrainerCallback

    from hf_deit import DeiTTrainingArguments, DistillationTrainer
    from hf_deit.data import DataArguments, DeiTCollator
    from hf_deit.distillation.student import prepare_student

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    epochs_mode = cli.epochs is not None
    args = DeiTTrainingArguments(
        output_dir=cli.output_dir,
        per_device_train_batch_size=4 if not distributed else 2,
        max_steps=-1 if epochs_mode else cli.max_steps,
        num_train_epochs=cli.epochs or 300,
        save_steps=cli.save_steps,
        save_strategy="steps" if not epochs_mode else "no",
        save_total_limit=0,  # keep every checkpoint: the test lists them
        logging_steps=1,
        warmup_epochs=1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
        ddp_backend="gloo" if distributed else None,
        accelerator_config={"dispatch_batches": False},
        mixup=cli.mixup,
        cutmix=1.0 if cli.mixup else 0.0,
    )
    from transformers import set_seed

    set_seed(args.seed)  # the student's initial weights must be the same in every run
    model = prepare_student(
        "deit_tiny_distilled_patch16_224", num_labels=NUM_LABELS, image_size=32, patch_size=8, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, drop_path_rate=cli.drop_path,
    )
    data_args = DataArguments(image_size=32, repeated_aug=cli.repeated_aug)
    collator = IdRecordingCollator(DeiTCollator())

    callbacks = []
    if cli.kill_at_step is not None:
        class Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == cli.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, as a pre-empted job

        callbacks.append(Kill())
    if cli.pause_at_step is not None:
        class Pause(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == cli.pause_at_step:
                    marker = os.path.join(args.output_dir, f"paused_rank{args.process_index}")
                    with open(marker + ".tmp", "w") as f:
                        f.write(str(os.getpid()))
                    os.replace(marker + ".tmp", marker)  # whole, when the test sees it
                    signal.pause()  # until the test SIGKILLs torchrun and every rank, as a pre-empted node

        callbacks.append(Pause())
    if cli.record_ids:
        class EpochMark(TrainerCallback):
            def on_epoch_end(self, args, state, control, **kwargs):
                collator.ids.append([])

        callbacks.append(EpochMark())

    trainer = DistillationTrainer(
        model=model,
        args=args,
        teacher=tiny_cache() if cli.teacher_cache else tiny_teacher(),
        data_args=data_args,
        data_collator=collator,
        train_dataset=tiny_dataset(cli.dataset, cache_keys=cli.teacher_cache),
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=True if cli.resume else None)
    trainer.save_model(os.path.join(cli.output_dir, "final"))
    rank = args.process_index
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()},
              os.path.join(cli.output_dir, f"weights_rank{rank}.safetensors"))
    if cli.record_ids:
        from torch.nn.parallel import DistributedDataParallel

        report = {
            "ids": [ids for ids in collator.ids if ids],
            "teacher_is_ddp": isinstance(trainer.teacher, DistributedDataParallel)
            or any(isinstance(m, DistributedDataParallel) for m in trainer.teacher.modules()),
            "student_is_ddp": isinstance(trainer.model_wrapped, DistributedDataParallel),
            "teacher_in_student": any(m is trainer.teacher.model for m in trainer.model_wrapped.modules()),
            "log_history": trainer.state.log_history,
        }
        with open(os.path.join(cli.output_dir, f"ids_rank{rank}.json"), "w") as f:
            json.dump(report, f)
    trainer.close()  # as examples/distill.py ends: gloo and DDP torn down before interpreter exit
    if distributed:  # what close() leaves: no DDP wrapper (it holds the process group) and no process group
        import gc

        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        alive = sum(isinstance(obj, DistributedDataParallel) for obj in gc.get_objects())
        with open(os.path.join(cli.output_dir, f"closed_rank{rank}.json"), "w") as f:
            json.dump({"ddp_wrappers_alive": alive, "process_group": dist.is_initialized()}, f)


if __name__ == "__main__":
    main()

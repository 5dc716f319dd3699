"""A tiny DistillationTrainer run on real image files with the full default recipe (tests/test_resume_images.py,
tests/test_epoch.py).

    python tests/scripts/train_images.py DATA OUT_DIR [--stream] [--workers N] [--kill-at-step N] [--resume]
        [--device-augment] [--train-files FILE_OR_URL ...]
    torchrun --nproc_per_node 2 --standalone tests/scripts/train_images.py DATA OUT_DIR --epochs 2 --record-keys

DATA is an image folder (map-style) or a folder of `hf-deit shard` parquet shards (streamed). The data pipeline is
`build_datasets` with DataArguments' defaults (RandomResizedCrop, flip, RandAugment, random erasing, Mixup/CutMix,
label smoothing, repeated augmentation x3) at 48 px; student: DeiT depth 1, width 32, drop path 0.1; teacher: the
small conv net of train_tiny.py. Writes OUT_DIR/weights.safetensors and, with --record-keys,
OUT_DIR/keys_rank{r}.json: the row keys (hf_deit.data.row_key) of the samples each training step saw, per epoch.
--device-augment: the same recipe decoded and augmented in the training step (DataArguments.device_augment).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("output_dir")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=None, help="train by epochs (no checkpoints) instead")
    parser.add_argument("--save-steps", type=int, default=3)
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--record-keys", action="store_true")
    parser.add_argument("--device-augment", action="store_true")
    parser.add_argument("--train-files", nargs="+", default=None, help="DataArguments.train_files (paths or URLs)")
    return parser.parse_args()


def callbacks(cli: argparse.Namespace, epochs: list[list[int]]) -> list:
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == cli.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, as a pre-empted job

    class EpochMark(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            epochs.append([])

    return [Kill(), EpochMark()]


def main() -> None:
    cli = parse_arguments()
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from train_tiny import NUM_LABELS, tiny_teacher
    from transformers import set_seed

    from hf_deit import DeiTTrainingArguments, DistillationTrainer
    from hf_deit.data import DataArguments, build_datasets
    from hf_deit.distillation.student import prepare_student

    data_args = DataArguments(dataset_name=cli.data, streaming=cli.stream, image_size=48, shuffle_buffer_size=16,
                              device_augment=cli.device_augment, train_files=cli.train_files)
    train_dataset, _, labels = build_datasets(data_args, seed=42, do_eval=False)
    assert len(labels) == NUM_LABELS, labels
    args = DeiTTrainingArguments(
        output_dir=cli.output_dir,
        per_device_train_batch_size=cli.batch_size,
        max_steps=-1 if cli.epochs else cli.max_steps,
        num_train_epochs=cli.epochs or 300,
        save_strategy="no" if cli.epochs else "steps",
        save_steps=cli.save_steps,
        save_total_limit=0,  # keep every checkpoint: the test lists them
        logging_steps=1,
        warmup_epochs=1,
        base_learning_rate=0.05,  # lr 3.9e-4 at batch 4: steps large enough that any difference shows
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        dataloader_num_workers=cli.workers,
        accelerator_config={"dispatch_batches": False},
    )
    set_seed(args.seed)
    model = prepare_student(
        "deit_tiny_distilled_patch16_224", num_labels=NUM_LABELS, image_size=48, patch_size=16, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, drop_path_rate=0.1,
    )
    epochs: list[list[int]] = []

    class KeyRecordingTrainer(DistillationTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            epochs[-1].extend(inputs["example_key"].tolist())
            return super().training_step(model, inputs, num_items_in_batch)

    trainer = KeyRecordingTrainer(model=model, args=args, teacher=tiny_teacher(), data_args=data_args,
                                  train_dataset=train_dataset, callbacks=callbacks(cli, epochs))
    trainer.train(resume_from_checkpoint=True if cli.resume else None)
    if trainer.is_world_process_zero():
        state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, os.path.join(cli.output_dir, "weights.safetensors"))
    if cli.record_keys:
        with open(os.path.join(cli.output_dir, f"keys_rank{args.process_index}.json"), "w") as f:
            json.dump({"epochs": epochs, "global_step": trainer.state.global_step}, f)
    trainer.close()  # as examples/distill.py ends: gloo and DDP torn down before interpreter exit


if __name__ == "__main__":
    main()

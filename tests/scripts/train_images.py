"""A tiny DistillationTrainer run on real image files with the full default recipe (tests/test_resume_images.py).

    python tests/scripts/train_images.py DATA OUT_DIR [--workers N] [--kill-at-step N] [--resume] [--device-augment]

DATA is an image folder (map-style) or a folder of `hf-deit shard` parquet shards (streamed). The data pipeline is
`build_datasets` with DataArguments' defaults (RandomResizedCrop, flip, RandAugment, random erasing, Mixup/CutMix,
label smoothing, repeated augmentation x3) at 48 px; student: DeiT depth 1, width 32, drop path 0.1; teacher: the
small conv net of train_tiny.py. Writes OUT_DIR/weights.safetensors. --device-augment: the same recipe decoded and
augmented in the training step (DataArguments.device_augment).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("output_dir")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--save-steps", type=int, default=3)
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--device-augment", action="store_true")
    cli = parser.parse_args()

    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from train_tiny import NUM_LABELS, tiny_teacher
    from transformers import TrainerCallback, set_seed

    from hf_deit import DeiTTrainingArguments, DistillationTrainer
    from hf_deit.data import DataArguments, build_datasets
    from hf_deit.distillation.trainer import prepare_student

    data_args = DataArguments(dataset_name=cli.data, streaming=cli.stream, image_size=48, shuffle_buffer_size=16,
                              device_augment=cli.device_augment)
    train_dataset, _, labels = build_datasets(data_args, seed=42, do_eval=False)
    assert len(labels) == NUM_LABELS, labels
    args = DeiTTrainingArguments(
        output_dir=cli.output_dir,
        per_device_train_batch_size=6,
        max_steps=cli.max_steps,
        save_steps=cli.save_steps,
        logging_steps=1,
        warmup_epochs=1,
        base_learning_rate=0.05,  # lr 6e-4 at batch 6: steps large enough that any difference shows
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
        dataloader_num_workers=cli.workers,
        accelerator_config={"dispatch_batches": False},
    )
    set_seed(args.seed)
    model = prepare_student(
        "deit_tiny_distilled_patch16_224", num_labels=NUM_LABELS, image_size=48, patch_size=16, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, drop_path_rate=0.1,
    )

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == cli.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, as a pre-empted job

    trainer = DistillationTrainer(
        model=model, args=args, teacher=tiny_teacher(), data_args=data_args, train_dataset=train_dataset,
        callbacks=[Kill()] if cli.kill_at_step is not None else [],
    )
    trainer.train(resume_from_checkpoint=True if cli.resume else None)
    state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, os.path.join(cli.output_dir, "weights.safetensors"))


if __name__ == "__main__":
    main()

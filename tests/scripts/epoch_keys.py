"""Which images each process trains on in each epoch, through DistillationTrainer (tests/test_epoch.py).

    python tests/scripts/epoch_keys.py DATA OUT_DIR [--stream] [--epochs 2] [--batch-size 3]
    torchrun --nproc_per_node 2 --standalone tests/scripts/epoch_keys.py DATA OUT_DIR [--stream]

DATA is an image folder (map-style) or a folder of `hf-deit shard` parquet shards (streamed), read by
`build_datasets` with repeated augmentation x3 (DataArguments' default). Student: DeiT depth 1, width 32, 32 px; no
teacher (distillation_type none). Writes OUT_DIR/keys_rank{r}.json: the row keys (hf_deit.data.row_key) of every
sample each training step saw, per epoch, and the optimizer steps taken.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("output_dir")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=3)
    cli = parser.parse_args()

    torch.set_num_threads(1)
    from transformers import TrainerCallback, set_seed

    from hf_deit import DeiTTrainingArguments, DistillationTrainer
    from hf_deit.data import DataArguments, build_datasets
    from hf_deit.distillation.trainer import prepare_student

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    data_args = DataArguments(dataset_name=cli.data, streaming=cli.stream, image_size=32, auto_augment=None,
                              reprob=0.0, shuffle_buffer_size=8)
    train_dataset, _, labels = build_datasets(data_args, seed=42, do_eval=False)
    args = DeiTTrainingArguments(
        output_dir=cli.output_dir, per_device_train_batch_size=cli.batch_size, num_train_epochs=cli.epochs,
        save_strategy="no", logging_steps=1, report_to="none", disable_tqdm=True, use_cpu=True, seed=42,
        distillation_type="none", mixup=0.0, cutmix=0.0, ddp_backend="gloo" if distributed else None,
        accelerator_config={"dispatch_batches": False},
    )
    set_seed(args.seed)
    model = prepare_student("deit_tiny_distilled_patch16_224", num_labels=len(labels), image_size=32, patch_size=16,
                            hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    epochs: list[list[int]] = []

    class KeyRecordingTrainer(DistillationTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            epochs[-1].extend(inputs["example_key"].tolist())
            return super().training_step(model, inputs, num_items_in_batch)

    class EpochMark(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            epochs.append([])

    trainer = KeyRecordingTrainer(model=model, args=args, data_args=data_args, train_dataset=train_dataset,
                                  callbacks=[EpochMark()])
    trainer.train()
    with open(os.path.join(cli.output_dir, f"keys_rank{args.process_index}.json"), "w") as f:
        json.dump({"epochs": epochs, "global_step": trainer.state.global_step}, f)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main()

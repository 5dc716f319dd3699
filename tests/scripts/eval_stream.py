"""Final evaluation of a streamed eval split whose shards split unevenly between the ranks (tests/test_scale_out.py).

    torchrun --nproc_per_node 2 tests/scripts/eval_stream.py OUT_DIR            # 2 training steps, then evaluate
    python tests/scripts/eval_stream.py OUT_DIR --weights OUT_DIR/final        # evaluate those weights, 1 process

The student and teacher of tests/scripts/train_tiny.py; training stream: its 16 examples in 4 shards; eval stream: 13
examples in 3 shards of 5/4/4, so that split by whole shards rank 0 would read 9 and rank 1 4. Writes
OUT_DIR/metrics_{world size}.json (rank 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_tiny import NUM_LABELS, tiny_dataset, tiny_teacher  # noqa: E402

EVAL_EXAMPLES, EVAL_SHARDS = 13, 3


def eval_stream():
    from datasets import Dataset

    g = torch.Generator().manual_seed(1)
    data = {"pixel_values": torch.randn(EVAL_EXAMPLES, 3, 32, 32, generator=g).numpy(),
            "labels": torch.randint(0, NUM_LABELS, (EVAL_EXAMPLES,), generator=g).tolist()}
    return Dataset.from_dict(data).with_format("torch").to_iterable_dataset(num_shards=EVAL_SHARDS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--weights", default=None, help="a saved model folder: evaluate it without training")
    parser.add_argument("--eval-batch-size", type=int, default=1)
    cli = parser.parse_args()

    torch.set_num_threads(1)
    from transformers import set_seed

    from hf_deit import DeiTTrainingArguments, DistillationTrainer
    from hf_deit.data import DataArguments
    from hf_deit.distillation.student import prepare_student

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    args = DeiTTrainingArguments(
        output_dir=cli.output_dir, per_device_train_batch_size=2, per_device_eval_batch_size=cli.eval_batch_size,
        max_steps=2, save_strategy="no", logging_steps=1, warmup_epochs=0, report_to="none", disable_tqdm=True,
        use_cpu=True, seed=42, ddp_backend="gloo" if distributed else None, mixup=0.0, cutmix=0.0,
        model_ema_decay=0.0,  # no EMA: the 1-process evaluation loads the weights only, it has no EMA to compare
    )
    set_seed(args.seed)
    model = prepare_student(
        "deit_tiny_distilled_patch16_224", num_labels=NUM_LABELS, image_size=32, patch_size=8, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, drop_path_rate=0.0,
    )
    if cli.weights is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(os.path.join(cli.weights, "model.safetensors")))
    trainer = DistillationTrainer(
        model=model, args=args, teacher=tiny_teacher(), data_args=DataArguments(image_size=32, repeated_aug=1),
        train_dataset=tiny_dataset("stream"), eval_dataset=eval_stream(),
    )
    if cli.weights is None:
        trainer.train()
        trainer.save_model(os.path.join(cli.output_dir, "final"))
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        with open(os.path.join(cli.output_dir, f"metrics_{args.world_size}.json"), "w") as f:
            json.dump(metrics, f)
    trainer.close()  # as examples/distill.py ends: gloo and DDP torn down before interpreter exit


if __name__ == "__main__":
    main()

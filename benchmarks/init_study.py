"""Why hf_deit's student trailed timm's TokenDistillationTask in the CIFAR-10 table: initialisation or loop?

    .venv/bin/python -m benchmarks.init_study ours:0 ours:1 ours:2 conv_default:0 conv_default:1 conv_default:2 \
        timm_init:0 timm_init:1 timm_init:2 peer:0 peer:1 peer:2

Each `variant:seed` trains the table's "hard + distillation token" student (experiments/reproduce_table.py defaults:
CIFAR-10 subset 500/200 per class, 32 px, width 96, depth 4, 6 epochs, its CNN teacher, which must exist under
runs/reproduce_table, e.g. from running the table first) and prints the final top-1 per head:
  ours          hf_deit's initialisation at the time (trunc-normal 0.02 for the patch-embedding conv too)
  conv_default  the same, with the patch-embedding conv re-initialised by nn.Conv2d.reset_parameters()
  timm_init     timm's VisionTransformerDistilled initialisation (same seed), converted into hf_deit, our trainer
  peer          timm's model + TokenDistillationTask in the table's plain loop (experiments/timm_peer.py)
Since the change this study motivated, hf_deit's own init *is* conv_default, so `ours` now equals it.
Results go to runs/init_study/<variant>_s<seed>/result.json (finished ones are skipped).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import timm
import torch

from experiments import runner
from experiments.configurations import CONFIGURATIONS, TableArguments
from experiments.timm_peer import train_timm_peer
from hf_deit.hub.convert import from_timm

REPO_ROOT = Path(__file__).resolve().parents[1]

VARIANTS = ("ours", "conv_default", "timm_init", "peer")


def student_factory(variant: str, seed: int, args: TableArguments, model_class):
    """Replaces the table runner's model class: builds the student, then re-initialises it as `variant` says."""

    def build(config):
        model = model_class(config)
        if variant == "conv_default":
            model.deit.embeddings.patch_embeddings.projection.reset_parameters()
        elif variant == "timm_init":
            torch.manual_seed(seed)
            reference = timm.create_model(
                "deit_tiny_distilled_patch16_224", pretrained=False, img_size=args.image_size,
                patch_size=args.patch_size, embed_dim=args.hidden_size, depth=args.num_hidden_layers,
                num_heads=args.num_attention_heads, num_classes=config.num_labels,
            )
            model.load_state_dict(from_timm(reference).state_dict())
        return model

    return build


def main() -> None:
    specs = [spec.split(":") for spec in sys.argv[1:]]
    if not specs or any(len(s) != 2 or s[0] not in VARIANTS or not s[1].isdigit() for s in specs):
        raise SystemExit(f"usage: python -m benchmarks.init_study VARIANT:SEED ... with VARIANT in {VARIANTS}")
    args = TableArguments(output_dir=str(REPO_ROOT / "runs" / "reproduce_table"), configurations=["hard_token"])
    data_args = runner.data_arguments(args, runner.balanced_subset(args))
    data = tuple(runner.build_datasets(data_args, seed=0))
    model_class = runner.DeiTForImageClassification
    for variant, seed in ((v, int(s)) for v, s in specs):
        run_dir = REPO_ROOT / "runs" / "init_study" / f"{variant}_s{seed}"
        if (run_dir / "result.json").is_file():
            result = json.loads((run_dir / "result.json").read_text())
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            if variant == "peer":
                result = train_timm_peer(args, CONFIGURATIONS["timm_hard_token"], data, data_args, run_dir, seed)
            else:
                runner.DeiTForImageClassification = student_factory(variant, seed, args, model_class)
                try:
                    result = runner.train_hf_deit(args, "hard_token", data, data_args, run_dir, seed)
                finally:
                    runner.DeiTForImageClassification = model_class
            result["wall_s"] = round(time.perf_counter() - start, 1)
            (run_dir / "result.json").write_text(json.dumps(result, indent=1))
        print(f"{variant:13s} seed {seed}: " + ", ".join(f"{h} {v:.2f}" for h, v in result["top1"].items()), flush=True)


if __name__ == "__main__":
    main()

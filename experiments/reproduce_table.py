"""The DeiT paper's Tables 3 and 5 in miniature: teachers, distillation variants and timm's task as a peer.

Run from the repository root (hf_deit installed, e.g. `pip install -e .`):

    # the budget committed in docs/results.md (CIFAR-10 at 32 px, 3 seeds per student; ~25 min on an idle 2-core CPU)
    python -m experiments.reproduce_table --dataset_name ../shared/data/cifar10 --output_dir runs/reproduce_table
    # a tiny smoke run of every configuration (about a minute; what tests/test_reproduce_table.py runs)
    python -m experiments.reproduce_table --smoke --output_dir /tmp/table_smoke --docs_dir /tmp/table_smoke/docs
    # all 50,000 CIFAR-10 training images, sized for about 8 minutes on one H200 (gpu_check.sh's table stage)
    python -m experiments.reproduce_table --gpu_h200 --dataset_name ../shared/data/cifar10 --output_dir runs/gpu_table
    # a full CIFAR-10 run on a GPU (all 5,000 train / 1,000 test images per class)
    python -m experiments.reproduce_table --train_per_class 5000 --eval_per_class 1000 --epochs 100 \
        --teacher_epochs 60 --hidden_size 192 --num_hidden_layers 12 --output_dir runs/reproduce_table_full

On any ImageNet-layout folder (`train/<class>/*`, `<eval_split>/<class>/*`) it trains, with the same data,
augmentation, optimizer, schedule and epochs, the teachers once (the first seed) and every student once per seed
(`--seeds`, default 0 1 2; the page reports the mean, and the seed-to-seed spread is the noise its verdicts use):
  teacher_cnn           a timm CNN (examples/train_teacher.py, as a subprocess; figures read from its json)
  teacher_vit           a larger plain DeiT, no distillation (hf_deit's DistillationTrainer)
  no_distillation       plain DeiT student, labels only            (paper Table 3, "no distillation")
  soft                  plain DeiT, soft distillation, CNN teacher  (Table 3, "usual distillation")
  hard                  plain DeiT, hard distillation, CNN teacher  (Table 3, "hard distillation")
  hard_token            DeiT with distillation token, hard, CNN teacher: cls / distillation / fused heads
  hard_token_vit        the same with the transformer teacher       (Table 5: CNN vs transformer teacher)
  timm_hard_token       timm's VisionTransformerDistilled of the same size trained with timm's
                        TokenDistillationTask (hard, same CNN teacher): the peer implementation (timm_peer.py)
  soft_token            (optional) DeiT with distillation token, soft distillation, CNN teacher
  hard_token_cached     (optional) hard_token with the CNN teacher read from a cache made by `hf-deit cache-teacher`
                        (hf_deit.distillation.teacher_cache: one teacher pass, dense label maps pooled over each crop)
Finished runs are reused (their result.json) unless --overwrite or a setting they read changed: a sweep such as
`--soft_alpha 0.5 --configurations teacher_cnn soft_token --output_dir runs/sweep` retrains the students and reuses
the teachers already in that folder. At the end it writes <docs_dir>/results.md
(from templates/results.md.jinja), results_cifar10.png (accuracy per configuration + learning curves) and
results_cifar10.json (the raw figures the page is generated from).
"""

from __future__ import annotations

import shlex
import sys

if not __package__:  # `python experiments/reproduce_table.py`: the relative imports below need the package
    raise SystemExit("run it from the repository root as a module: python -m experiments.reproduce_table ...")

from transformers import HfArgumentParser  # noqa: E402

from .configurations import TableArguments  # noqa: E402
from .report import write_report  # noqa: E402
from .runner import run_all  # noqa: E402

COMMAND = ["python", "-m", "experiments.reproduce_table"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    (args,) = HfArgumentParser(TableArguments).parse_args_into_dataclasses(args=argv)
    command = " ".join(shlex.quote(part) for part in [*COMMAND, *argv])
    results = run_all(args, on_result=lambda done: write_report(done, args, command))
    for path in write_report(results, args, command):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

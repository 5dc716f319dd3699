"""`hf-deit recipe`: what a run would be, before anyone pays for it.

    hf-deit recipe --dataset_size 1281167 --world_size 8 --per_device_train_batch_size 128
    hf-deit recipe --dataset_name ./imagenet --world_size 4 --recipe finetune --image_size 384
    hf-deit recipe --markdown            # docs/recipe.md's table

Takes every flag of examples/distill.py (they are parsed the same way) plus the machine the run will have
(`RecipeQuery`), resolves the recipe for that machine and prints the run's size (hf_deit.distillation.run_plan)
and every recipe element beside the official one (hf_deit.distillation.recipe_table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..data.arguments import DataArguments
from .arguments import DeiTTrainingArguments, StudentArguments
from .recipe import OFFICIAL_NUM_WORKERS, Environment
from .recipe_table import IMAGENET_TRAIN_SIZE, format_comparison, markdown_table, run_values
from .run_plan import format_plan


@dataclass
class RecipeQuery:
    """The machine a run will have, and what to print."""

    dataset_size: int | None = field(
        default=None,
        metadata={"help": "Training images (default: as the run counts them: --train_dataset_size, the rows in "
                          "--train_files' parquet footers, --dataset_name's train split when it is a local folder or "
                          f"shards, else ImageNet-1k's {IMAGENET_TRAIN_SIZE:,}; capped by --max_train_samples)."},
    )
    world_size: int = field(default=1, metadata={"help": "Training processes (one per GPU), over all nodes."})
    processes_per_node: int | None = field(default=None, metadata={"help": "Default: world_size, at most 8."})
    device: str = field(default="gpu", metadata={"help": "What each process trains on.", "choices": ["gpu", "cpu"]})
    bf16_supported: bool = field(default=True, metadata={"help": "Whether the GPUs support bf16 (A100, H100: yes)."})
    markdown: bool = field(default=False, metadata={"help": "Print docs/recipe.md's tables instead."})


def _environment(query: RecipeQuery) -> Environment:
    local = query.processes_per_node or min(query.world_size, 8)
    return Environment(
        world_size=query.world_size, local_world_size=local, gpu=query.device == "gpu",
        bf16_supported=query.device == "gpu" and query.bf16_supported, cpu_count=OFFICIAL_NUM_WORKERS * local,
    )


def _dataset_size(query: RecipeQuery, data: DataArguments) -> tuple[int, str]:
    """The training set's size as the run would count it (hf_deit.data.pipeline.train_stream_size), capped by
    --max_train_samples: given, --train_dataset_size, --train_files' parquet footers, a local folder, else ImageNet."""
    size, where = _uncapped_dataset_size(query, data)
    if data.max_train_samples is not None and data.max_train_samples < size:
        return data.max_train_samples, f"{where}, capped by --max_train_samples"
    return size, where


def _uncapped_dataset_size(query: RecipeQuery, data: DataArguments) -> tuple[int, str]:
    if query.dataset_size is not None:
        return query.dataset_size, "given"
    if data.train_dataset_size:
        return data.train_dataset_size, "--train_dataset_size"
    if data.train_files:
        from ..data.pipeline import count_train_files

        size = count_train_files(data)  # parquet footers, local files or URLs; None for other formats
        if size is None:
            raise ValueError(
                f"Cannot count the examples of --train_files {data.source} without reading them (only parquet "
                "footers are counted): give --dataset_size N (or --train_dataset_size N, as the run would need)."
            )
        return size, f"{data.source} (parquet footers)"
    from pathlib import Path

    if Path(data.dataset_name).exists():
        from ..data.loading import load_image_dataset

        size = len(load_image_dataset(data.dataset_name, data.train_split, class_index_file=data.class_index_file))
        return size, f"{data.dataset_name} [{data.train_split}]"
    return IMAGENET_TRAIN_SIZE, "ImageNet-1k's train split (give --dataset_size for another dataset)"


def describe_run(
    training: DeiTTrainingArguments, data: DataArguments, student: StudentArguments, dataset_size: int,
    env: Environment | None = None,
) -> str:
    """A run's size and its recipe beside the official one (`hf-deit recipe` and examples/distill.py print it)."""
    env = env or training.recipe_environment
    values = run_values(training, data, student, env=env, dataset_size=dataset_size)
    header = (
        f"hf_deit recipe '{training.recipe}' for {dataset_size:,} training images on {env.world_size} "
        f"{'GPU' if env.gpu else 'CPU'} process{'es' if env.world_size > 1 else ''}:"
    )
    return "\n".join([header, format_plan(values, env, dataset_size), "", format_comparison(values, training.recipe)])


def recipe_report(argv: list[str]) -> str:
    """The text `hf-deit recipe ARGS` prints."""
    parser = HfArgumentParser((StudentArguments, DataArguments, DeiTTrainingArguments, RecipeQuery))
    student, data, training, query = parser.parse_args_into_dataclasses(args=argv)
    if query.markdown:
        return "\n\n".join(markdown_table(recipe) for recipe in ("pretrain", "finetune"))
    size, where = _dataset_size(query, data)
    return f"Training images: {where}.\n" + describe_run(training, data, student, size, _environment(query))


__all__ = ["RecipeQuery", "describe_run", "recipe_report"]

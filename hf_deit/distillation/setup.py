"""What DistillationTrainer settles once, at its start, from the arguments, the model and the data: every setting
that depends on another one is derived here (and logged), so that nothing else in the trainer second-guesses them.

    args, data_args = resolve_setup(model, args, data_args, train_dataset, eval_dataset)

The recipe's own dependencies (batch, learning rate, precision, workers) were resolved when the arguments were made
(hf_deit.distillation.recipe); what needs the model or the data is resolved here:
  * refused: arguments that are not DeiTTrainingArguments, no model, a regression / multi-label model, a multi-process
    launch in which the Trainer is not in distributed mode (`check_launch`), a training stream whose shards the
    ranks x DataLoader workers cannot share evenly (`check_stream_shards_for`; evaluation streams are not checked);
  * `ddp_find_unused_parameters` off for a DeiT student (every parameter takes part in every loss);
  * evaluation after every epoch (the recipe) turned off when there is no evaluation data;
  * data arguments when none are given: DataArguments' defaults at the student's resolution (repeated augmentation
    x3 for map-style data, as the recipe); a warning says so, since the datasets may have been built otherwise;
  * for a training stream: `dispatch_batches` off (each process reads its own shards), and `--num_train_epochs` on a
    stream of known size turned into `--max_steps` (transformers refuses a dataset without a length and no max_steps);
    an evaluation stream's loader is prepared with it on (`dispatched_evaluation`);
  * the data seed, one rule for map-style data and streams: `data_seed(args)`.
And at the end of a run, `close_processes` (DistillationTrainer.close) tears the process group and DDP down.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Any, Iterator

import torch
from torch import nn
from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy
from transformers.training_args import ParallelMode

from ..data.arguments import DataArguments
from ..data.epoch import batches_per_epoch, stream_size
from ..data.shards import check_stream_shards
from ..models.configuration_deit import DeiTConfig
from ..models.modeling_deit import DeiTForImageClassification
from .arguments import DeiTTrainingArguments

logger = logging.getLogger(__name__)


def data_seed(args: TrainingArguments) -> int:
    """The seed of the data order and of every image's augmentation: --data_seed, else --seed (as transformers)."""
    return args.data_seed if args.data_seed is not None else args.seed


def _launched_processes() -> int:
    """How many processes the launcher started (torchrun / accelerate launch set WORLD_SIZE; LOCAL_WORLD_SIZE as a
    fallback for launchers that set only that)."""
    return max(int(os.environ.get(name, "1")) for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"))


def check_launch(args: TrainingArguments) -> None:
    """A multi-process launch in which the Trainer is not in distributed mode trains N independent copies into one
    output_dir: refused, on every process, before any data is read. Two ways it happens on a machine without GPU:
    the Trainer sees one process (no --ddp_backend), or it sees them all but with parallel_mode NOT_PARALLEL
    (--ddp_backend gloo without --use_cpu): the model is then never wrapped in DDP, so no gradient is synced, the
    ranks' weights drift apart and every process exits 0 (issue 25: 2 ranks, weights 2.1e-4 apart)."""
    launched = _launched_processes()
    apart = args.world_size == 1 or args.parallel_mode in (ParallelMode.NOT_PARALLEL, ParallelMode.NOT_DISTRIBUTED)
    if launched > 1 and apart:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # so that every process exits with the error instead of waiting
        seen = "one" if args.world_size == 1 else f"{args.world_size} with parallel_mode={args.parallel_mode.value}"
        raise ValueError(
            f"Launched as {launched} processes (WORLD_SIZE={os.environ.get('WORLD_SIZE', 'unset')}) but the Trainer "
            f"sees {seen}, not a distributed run: each process would train its own copy without DDP (no gradient "
            "sync) and all would write to the same output_dir. On a machine without GPU add --use_cpu --ddp_backend "
            "gloo; with GPUs, check that accelerate/torchrun sees them."
        )


def close_processes(trainer: Any) -> None:
    """End of a run (DistillationTrainer.close): every rank waits for the others, the process group is destroyed,
    then the DDP wrapper and accelerate's references are dropped and collected, so that the group's backend (DDP's
    reducer holds it; gloo's worker threads) is torn down now, while the interpreter is whole. Left to interpreter
    exit, a 2-process gloo rank now and then aborted with "terminate called without an active exception" after all
    its work was done, even with the group destroyed. The trainer cannot train after it; its model stays usable."""
    import gc

    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # trackers finished, process group destroyed
    trainer.accelerator.free_memory()  # accelerate's own references: prepared models (DDP), optimizers, loaders
    trainer.model_wrapped = trainer.model
    trainer.optimizer = trainer.lr_scheduler = None
    gc.collect()


def check_stream_shards_for(train_dataset: Any, args: TrainingArguments) -> None:
    """A training stream (a datasets IterableDataset) whose shards the ranks x DataLoader workers cannot share evenly
    is refused before any step (hf_deit.data.shards.check_stream_shards says why and what to do); DataLoader workers
    that cannot share a rank's shards evenly are lowered to a count that can, with a warning. Evaluation
    streams are not checked: evaluation dispatches its batches from rank 0 (accelerate's dispatch_batches), which
    reads every shard itself, so any shard count evaluates the same."""
    num_shards = getattr(train_dataset, "num_shards", None)
    if not isinstance(num_shards, int):
        return
    requested = args.dataloader_num_workers or 0
    workers = check_stream_shards(num_shards, args.world_size, requested)
    if workers != requested:
        logger.warning(
            "The training stream's %d shards give each of the %d process(es) %d, which %d DataLoader workers cannot "
            "share evenly: --dataloader_num_workers %d -> %d. Re-shard with `hf-deit shard SOURCE OUT --num-shards "
            "N`, N a multiple of %d, to use all %d.", num_shards, args.world_size, num_shards // args.world_size,
            requested, requested, workers, args.world_size * requested, requested,
        )
        args.dataloader_num_workers = workers


def resolve_setup(
    model: nn.Module | None, args: TrainingArguments | None, data_args: DataArguments | None, train_dataset: Any,
    eval_dataset: Any,
) -> tuple[DeiTTrainingArguments, DataArguments]:
    """The arguments and data arguments the trainer runs with (see the module docstring); logs what it derives."""
    args = _checked_arguments(model, args)
    check_launch(args)
    if args.ddp_find_unused_parameters is None and isinstance(model, DeiTForImageClassification):
        # Every parameter of a DeiT student takes part in every loss (both heads; drop path scales branches
        # instead of skipping them), so DDP need not search for unused ones: with the Trainer's default (search)
        # every rank warns that it found none, and pays a graph traversal each step.
        args.ddp_find_unused_parameters = False
    if eval_dataset is None and args.eval_strategy != IntervalStrategy.NO:
        logger.info("No eval_dataset: eval_strategy %s -> no (nothing to evaluate after each epoch).", args.eval_strategy)
        args.eval_strategy, args.do_eval = IntervalStrategy.NO, False
    data_args = _data_arguments(model, data_args)
    if isinstance(train_dataset, torch.utils.data.IterableDataset):
        if args.accelerator_config.dispatch_batches is not False:
            logger.info("A training stream: dispatch_batches -> False (each process reads its own shards; evaluation "
                        "streams are dispatched, dispatched_evaluation).")
            args.accelerator_config.dispatch_batches = False
        check_stream_shards_for(train_dataset, args)
        _stream_max_steps(train_dataset, args, data_args)
    logger.info("Data seed (order and per-image augmentation): %d.", data_seed(args))
    return args, data_args


@contextlib.contextmanager
def dispatched_evaluation(accelerator: Any, dataset: Any, is_training: bool) -> Iterator[None]:
    """Inside the block, accelerate prepares an evaluation stream's loader with `dispatch_batches` on (rank 0 reads
    the stream and hands each rank its slice of every batch; the last one is padded, and gather_for_metrics drops the
    padding): every rank runs the same number of evaluation batches, and the accuracies are one process' (eval_loss
    too, but for transformers' weighting of a partial last batch: docs/data.md).

    Training streams keep it off (each rank reads its own shards: `resolve_setup`). Split by whole shards, an
    evaluation stream gives the ranks as many examples as their shards hold: with unequal shards (13/13/12/12;
    ImageNet's val split 782/781) or a shard count not divisible by the ranks, one rank runs more batches than
    another, which waits in the metrics' all_gather for ever, or gloo fails on the mismatched sizes (issue 25)."""
    config = accelerator.dataloader_config
    dispatch = config.dispatch_batches
    if not is_training and isinstance(dataset, torch.utils.data.IterableDataset) and accelerator.num_processes > 1:
        config.dispatch_batches = True
    try:
        yield
    finally:
        config.dispatch_batches = dispatch


def _checked_arguments(model: nn.Module | None, args: TrainingArguments | None) -> DeiTTrainingArguments:
    if args is None:
        args = DeiTTrainingArguments(output_dir="tmp_trainer")
    if not isinstance(args, DeiTTrainingArguments):
        raise TypeError(
            f"DistillationTrainer needs DeiTTrainingArguments, got {type(args).__name__}: build the arguments with "
            "hf_deit.DeiTTrainingArguments (it adds the distillation fields and DeiT's defaults)."
        )
    if model is None:
        raise ValueError("DistillationTrainer needs a model: e.g. build_student(student_args, data_args, labels).")
    if getattr(model.config, "problem_type", None) in ("regression", "multi_label_classification"):
        raise ValueError(
            f"DistillationTrainer trains single-label classifiers; this model has problem_type="
            f"{model.config.problem_type!r}. Train it with transformers.Trainer: the model's own loss follows "
            "problem_type (docs/method.md)."
        )
    return args


def _data_arguments(model: nn.Module, data_args: DataArguments | None) -> DataArguments:
    """The data arguments given (checked against the student's preprocessing), else the defaults at its size."""
    config = model.config
    if data_args is None:
        size, crop = getattr(config, "image_size", 224), getattr(config, "crop_pct", None)
        data_args = DataArguments(dataset_name="<given datasets>", image_size=size, eval_crop_pct=crop)
        data_args.assumed = True  # not given: the model card reports no dataset or augmentation from it
        logger.warning(
            "No data_args: the trainer assumes DataArguments' defaults (repeated augmentation x%d for map-style "
            "data, no uint8 or device batches); pass the DataArguments the datasets were built with.",
            data_args.repeated_aug,
        )
        return data_args
    ours = (getattr(config, "image_size", None), getattr(config, "crop_pct", None))
    theirs = (data_args.image_size, data_args.eval_crop_pct)
    if isinstance(config, DeiTConfig) and ours != theirs:
        # The image processor saved with the model is built from its config.
        logger.warning(
            "The student's config has image_size, crop_pct = %s but the data arguments evaluate at %s: the saved "
            "image processor will preprocess otherwise than evaluation did. Build the student with "
            "hf_deit.build_student(student_args, data_args, labels).", ours, theirs,
        )
    return data_args


def stream_epoch_batches(dataset: Any, args: TrainingArguments, data_args: DataArguments) -> int | None:
    """Batches per process in an epoch of a training stream of known size (hf_deit.data.stream_size): the paper's
    epoch (hf_deit.data.batches_per_epoch). None for map-style data and for streams of unknown size."""
    if not isinstance(dataset, torch.utils.data.IterableDataset) or stream_size(dataset) is None:
        return None
    size = stream_size(dataset)
    batches = batches_per_epoch(size, args.world_size, args.train_batch_size, data_args.repeated_aug)
    if batches < 1:
        raise ValueError(
            f"An epoch of the {size}-example training stream gives each of the {args.world_size} process(es) fewer "
            f"samples than one batch of {args.train_batch_size}: lower the per-device batch size."
        )
    return batches


def _stream_max_steps(dataset: Any, args: TrainingArguments, data_args: DataArguments) -> None:
    """--num_train_epochs on a stream of known size: resolved into --max_steps, with the Trainer's own formula."""
    if args.max_steps > 0:
        return
    batches = stream_epoch_batches(dataset, args, data_args)
    if batches is None:
        raise ValueError(
            "The training stream's size is unknown, so it has no epoch to count --num_train_epochs in: pass "
            "--train_dataset_size N (its number of examples; an epoch is then the paper's, docs/data.md) or --max_steps."
        )
    accumulation = args.gradient_accumulation_steps
    steps_per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    args.max_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
    logger.info(
        "Training stream of %d examples: %d steps per epoch on each of %d process(es); --num_train_epochs %s is "
        "--max_steps %d.", stream_size(dataset), steps_per_epoch, args.world_size, args.num_train_epochs, args.max_steps,
    )


__all__ = ["check_launch", "check_stream_shards_for", "data_seed", "dispatched_evaluation", "resolve_setup",
           "stream_epoch_batches"]

"""The student: `prepare_student` (a preset or a checkpoint, at a resolution) and `build_student` (from the parsed
`StudentArguments` and `DataArguments`, as examples/distill.py builds it).

    model = build_student(student_args, data_args, labels=["cat", "dog"])
"""

from __future__ import annotations

from typing import Any

from ..data.arguments import DataArguments
from ..models.configuration_deit import PRESETS, DeiTConfig
from ..models.modeling_deit import DeiTForImageClassification
from .arguments import StudentArguments


def prepare_student(
    name_or_path: str = "deit_tiny_distilled_patch16_224",
    *,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    image_size: int | None = None,
    drop_path_rate: float | None = None,
    **config_overrides: Any,
) -> DeiTForImageClassification:
    """The student: a fresh model from a DeiT preset, or a checkpoint (hf_deit directory or Hub id) to fine-tune.

    `num_labels`/`id2label`: the label set; a checkpoint trained on another one gets freshly initialised heads.
    `image_size`: fine-tune at a new resolution (e.g. 224 -> 384 as the paper); the position embeddings are
        resized bicubically once here, like timm's `resample_abs_pos_embed`.
    `drop_path_rate`: stochastic depth of the student; None keeps the checkpoint's or the config's default (0.0).
        The paper's 0.1 is `StudentArguments.drop_path_rate`'s default.
    """
    labels = {"id2label": id2label} if id2label is not None else {}
    if num_labels is not None and not labels:
        labels = {"num_labels": num_labels}
    if drop_path_rate is not None:
        config_overrides["drop_path_rate"] = drop_path_rate
    if name_or_path in PRESETS:
        config = DeiTConfig.from_preset(name_or_path, **labels, **config_overrides)
        model = DeiTForImageClassification(config)
    else:
        model = DeiTForImageClassification.from_pretrained(
            name_or_path, ignore_mismatched_sizes=bool(labels), **labels, **config_overrides
        )
    if image_size is not None and image_size != model.config.image_size:
        model.resize_position_embeddings(image_size)
    return model


def student_config(student_args: StudentArguments, data_args: DataArguments, **labels: Any) -> DeiTConfig:
    """The configuration of a student built from `student_args.student_preset` (checks it without building it)."""
    return DeiTConfig.from_preset(
        student_args.student_preset, **_from_data(student_args, data_args), **student_args.overrides(), **labels
    )


def _from_data(student_args: StudentArguments, data_args: DataArguments) -> dict[str, Any]:
    # The data arguments own the evaluation preprocessing (resolution, crop_pct); the config records them so that
    # the image processor saved with the model preprocesses like the evaluation transform.
    return dict(
        image_size=data_args.image_size, crop_pct=data_args.eval_crop_pct, drop_path_rate=student_args.drop_path_rate
    )


def build_student(
    student_args: StudentArguments, data_args: DataArguments, labels: list[str]
) -> DeiTForImageClassification:
    """The student for `labels`: `student_args.model_name_or_path` fine-tuned, or `student_args.student_preset` from
    scratch, at `data_args.image_size` with `data_args.eval_crop_pct` as its image processor's crop."""
    # transformers v5 does not derive label2id from id2label: give both, so config.label2id["cat"] works.
    label_maps = dict(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    if student_args.model_name_or_path is not None:
        return prepare_student(
            student_args.model_name_or_path, **label_maps, **_from_data(student_args, data_args), **student_args.overrides()
        )
    # From scratch: built directly at the training resolution (no resize of freshly initialised embeddings).
    return DeiTForImageClassification(student_config(student_args, data_args, **label_maps))


__all__ = ["build_student", "prepare_student", "student_config"]

"""Optional speed paths of the distillation step, each behind a flag of `DeiTTrainingArguments`.

Where a flag changes numerics it is off by default, so the default run is the paper's fp32 recipe (fused AdamW,
transformers' own default, changes only the rounding order of the update):

  --bf16 (transformers)       autocast to bf16 for the student *and* the teacher, fp32 weights    bf16 rounding
  --torch_compile (transf.)   torch.compile the student                                          fp32 rounding order
  --teacher_torch_compile     torch.compile the teacher (the student's backend/mode)             fp32 rounding order
  --teacher_channels_last     CNN teacher weights and inputs channels_last (NHWC kernels)        fp32 rounding order
  --optim adamw_torch_fused   one fused AdamW kernel (transformers' default on torch >= 2.8)     fp32 rounding order
  --sdpa_backend flash        pin the student's attention kernel (flash/efficient/cudnn/math)    rounding
  --teacher_inference_mode    teacher under torch.inference_mode (default on)                    identical

tests/test_fast_paths.py checks each against the default path within its dtype's tolerance; docs/benchmarks.md
gives their measured effect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .teacher import FrozenTeacher

SDPA_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


@contextlib.contextmanager
def sdpa_context(backend: str | None) -> Iterator[None]:
    """Restrict `F.scaled_dot_product_attention` to one kernel (None: torch chooses, the default).

    The backward pass runs the kernel the forward chose, so wrapping the forward is enough. torch raises at the
    first attention call when the pinned kernel cannot run these inputs (e.g. flash on fp32 CUDA tensors)."""
    if backend is None:
        yield
        return
    if backend not in SDPA_BACKENDS:
        raise ValueError(f"sdpa_backend={backend!r}: use one of {sorted(SDPA_BACKENDS)} or leave it unset.")
    with sdpa_kernel(SDPA_BACKENDS[backend]):
        yield


def prepare_teacher(
    teacher: FrozenTeacher,
    *,
    channels_last: bool = False,
    compile: bool = False,
    compile_backend: str | None = None,
    compile_mode: str | None = None,
) -> FrozenTeacher:
    """Apply the teacher's fast paths in place (and return it).

    channels_last: the weights of 4-D convolutions and the teacher's inputs go NHWC, the layout cuDNN's bf16
        convolution kernels run fastest in. A no-op for transformer teachers.
    compile: torch.compile the teacher's network (not the renormalise/resize in front of it), as timm's
        `DistillationTeacher.compile` does. It compiles at the first step.
    """
    if channels_last:
        teacher.model.to(memory_format=torch.channels_last)
        teacher.memory_format = torch.channels_last
    if compile:
        teacher.model = torch.compile(teacher.model, backend=compile_backend or "inductor", mode=compile_mode)
    return teacher


def run_teacher(teacher: FrozenTeacher, pixel_values: torch.Tensor, inference_mode: bool = True) -> torch.Tensor:
    """The teacher's logits for the student's batch, outside autograd.

    inference_mode skips autograd's bookkeeping that no_grad still does (version counters, view tracking). Its
    outputs may not be saved for backward, and the loss's backward saves the teacher's soft targets: the logits
    (batch x classes, a few kB) are cloned into a normal tensor on the way out.

    Inside torch.compile (a step compiled whole, teacher included) the teacher runs under no_grad instead:
    compiling an inference_mode region that expands a parameter (a ViT teacher's cls token) fails in torch 2.14
    with "Cannot set version_counter for inference tensor" (pytorch/pytorch#180823), and a compiled graph keeps no
    autograd bookkeeping for inference_mode to skip. The logits are the same (tests/test_compile.py).
    """
    if not inference_mode or torch.compiler.is_compiling():
        return teacher(pixel_values)
    with torch.inference_mode():
        logits = teacher(pixel_values)
    return logits.clone()


__all__ = ["SDPA_BACKENDS", "prepare_teacher", "run_teacher", "sdpa_context"]

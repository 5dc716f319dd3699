"""timm's RandAugment (`rand-m9-mstd0.5-inc1` and the other `rand-*` strings) on batches of uint8 image tensors, for
`--device_augment` (hf_deit.data.device_augment).

The policy is timm's own object: `rand_augment_transform(config, hparams)` parses the string, and its ops give the op
set, the number of layers, the per-op probability and the magnitude rule. What is re-done here is where each image's
random numbers come from (its own `random.Random`, not the global RNGs) and the ops themselves (tensor ops, on the
training device). The draws follow timm's code in its order (tests/test_device_augment.py compares the distributions
with timm's and the arguments with timm's `LEVEL_TO_ARG`):

    num_layers ops, each uniformly from the op set (timm: numpy's choice, with replacement)
    then for each chosen op in turn: applied when random() <= prob; if applied, a magnitude ~ N(m, mstd) (uniform in
    [0, m] when mstd is inf), clipped to [0, mmax or 10], and the op's argument from it (a random sign for rotate,
    shear, translate and the *Increasing enhancements)

The ops run on a whole batch at a time, one call per (layer, op): per-image arguments are tensors, so a batch of 256
costs at most num_layers x 15 op calls, not 256 x num_layers. Colour ops are torchvision's (`transforms.v2.functional`)
or the same blend arithmetic with per-image factors; geometric ops use PIL's own inverse affine matrices (the ones
timm's ops pass to `Image.transform` / `Image.rotate`) with `torch.nn.functional.grid_sample`, so the geometry is PIL's;
torchvision's tensor `affine`/`rotate` take one matrix per call and offer no bicubic.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from timm.data.auto_augment import rand_augment_transform

LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: magnitude 10 is an op's strongest setting
SIGNED_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel")
ENHANCE_OPS = ("Color", "Contrast", "Brightness", "Sharpness")
GEOMETRIC_OPS = SIGNED_OPS  # every signed op moves pixels: rotate, shear, translate


@dataclass(frozen=True)
class RandAugmentConfig:
    """What one `rand-*` string means (read from timm's parsed RandAugment)."""

    ops: tuple[str, ...]
    num_layers: int
    prob: float
    magnitude: float
    magnitude_std: float
    magnitude_max: float
    translate_const: float  # pixels at magnitude 10 for TranslateX/Y (timm: 0.45 x image size)
    translate_pct: float  # fraction of the image at magnitude 10 for TranslateX/YRel
    fill: tuple[int, int, int]  # what geometric ops show outside the image (timm: the mean colour)
    interpolation: str  # grid_sample mode for geometric ops: 'bicubic', 'bilinear' or 'nearest'


def parse_rand_augment(config_str: str, image_size: int, mean: tuple[float, ...], interpolation: str) -> RandAugmentConfig:
    """Parse `config_str` with timm (the hyper-parameters timm's training transform passes it) into our config."""
    if not config_str.startswith("rand"):
        raise ValueError(
            f"--device_augment implements timm's RandAugment ('rand-...') only, got auto_augment={config_str!r}: use "
            "a rand-* policy, --auto_augment none, or the default data path (without --device_augment)."
        )
    fill = tuple(min(255, round(255 * x)) for x in mean)
    hparams = dict(translate_const=int(image_size * 0.45), img_mean=fill)
    policy = rand_augment_transform(config_str, hparams)
    if policy.choice_weights is not None:
        raise ValueError(f"--device_augment does not implement weighted op choice ('t' in {config_str!r}).")
    op = policy.ops[0]
    unknown = [o.name for o in policy.ops if o.name not in OPS]
    if unknown:
        raise ValueError(f"--device_augment has no tensor version of RandAugment ops {unknown} (in {config_str!r}).")
    return RandAugmentConfig(
        ops=tuple(o.name for o in policy.ops),
        num_layers=policy.num_layers,
        prob=op.prob,
        magnitude=float(op.magnitude),
        magnitude_std=float(op.magnitude_std),
        magnitude_max=float(op.magnitude_max or LEVEL_DENOM),
        translate_const=float(op.hparams["translate_const"]),
        translate_pct=float(op.hparams.get("translate_pct", 0.45)),
        fill=fill,  # type: ignore[arg-type]
        interpolation=interpolation,
    )


# --- draws (per image, host side) -----------------------------------------------------------------------------
@dataclass
class OpDraw:
    """One layer's draw for one image: the op, whether it applies, its magnitude and argument (None when not applied
    or when the op takes none)."""

    name: str
    applied: bool = False
    magnitude: float | None = None
    arg: float | None = None


def level_to_arg(name: str, magnitude: float, negate: bool, config: RandAugmentConfig) -> float | None:
    """timm's LEVEL_TO_ARG for `name` at `magnitude`, with the random sign given (`negate`) instead of drawn."""
    level = magnitude / LEVEL_DENOM
    sign = -1.0 if negate else 1.0
    base = name.removesuffix("Increasing")
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":
        return sign * level * 30.0
    if name in ("ShearX", "ShearY"):
        return sign * level * 0.3
    if name in ("TranslateX", "TranslateY"):
        return sign * level * config.translate_const
    if name in ("TranslateXRel", "TranslateYRel"):
        return sign * level * config.translate_pct
    if name == "Posterize":
        return int(level * 4)
    if name == "PosterizeIncreasing":
        return 4 - int(level * 4)
    if name == "PosterizeOriginal":
        return int(level * 4) + 4
    if name == "Solarize":
        return min(256, int(level * 256))
    if name == "SolarizeIncreasing":
        return 256 - min(256, int(level * 256))
    if name == "SolarizeAdd":
        return min(128, int(level * 110))
    if base in ENHANCE_OPS and name.endswith("Increasing"):
        return max(0.1, 1.0 + sign * level * 0.9)  # 1 = unchanged; away from 1 on either side = stronger
    if base in ENHANCE_OPS:
        return level * 1.8 + 0.1
    raise KeyError(name)


def draws_sign(name: str) -> bool:
    """Whether timm's level function for `name` draws a random sign (its `_randomly_negate`)."""
    return name in SIGNED_OPS or (name.endswith("Increasing") and name.removesuffix("Increasing") in ENHANCE_OPS)


def draw_rand_augment(rng: random.Random, config: RandAugmentConfig) -> list[OpDraw]:
    """One image's RandAugment draws (see the module docstring for the order)."""
    draws = [OpDraw(config.ops[rng.randrange(len(config.ops))]) for _ in range(config.num_layers)]
    for draw in draws:
        if config.prob < 1.0 and rng.random() > config.prob:
            continue
        magnitude = config.magnitude
        if config.magnitude_std == math.inf:
            magnitude = rng.uniform(0, magnitude)
        elif config.magnitude_std > 0:
            magnitude = rng.gauss(magnitude, config.magnitude_std)
        draw.applied, draw.magnitude = True, max(0.0, min(magnitude, config.magnitude_max))
        negate = rng.random() > 0.5 if draws_sign(draw.name) else False
        draw.arg = level_to_arg(draw.name, draw.magnitude, negate, config)
    return draws


# --- ops (per batch, on the device) -------------------------------------------------------------------------------
def to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list as a tensor on `device`; on CUDA through pinned memory, so the copy does not wait for the
    queued kernels (a plain copy from pageable memory synchronises the stream)."""
    tensor = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _per_image(args: list[float], images: torch.Tensor) -> torch.Tensor:
    return to_device(args, torch.float32, images.device).view(-1, 1, 1, 1)


def _blend(images: torch.Tensor, degenerate: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """torchvision's `_blend` (and PIL's `Image.blend`) with one factor per image: x * f + degenerate * (1 - f),
    clipped, truncated to uint8."""
    out = images.float().mul_(factors).add_(degenerate.float().mul_(1.0 - factors))
    return out.clamp_(0, 255).to(torch.uint8)


def _contrast_degenerate(images: torch.Tensor) -> torch.Tensor:
    # torchvision's adjust_contrast: the mean of the (floored) grayscale image, per image
    return TF.rgb_to_grayscale(images).float().mean(dim=(-3, -2, -1), keepdim=True)


DEGENERATE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Color": lambda x: TF.adjust_saturation(x, 0.0),  # torchvision's grayscale, floored, as its blend uses it
    "Contrast": _contrast_degenerate,
    "Brightness": torch.zeros_like,
    "Sharpness": lambda x: TF.adjust_sharpness(x, 0.0),  # the 3x3 smoothed image with the original border
}


def _enhance(name: str) -> Callable:
    degenerate = DEGENERATE[name.removesuffix("Increasing")]
    return lambda images, args, config: _blend(images, degenerate(images), _per_image(args, images))


def _posterize(images: torch.Tensor, args: list, config: RandAugmentConfig) -> torch.Tensor:
    # keep the top `bits`; 8 or more keeps all (timm), 0 keeps none: a black image (hf_deit's fix_timm_posterize)
    masks = [(0xFF << (8 - min(8, max(0, int(bits))))) & 0xFF for bits in args]
    return images & to_device(masks, torch.uint8, images.device).view(-1, 1, 1, 1)


def _solarize(images: torch.Tensor, args: list, config: RandAugmentConfig) -> torch.Tensor:
    # PIL's solarize: invert the pixels >= threshold (a threshold of 256 inverts none)
    return torch.where(images >= _per_image(args, images), 255 - images, images)


def _solarize_add(images: torch.Tensor, args: list, config: RandAugmentConfig) -> torch.Tensor:
    # timm's solarize_add: pixels below 128 get `add` more, clipped at 255
    added = (images.to(torch.int16) + _per_image(args, images).to(torch.int16)).clamp_(max=255).to(torch.uint8)
    return torch.where(images < 128, added, images)


def pil_affine_matrix(name: str, arg: float, width: int, height: int) -> list[float]:
    """The inverse affine matrix (a, b, c, d, e, f) that timm's op hands PIL: the output pixel at (x, y) samples
    the input at (a x + b y + c, d x + e y + f), in coordinates where pixel centres sit at +0.5."""
    if name == "ShearX":
        return [1.0, arg, 0.0, 0.0, 1.0, 0.0]
    if name == "ShearY":
        return [1.0, 0.0, 0.0, arg, 1.0, 0.0]
    if name in ("TranslateX", "TranslateXRel"):
        return [1.0, 0.0, arg * width if name.endswith("Rel") else arg, 0.0, 1.0, 0.0]
    if name in ("TranslateY", "TranslateYRel"):
        return [1.0, 0.0, 0.0, 0.0, 1.0, arg * height if name.endswith("Rel") else arg]
    # Rotate: PIL's Image.rotate (counter-clockwise about the image centre), its rounding included
    angle = -math.radians(arg % 360.0)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = width / 2, height / 2
    return [a, b, a * -cx + b * -cy + cx, -b, a, -b * -cx + a * -cy + cy]


def warp(images: torch.Tensor, matrices: list[list[float]], mode: str, fill: tuple[int, ...]) -> torch.Tensor:
    """Apply one PIL inverse affine matrix per image (uint8 [n, C, H, W]), as PIL does: an output pixel whose source
    point lies outside the image gets `fill`; inside, `mode` interpolation with the edge pixels repeated.

    grid_sample's coordinates (align_corners=False) run from -1 to 1 over the image's outer edges, i.e.
    x_norm = 2 x / W - 1 in PIL's coordinates, so the matrix becomes N A N^-1.
    """
    n, _, height, width = images.shape
    thetas = []
    for a, b, c, d, e, f in matrices:
        # x_in_norm = 2/W (a x + b y + c) - 1 with x = (x_norm + 1) W / 2, y = (y_norm + 1) H / 2
        thetas.append([
            [a, b * height / width, (2 * (a * width / 2 + b * height / 2 + c)) / width - 1],
            [d * width / height, e, (2 * (d * width / 2 + e * height / 2 + f)) / height - 1],
        ])
    theta = to_device(thetas, torch.float32, images.device)
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    sampled = F.grid_sample(images.float(), grid, mode=mode, padding_mode="border", align_corners=False)
    outside = ((grid < -1) | (grid >= 1)).any(dim=-1).unsqueeze(1)  # PIL: source x outside [0, W) or y outside [0, H)
    fill_color = to_device(list(fill), torch.float32, images.device).view(1, -1, 1, 1)
    return torch.where(outside, fill_color, sampled).round_().clamp_(0, 255).to(torch.uint8)


def _geometric(name: str) -> Callable:
    def op(images: torch.Tensor, args: list, config: RandAugmentConfig) -> torch.Tensor:
        height, width = images.shape[-2:]
        matrices = [pil_affine_matrix(name, arg, width, height) for arg in args]
        return warp(images, matrices, config.interpolation, config.fill)

    return op


# name -> op(images uint8 [n, 3, H, W], per-image args, config) -> uint8 [n, 3, H, W]
OPS: dict[str, Callable[[torch.Tensor, list, RandAugmentConfig], torch.Tensor]] = {
    "AutoContrast": lambda images, args, config: TF.autocontrast(images),
    "Equalize": lambda images, args, config: TF.equalize(images),
    "Invert": lambda images, args, config: TF.invert(images),
    "Posterize": _posterize,
    "PosterizeIncreasing": _posterize,
    "PosterizeOriginal": _posterize,
    "Solarize": _solarize,
    "SolarizeIncreasing": _solarize,
    "SolarizeAdd": _solarize_add,
    **{name: _enhance(name) for base in ENHANCE_OPS for name in (base, base + "Increasing")},
    **{name: _geometric(name) for name in GEOMETRIC_OPS},
}


def apply_rand_augment(images: torch.Tensor, draws: list[list[OpDraw]], config: RandAugmentConfig) -> torch.Tensor:
    """Apply each image's draws (`draws[i]`: image i's layers) to the batch, layer by layer, one call per op."""
    for layer in range(config.num_layers):
        groups: dict[str, tuple[list[int], list]] = {}
        for index, image_draws in enumerate(draws):
            draw = image_draws[layer]
            if draw.applied:
                indices, args = groups.setdefault(draw.name, ([], []))
                indices.append(index)
                args.append(draw.arg)
        for name, (indices, args) in groups.items():
            rows = to_device(indices, torch.long, images.device)
            images.index_copy_(0, rows, OPS[name](images.index_select(0, rows), args, config))
    return images


__all__ = [
    "OpDraw",
    "RandAugmentConfig",
    "apply_rand_augment",
    "draw_rand_augment",
    "level_to_arg",
    "parse_rand_augment",
    "pil_affine_matrix",
    "warp",
]

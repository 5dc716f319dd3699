"""--device_augment's augmentation (hf_deit.data.device_augment, device_randaugment) against timm's PIL transform.

Draws: timm's transform as the default path builds it (`build_train_transform`, instrumented to record its crop,
flip and every RandAugment op's choice, application, magnitude and argument) runs on N images; the device path draws
for 4 N seeds; each parameter's distribution is compared with timm's, and each rate with the recipe's value. Two-sample tests (scipy: KS for continuous values,
chi-square for op counts) must give p > 1e-3; proportions must agree within 4 standard errors of their difference
(computed from the sample sizes). The seeds are fixed, so each test is deterministic; with correct code a test on fresh
seeds would fail about once in 1,000 runs (p) or 16,000 (4 SE). A wrong range, probability or op set moves these
statistics far past the bounds (e.g. a 0.45 instead of 0.5 flip rate is 12 SE off at 16,000 draws).

Pixels: each RandAugment op on tensors against timm's PIL op at the same argument on real photos; the crop + resize
against torchvision's PIL resized_crop (what timm's RandomResizedCrop calls).
"""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from timm.data.auto_augment import LEVEL_TO_ARG, NAME_TO_OP, RandAugment, _RAND_INCREASING_TRANSFORMS, _RAND_TRANSFORMS
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision.transforms import functional as PF

from hf_deit.data import DataArguments, build_train_transform
from hf_deit.data.crop_record import record_crops
from hf_deit.data.device_augment import (
    DeviceAugment,
    DeviceAugmentConfig,
    ImageDraws,
    crop_and_flip,
    draw_crop,
    draw_erasing,
    draw_image,
)
from hf_deit.data.device_randaugment import OPS, level_to_arg, parse_rand_augment
from hf_deit.data.transforms import IMAGENET_MEAN

N = 4000  # timm's transform runs (about 7 s); the device path draws 4 N (cheap: no pixels)
N_OURS = 4 * N
WIDTH, HEIGHT, SIZE = 80, 60, 48  # a small non-square source image: timm's transform runs fast on it
P_MIN = 1e-3


def photo(seed, size=(WIDTH, HEIGHT)):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, size[0])[None, :, None] + np.linspace(0, 128, size[1])[:, None, None]
    return Image.fromarray(np.clip(x + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8))


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def within_4_se_of(successes, n, p):
    """A proportion against the recipe's value p, to 4 standard errors."""
    return abs(successes / n - p) <= 4 * math.sqrt(p * (1 - p) / n), (successes / n, p)


def within_4_se(successes_a, n_a, successes_b, n_b):
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n_a + 1 / n_b))
    return abs(p_a - p_b) <= 4 * se, (p_a, p_b, se)


class RecordingOp:
    """Stands in for one of timm's AugmentOps inside its RandAugment: records each call's op, whether the op ran
    (its aug_fn was called), and the magnitude and argument timm's level function got and gave."""

    def __init__(self, op, log):
        self.op, self.log = op, log

    def __call__(self, image):
        entry = {"name": self.op.name, "applied": False, "magnitude": None, "arg": None}
        self.log.append(entry)
        level_fn, aug_fn = self.op.level_fn, self.op.aug_fn

        def level(magnitude, hparams):
            entry["magnitude"], entry["arg"] = magnitude, level_fn(magnitude, hparams)[0]
            return (entry["arg"],)

        def aug(img, *args, **kwargs):
            entry["applied"] = True
            return aug_fn(img, *args, **kwargs)

        self.op.level_fn, self.op.aug_fn = (level if level_fn else None), aug
        try:
            return self.op(image)
        finally:
            self.op.level_fn, self.op.aug_fn = level_fn, aug_fn


def find(compose, kind):
    pending = [compose]
    while pending:
        step = pending.pop()
        if isinstance(step, kind):
            return step
        pending += getattr(step, "transforms", [])
    raise LookupError(kind)


@pytest.fixture(scope="module")
def data_args():
    return DataArguments(image_size=SIZE, reprob=0.0)  # the recipe's crop, flip and RandAugment; erasing: own test


@pytest.fixture(scope="module")
def timm_draws(data_args):
    """N runs of timm's transform (the default path's) on one image, recorded."""
    transform = record_crops(build_train_transform(data_args))
    policy = find(transform.transform, RandAugment)
    log = []
    policy.ops = [RecordingOp(op, log) for op in policy.ops]
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    image, boxes, flips, ops = photo(0), [], [], []
    for _ in range(N):
        start = len(log)
        transform(image)
        boxes.append(transform.crop_record.box)
        flips.append(transform.crop_record.flipped)
        ops.append(log[start:])
    return {"boxes": np.array(boxes), "flips": np.array(flips), "ops": ops}


@pytest.fixture(scope="module")
def device_draws(data_args):
    config = DeviceAugmentConfig.from_data_args(data_args)
    draws = [draw_image(seed, WIDTH, HEIGHT, config) for seed in range(N_OURS)]
    ops = [[vars(op) for op in d.ops] for d in draws]
    return {"boxes": np.array([d.box for d in draws]), "flips": np.array([d.flip for d in draws]), "ops": ops}


# --- RandomResizedCrop and flip ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(500, 375), (80, 60), (500, 90), (90, 500)])  # the last two: timm's fallback crop
def test_crop_draws_are_timms_for_the_same_random_state(size):
    """The same algorithm as timm's get_params, call for call: equal boxes from equal states of `random`."""
    image = Image.new("RGB", size)
    for seed in range(200):
        random.seed(seed)
        expected = RandomResizedCropAndInterpolation.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))
        assert draw_crop(random.Random(seed), *size, (0.08, 1.0), (3 / 4, 4 / 3)) == expected


def test_crop_scale_ratio_and_position_distributions_match_timm(timm_draws, device_draws):
    def features(boxes):
        width, height = (boxes[:, 2] - boxes[:, 0]) * WIDTH, (boxes[:, 3] - boxes[:, 1]) * HEIGHT
        return {"area": width * height / (WIDTH * HEIGHT), "log ratio": np.log(width / height),
                "centre x": (boxes[:, 0] + boxes[:, 2]) / 2, "centre y": (boxes[:, 1] + boxes[:, 3]) / 2}

    ours, theirs = features(device_draws["boxes"]), features(timm_draws["boxes"])
    for name in ours:
        assert stats.ks_2samp(ours[name], theirs[name]).pvalue > P_MIN, name
    assert ours["area"].min() >= 0.08 - 0.01 and ours["area"].max() <= 1.0  # scale 0.08-1 (up to pixel rounding)


def test_flip_rate_matches_timm(timm_draws, device_draws):
    ok, figures = within_4_se(device_draws["flips"].sum(), N_OURS, timm_draws["flips"].sum(), N)
    assert ok, figures
    assert within_4_se_of(device_draws["flips"].sum(), N_OURS, 0.5)[0]  # and the recipe's 0.5


# --- RandAugment draws ---------------------------------------------------------------------------------------------
def _flat(draws):
    return [op for image in draws["ops"] for op in image]


def test_two_ops_per_image_from_timms_increasing_set(timm_draws, device_draws):
    assert all(len(image) == 2 for image in timm_draws["ops"] + device_draws["ops"])
    names = {op["name"] for op in _flat(device_draws)}
    assert names == {op["name"] for op in _flat(timm_draws)} == set(_RAND_INCREASING_TRANSFORMS)


def test_op_choice_frequencies_match_timm(timm_draws, device_draws):
    names = sorted(_RAND_INCREASING_TRANSFORMS)
    counts = [[sum(op["name"] == name for op in _flat(d)) for name in names] for d in (device_draws, timm_draws)]
    assert stats.chi2_contingency(counts).pvalue > P_MIN, counts
    assert stats.chisquare(counts[0]).pvalue > P_MIN, counts[0]  # uniform over the 15 ops


def test_per_op_application_probability_matches_timm(timm_draws, device_draws):
    ours, theirs = _flat(device_draws), _flat(timm_draws)
    for name in _RAND_INCREASING_TRANSFORMS:
        a = [op["applied"] for op in ours if op["name"] == name]
        b = [op["applied"] for op in theirs if op["name"] == name]
        ok, figures = within_4_se(sum(a), len(a), sum(b), len(b))
        assert ok, (name, figures)
    assert within_4_se_of(sum(op["applied"] for op in ours), len(ours), 0.5)[0]  # the policy's p = 0.5


def test_magnitude_and_sign_distributions_match_timm(timm_draws, device_draws):
    """Magnitudes ~ N(9, 0.5) clipped to [0, 10] (timm shows them to the ops that take an argument); the random sign
    of the symmetric ops is +/- with probability 1/2."""
    with_arg = [name for name in _RAND_INCREASING_TRANSFORMS if LEVEL_TO_ARG[name] is not None]
    ours = [op for op in _flat(device_draws) if op["applied"] and op["name"] in with_arg]
    theirs = [op for op in _flat(timm_draws) if op["applied"] and op["name"] in with_arg]
    magnitudes = np.array([op["magnitude"] for op in ours])
    assert stats.ks_2samp(magnitudes, [op["magnitude"] for op in theirs]).pvalue > P_MIN
    assert magnitudes.max() <= 10.0 and abs(np.median(magnitudes) - 9.0) < 0.05
    signed = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing", "ContrastIncreasing",
              "BrightnessIncreasing", "SharpnessIncreasing")
    negative = {name: [sum(op["arg"] < (1.0 if "Increasing" in name else 0.0) for op in d if op["name"] == name)
                       for d in (ours, theirs)] for name in signed}
    totals = {name: [sum(op["name"] == name for op in d) for d in (ours, theirs)] for name in signed}
    for name in signed:
        assert within_4_se(negative[name][0], totals[name][0], negative[name][1], totals[name][1])[0], name
    # pooled over the ops (about 9,500 draws): 1/2, to 4 standard errors (0.02)
    pooled, total = sum(n[0] for n in negative.values()), sum(t[0] for t in totals.values())
    assert within_4_se_of(pooled, total, 0.5)[0], pooled / total


@pytest.mark.parametrize("name", sorted(set(_RAND_INCREASING_TRANSFORMS + _RAND_TRANSFORMS)))
def test_level_arguments_equal_timms(name, monkeypatch):
    """level_to_arg(name, m, negate) is timm's LEVEL_TO_ARG[name](m) with its random sign forced."""
    import timm.data.auto_augment as aa

    config = parse_rand_augment("rand-m9-mstd0.5-inc1", 224, IMAGENET_MEAN, "bicubic")
    hparams = {"translate_const": config.translate_const}
    for negate in (False, True):
        monkeypatch.setattr(aa.random, "random", lambda: 0.9 if negate else 0.1)  # timm negates when > 0.5
        for magnitude in np.linspace(0, 10, 41):
            expected = LEVEL_TO_ARG[name](magnitude, hparams)[0] if LEVEL_TO_ARG[name] else None
            assert level_to_arg(name, magnitude, negate, config) == expected, (magnitude, negate)


def test_the_policy_string_is_parsed_by_timm():
    config = parse_rand_augment("rand-m7-n3-mstd1.0-inc0", 224, IMAGENET_MEAN, "bilinear")
    assert (config.ops, config.num_layers, config.magnitude, config.magnitude_std) == (tuple(_RAND_TRANSFORMS), 3, 7, 1.0)
    assert config.fill == (124, 116, 104)  # timm's img_mean: the ImageNet mean in 0-255
    with pytest.raises(ValueError, match="rand-"):
        parse_rand_augment("original", 224, IMAGENET_MEAN, "bicubic")


# --- each op's pixels against timm's PIL op --------------------------------------------------------------------
EXACT = ("Equalize", "Invert", "Posterize", "PosterizeIncreasing", "Solarize", "SolarizeIncreasing", "SolarizeAdd",
         "Brightness", "BrightnessIncreasing")
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


@pytest.fixture(scope="module")
def photos(imagenet_photos):
    # non-square, so that a width/height mix-up in a geometric op shows
    return [Image.open(path).convert("RGB").resize((96, 80), Image.BICUBIC) for path, _ in imagenet_photos[:3]]


def _compare(name, photos, interpolation, pil_resample):
    """|tensor op - timm's PIL op| over the photos at magnitudes 3, 9, 10 with both signs."""
    config = parse_rand_augment("rand-m9-mstd0.5-inc1", 224, IMAGENET_MEAN, interpolation)
    batch = torch.stack([to_tensor(p) for p in photos])
    diffs = []
    for negate in (False, True):
        for magnitude in (3.0, 9.0, 10.0):
            arg = level_to_arg(name, magnitude, negate, config)
            out = OPS[name](batch, [arg] * len(photos), config)
            for image, got in zip(photos, out):
                args = () if arg is None else (arg,)
                if name.startswith("Posterize") and arg <= 0:
                    expected = Image.new("RGB", image.size)  # hf_deit's fix_timm_posterize (Pillow 13 raises)
                else:
                    expected = NAME_TO_OP[name](image, *args, fillcolor=config.fill, resample=pil_resample)
                diffs.append(np.abs(np.asarray(expected, dtype=int) - got.permute(1, 2, 0).numpy().astype(int)))
    return np.stack(diffs)


@pytest.mark.parametrize("name", sorted(set(_RAND_INCREASING_TRANSFORMS + _RAND_TRANSFORMS) - set(GEOMETRIC)))
def test_colour_ops_equal_timms_pil_ops_within_one_level(name, photos):
    """Equal, or within 1 of 255 where torchvision and Pillow round differently: Pillow's grayscale is an integer
    (R 299 + G 587 + B 114) / 1000 rounded, torchvision's a float floored; contrast's mean likewise; autocontrast's
    scale is float vs double."""
    diff = _compare(name, photos, "bicubic", Image.BICUBIC)
    assert diff.max() <= (0 if name in EXACT else 1), diff.max()


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_ops_have_pils_geometry(name, photos):
    """The same inverse matrices and fill rule as Pillow: with bilinear interpolation on both sides every pixel is
    within 1 of Pillow's (rounding), nearest picks the same source pixel except at exact ties (< 0.5% of pixels)."""
    assert _compare(name, photos, "bilinear", Image.BILINEAR).max() <= 1
    assert (_compare(name, photos, "nearest", Image.NEAREST) > 0).mean() < 0.005


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_ops_with_the_recipes_bicubic_are_close_to_pils(name, photos):
    """The recipe's bicubic: grid_sample's cubic kernel has a = -0.75, Pillow's a = -0.5, so edges differ by a few
    levels; on average under 1.5 of 255 (measured 0.6-0.9 on these photos), and never where Pillow fills."""
    diff = _compare(name, photos, "bicubic", Image.BICUBIC)
    assert diff.mean() < 1.5, diff.mean()


# --- crop + resize pixels, erasing ------------------------------------------------------------------------------
def test_crop_resize_and_flip_match_pils_within_two_levels(photos):
    """torchvision's tensor bicubic with antialiasing implements Pillow's filter (a = -0.5, support scaled when
    shrinking): at most 2 of 255 apart, on under 2% of the pixels."""
    config = DeviceAugmentConfig(image_size=64)
    for image in photos:
        for crop, flip in (((5, 10, 60, 40), False), ((0, 0, 80, 96), True), ((30, 20, 12, 16), True)):
            draws = ImageDraws(crop=crop, box=(0, 0, 1, 1), flip=flip)
            got = crop_and_flip(to_tensor(image), draws, config).permute(1, 2, 0).numpy().astype(int)
            expected = PF.resized_crop(image, *crop, [64, 64], PF.InterpolationMode.BICUBIC)
            expected = np.asarray(PF.hflip(expected) if flip else expected, dtype=int)
            diff = np.abs(got - expected)
            assert diff.max() <= 2 and (diff > 0).mean() < 0.02, (crop, diff.max(), (diff > 0).mean())


def test_small_images_get_torchvisions_padded_crop_exactly():
    """image_size <= 32: reflect padding + RandomCrop (CIFAR), as build_train_transform does; the box reaches past
    the image by the padding."""
    image = photo(1, (32, 32))
    config = DeviceAugmentConfig.from_data_args(DataArguments(image_size=32, auto_augment="none", reprob=0.0))
    assert config.padding == 4
    for seed in range(20):
        draws = draw_image(seed, 32, 32, config)
        top, left, size, _ = draws.crop
        expected = PF.crop(PF.pad(image, 4, padding_mode="reflect"), top, left, size, size)
        expected = PF.hflip(expected) if draws.flip else expected
        assert torch.equal(crop_and_flip(to_tensor(image), draws, config), to_tensor(expected))
        assert draws.box == ((left - 4) / 32, (top - 4) / 32, (left - 4) / 32 + 1, (top - 4) / 32 + 1)


def _timm_erased_box(image):
    rows, cols = torch.nonzero(image.abs().sum(0), as_tuple=True)
    if len(rows) == 0:
        return None
    return int(rows.min()), int(cols.min()), int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_erasing_boxes_are_timms_for_the_same_random_state():
    erasing = RandomErasing(0.5, mode="pixel", device="cpu")
    for seed in range(300):
        random.seed(seed)
        expected = _timm_erased_box(erasing(torch.zeros(3, SIZE, SIZE)))
        got = draw_erasing(random.Random(seed), SIZE, 0.5, 1)
        assert got == ([] if expected is None else [expected])


def test_erasing_probability_area_and_aspect_match_timm():
    erasing = RandomErasing(0.25, mode="pixel", device="cpu")  # what timm's transform builds for reprob 0.25
    random.seed(1), torch.manual_seed(1)
    theirs = [b for b in (_timm_erased_box(erasing(torch.zeros(3, SIZE, SIZE))) for _ in range(N)) if b is not None]
    ours = [b for seed in range(N_OURS) for b in draw_erasing(random.Random(seed), SIZE, 0.25, 1)]
    assert within_4_se(len(ours), N_OURS, len(theirs), N)[0] and within_4_se_of(len(ours), N_OURS, 0.25)[0]
    for feature in (lambda b: b[2] * b[3] / SIZE**2, lambda b: math.log(b[2] / b[3]), lambda b: b[0], lambda b: b[1]):
        assert stats.ks_2samp([feature(b) for b in ours], [feature(b) for b in theirs]).pvalue > P_MIN


def test_erasing_fills_with_standard_normal_noise():
    config = DeviceAugmentConfig(image_size=SIZE, reprob=1.0, rand_augment=None, hflip=0.0)
    images = [to_tensor(photo(seed)) for seed in range(64)]
    pixel_values, draws = DeviceAugment(config).augment(images, list(range(64)))
    noise = torch.cat([pixel_values[i, :, t : t + h, l : l + w].flatten()
                       for i, d in enumerate(draws) for t, l, h, w in d.erase])
    assert len(noise) > 10_000 and stats.kstest(noise.numpy(), "norm").pvalue > P_MIN


# --- the whole chain ------------------------------------------------------------------------------------------
def test_an_image_is_augmented_by_its_seed_alone_and_no_global_rng_moves(data_args):
    """Same seed -> same pixels, whatever else is in the batch and where; the global RNGs are not drawn from (the
    step's dropout and Mixup draws stay as without the flag)."""
    augment = DeviceAugment(DeviceAugmentConfig.from_data_args(DataArguments(image_size=SIZE)))  # reprob 0.25 too
    images = [to_tensor(photo(seed)) for seed in range(8)]
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    batch, _ = augment.augment(images, list(range(100, 108)))
    assert (random.getstate(), torch.get_rng_state().tolist()) == (states[0], states[2].tolist())
    assert np.array_equal(np.random.get_state()[1], states[1])
    shuffled, _ = augment.augment(images[::-1], list(range(107, 99, -1)))
    single, _ = augment.augment(images[3:4], [103])
    assert torch.equal(shuffled.flip(0), batch) and torch.equal(single[0], batch[3])
    other, _ = augment.augment(images[3:4], [104])
    assert not torch.equal(other[0], batch[3])

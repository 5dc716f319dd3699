"""Shared fixtures: real photos from installed wheels, the optional ../shared/data folder, tiny configs."""

import os
import re
from pathlib import Path

import pytest
import torch

# Tests run offline: nothing may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO_ROOT = Path(__file__).resolve().parents[1]
# Stand-ins for transformers' test helpers (named test_*.py like the originals); they hold no tests of their own.
collect_ignore_glob = ["transformers_common/*"]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def foolbox_imagenet_photos() -> list[tuple[Path, int]]:
    """The 20 labelled ImageNet validation photos (512x512 JPEG) that ship inside foolbox's wheel."""
    try:
        import foolbox
    except ImportError:
        return []
    folder = Path(foolbox.__file__).parent / "data"
    photos = []
    for path in sorted(folder.glob("imagenet_*.jpg")):
        label = int(re.match(r"imagenet_\d+_(\d+)\.jpg", path.name).group(1))
        photos.append((path, label))
    return photos


@pytest.fixture(scope="session")
def imagenet_photos() -> list[tuple[Path, int]]:
    photos = foolbox_imagenet_photos()
    if not photos:
        pytest.skip("foolbox is not installed: `pip install -e .[dev]` brings its 20 labelled ImageNet photos")
    return photos


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (only CI and developer machines have ../shared/data)")
    return SHARED_DATA


def pytest_configure(config):
    # Markers used by transformers' common model tests (tests/test_modeling_deit_common.py).
    markers = ("slow", "accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test",
               "torch_compile_test")  # fmt: skip
    for marker in markers:
        config.addinivalue_line("markers", f"{marker}: transformers' test marker")


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    return save_tiny_student(tmp_path_factory.mktemp("tiny_student"))


def save_tiny_student(folder: Path) -> Path:
    """A tiny distilled DeiT (untrained) saved as a run saves it (weights, config, model code, image processor, a
    card), with CIFAR-10's class names. Its two heads get different class biases half a logit apart, so that they
    rank the classes differently and without near-ties on any image; the images still move every probability."""
    from hf_deit import DeiTConfig, DeiTForImageClassification, image_processor_for

    torch.manual_seed(0)
    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        id2label=dict(enumerate(CIFAR10_CLASSES)))  # fmt: skip
    model = DeiTForImageClassification(config).eval()
    with torch.no_grad():
        steps = 0.5 * torch.arange(10, dtype=torch.float32)
        model.cls_classifier.bias.copy_(steps[torch.randperm(10)])
        model.distillation_classifier.bias.copy_(steps[torch.randperm(10)])
    model.save_pretrained(folder)
    image_processor_for(config).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny student\n")
    return folder

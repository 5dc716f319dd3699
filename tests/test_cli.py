"""`hf-deit` as users expect: --version, predict on folders and on timm teacher folders, one-line errors, --debug."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf

import hf_deit
from hf_deit.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "hf_deit.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory) -> Path:
    """A timm folder as timm's save_for_hf writes it (3 CIFAR-like classes; num_classes repeated in model_args, as in
    teacher folders from examples/train_teacher.py before it dropped that copy)."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    folder = tmp_path_factory.mktemp("teacher")
    save_for_hf(
        model,
        folder,
        model_config={"label_names": ["airplane", "bird", "cat"], "pretrained_cfg": {"tag": "hf_deit_teacher"}},
        data_config={"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
                     "std": (0.229, 0.224, 0.225), "crop_pct": 0.875},  # fmt: skip
        safe_serialization=True,
    )
    return folder


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"hf-deit {hf_deit.__version__} (transformers ")


def test_predict_on_a_folder_with_a_timm_teacher_folder(teacher_folder, imagenet_photos, capsys, tmp_path):
    config = json.loads((teacher_folder / "config.json").read_text())
    assert "num_classes" in config["model_args"]  # what made transformers' TimmWrapper raise KeyError
    photos = tmp_path / "photos" / "sub"
    photos.mkdir(parents=True)
    for path, _ in imagenet_photos[:3]:
        (photos / path.name).write_bytes(path.read_bytes())
    (photos / "notes.txt").write_text("not an image")
    assert main(["predict", str(teacher_folder), str(tmp_path / "photos"), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0::3] == sorted(str(photos / p.name) for p, _ in imagenet_photos[:3])  # recursive, images only
    # the same numbers as timm's own model and eval transform on each photo
    model = timm.create_model(f"local-dir:{teacher_folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    from PIL import Image

    with torch.no_grad():
        probs = model(transform(Image.open(lines[0]).convert("RGB")).unsqueeze(0)).softmax(-1)[0]
    top = probs.topk(2)
    names = ["airplane", "bird", "cat"]
    assert [line.split() for line in lines[1:3]] == [[f"{s:.3f}", names[i]] for s, i in zip(top.values, top.indices)]


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "{model}", "missing.jpg"], "hf-deit: error: no such image file or folder: missing.jpg"),
        (["predict", "./no-such-model", "{photo}"], "hf-deit: error: model folder not found: ./no-such-model"),
        # offline, a Hub-id-shaped name that is no local folder is said to be missing, without the Hub's error
        (["predict", "org/not-cached-anywhere", "{photo}"], "hf-deit: error: model folder not found: "
                                                           "org/not-cached-anywhere (no local folder "),
        # runs/ exists here, so runs/nope is a missing folder, not the Hub repo "runs/nope" (tried offline)
        (["predict", "runs/nope", "{photo}"], "hf-deit: error: model folder not found: runs/nope"),
    ],
)
def test_errors_are_one_line_and_exit_1(args, message, teacher_folder, imagenet_photos, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    args = [a.format(model=teacher_folder, photo=imagenet_photos[0][0]) for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err
    with pytest.raises((OSError, FileNotFoundError)):  # --debug: the exception itself, with its traceback
        main(["--debug", *args])


def test_predict_classifies_every_readable_file_and_names_each_unreadable_one(teacher_folder, imagenet_photos,
                                                                               capsys, tmp_path):
    """One bad file stops neither the others nor the run; each bad one is named with its reason; exit 1."""
    photos = tmp_path / "photos"
    photos.mkdir()
    good = [photos / "a.jpg", photos / "d.jpg"]
    good[0].write_bytes(imagenet_photos[0][0].read_bytes())
    good[1].write_bytes(imagenet_photos[1][0].read_bytes())
    (photos / "b.jpg").write_bytes(b"this is not a JPEG")
    (photos / "c.jpg").write_bytes(imagenet_photos[2][0].read_bytes()[:2000])  # truncated
    assert main(["predict", str(teacher_folder), str(photos), "--top-k", "1"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0::2] == [str(path) for path in good]  # both readable files, in order, each with its top-1
    assert all(line.split()[1] in ("airplane", "bird", "cat") for line in lines[1::2])
    err = captured.err.strip().splitlines()
    assert err[0].startswith(f"hf-deit: skipped: cannot read the image {photos / 'b.jpg'}: cannot identify image file")
    assert err[1].startswith(f"hf-deit: skipped: cannot read the image {photos / 'c.jpg'}: ")
    assert "truncated" in err[1] and "BytesIO" not in captured.err
    assert err[2].startswith("hf-deit: error: 2 of 4 images could not be read")


def test_load_image_errors_name_the_file(tmp_path):
    from hf_deit import load_image
    from hf_deit.models.image_decoding import UnreadableImageError

    (tmp_path / "bad.png").write_bytes(b"not a PNG")
    with pytest.raises(UnreadableImageError, match=rf"cannot read the image {tmp_path / 'bad.png'}: cannot identify") as e:
        load_image(str(tmp_path / "bad.png"))
    assert "BytesIO" not in str(e.value) and isinstance(e.value, OSError)  # still an OSError, as Pillow's was


def test_console_entry_exits_1_with_one_line(tmp_path):
    result = cli("predict", "./model", "missing.jpg", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "hf-deit: error: no such image file or folder: missing.jpg (run with --debug for the traceback)"
    ]

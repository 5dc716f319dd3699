"""`hf-deit space MODEL OUT_DIR`: the folder a Hugging Face Space runs, and its app.py started in a fresh virtual
environment where hf_deit cannot be imported (the model loads with its own saved code), answering a request."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import yaml

import hf_deit.app
from hf_deit.cli import main
from hf_deit.space import DEMO_MARKER, write_space

from test_app_browser import free_port, serve


def front_matter(readme: Path) -> dict:
    return yaml.safe_load(readme.read_text().split("---")[1])


def test_space_folder_for_a_local_model(tiny_student, imagenet_photos, tmp_path, capsys):
    model = tmp_path / "model_run"
    shutil.copytree(tiny_student, model)  # its card gets edited
    photos = tmp_path / "photos"
    photos.mkdir()
    for path, _ in imagenet_photos[:2]:
        (photos / path.name).write_bytes(path.read_bytes())
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "space"
    for _ in range(2):  # writing again replaces, never duplicates
        assert main(["space", str(model), str(out), "--examples", str(photos), "--space-id", "someone/tiny-demo"]) == 0
    assert "Run it here: cd" in capsys.readouterr().out

    # app.py is hf_deit/app.py itself: one copy of the page's logic.
    assert (out / "app.py").read_bytes() == Path(hf_deit.app.__file__).read_bytes()
    meta = front_matter(out / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and "models" not in meta  # a local model
    assert str(meta["sdk_version"]).count(".") == 2
    assert json.loads((out / "app_config.json").read_text()) == {
        "model": "model", "title": "DeiT demo: model_run", "examples": "examples"}  # fmt: skip
    assert sorted(p.name for p in (out / "examples").iterdir()) == sorted(p.name for p, _ in imagenet_photos[:2])
    assert {"config.json", "model.safetensors", "modeling_deit.py", "configuration_deit.py",
            "preprocessor_config.json"} == {p.name for p in (out / "model").iterdir()}  # fmt: skip
    requirements = (out / "requirements.txt").read_text()
    assert "transformers>=" in requirements and "torch" in requirements and "hf_deit" not in requirements
    card = (model / "README.md").read_text()
    assert card.count(DEMO_MARKER) == 1 and "https://huggingface.co/spaces/someone/tiny-demo" in card


def test_space_folder_for_a_hub_model(tmp_path):
    out = tmp_path / "space"
    paths = write_space("someone/deit-tiny", out)
    assert front_matter(out / "README.md")["models"] == ["someone/deit-tiny"]  # the model's page lists the Space
    assert json.loads((out / "app_config.json").read_text())["model"] == "someone/deit-tiny"
    assert not (out / "model").exists() and "examples" not in paths


def test_space_refuses_a_folder_without_model_code(tiny_student, tmp_path):
    model = tmp_path / "old"
    shutil.copytree(tiny_student, model)
    config = json.loads((model / "config.json").read_text())
    config.pop("auto_map")
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="carries no model code"):
        write_space(str(model), tmp_path / "space")


def fresh_venv_without_hf_deit(folder: Path) -> Path:
    """A new venv that sees this interpreter's installed packages (torch, transformers, gradio) through a .pth file
    but not hf_deit: its editable install is a .pth/finder in site-packages, and .pth files found through another
    .pth are not run. Returns its python."""
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    ours |= {p for p in sys.path if p.endswith("site-packages")}  # e.g. a venv layered on another one
    Path(site, "parent_site_packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


def test_space_app_runs_where_hf_deit_is_not_installed(tiny_student, imagenet_photos, tmp_path):
    pytest.importorskip("gradio", reason='gradio is not installed: pip install -e ".[dev]"')
    from gradio_client import Client, handle_file

    out = tmp_path / "space"
    write_space(str(tiny_student), out)
    python = fresh_venv_without_hf_deit(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))  # the saved code is cached afresh
    probe = subprocess.run([str(python), "-c", "import hf_deit"], cwd=out, env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'hf_deit'" in probe.stderr
    probe = subprocess.run([str(python), "-c", "import torch, transformers, gradio"], cwd=out, env=env)
    assert probe.returncode == 0

    port = free_port()
    photo = imagenet_photos[0][0]
    with serve([str(python), "app.py", "--port", str(port)], port, cwd=out, env=env) as url:
        fused, cls, distillation, agreement, panels, cosine = Client(url, verbose=False).predict(
            handle_file(str(photo)), api_name="/explain"
        )
    # The same answer as the page built here, with hf_deit's model class.
    model, processor = hf_deit.app.load_model(str(tiny_student))
    expected = hf_deit.app.explain(model, processor, hf_deit.app.decode_image(photo))
    for shown, head in ((fused, "fused"), (cls, "cls"), (distillation, "distillation")):
        labels = [(c["label"], c["confidence"]) for c in shown["confidences"]]
        assert [label for label, _ in labels] == list(expected.predictions[head])
        assert [p for _, p in labels] == pytest.approx(list(expected.predictions[head].values()), abs=1e-5)
    assert agreement == hf_deit.app.agreement_markdown(expected) and len(panels) == 5
    assert cosine == hf_deit.app.cosine_markdown(expected)

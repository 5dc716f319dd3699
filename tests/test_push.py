"""`hf-deit push MODEL REPO_ID`: what reaches the Hub client (huggingface_hub's calls recorded, no network), and the
one-line errors offline, without a token and without a network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, RepoUrl, constants
from safetensors.torch import load_file

from hf_deit import DeiTConfig, DeiTForImageClassification, image_processor_for
from hf_deit.cli import main
from hf_deit.hub.model_card import build_model_card, plot_training_curves

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_labels=4)
ANALYSIS = ("analysis/analysis.json", "analysis/analysis.md", "analysis/attention_maps.png")


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """A finished run's folder: weights, config, code, image processor (a non-default crop), card, curves, analysis."""
    torch.manual_seed(0)
    folder = tmp_path / "run"
    model = DeiTForImageClassification(DeiTConfig(**TINY, crop_pct=0.75))
    model.save_pretrained(folder)
    image_processor_for(model.config).save_pretrained(folder)
    build_model_card(model.config, curves_png="training_curves.png").save(folder / "README.md")
    plot_training_curves([{"step": 1, "loss": 1.0}], folder / "training_curves.png")
    for name in ANALYSIS:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(f"{name} of this run")
    (folder / "checkpoint-10").mkdir()  # training leftovers stay home
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"0")
    return folder


@pytest.fixture
def hub(monkeypatch, tmp_path) -> list[tuple[str, dict]]:
    """Online with a token, and every HfApi call that would reach the network recorded instead, in order.
    upload_folder's folder is copied to tmp_path/uploaded (it is a temporary directory)."""
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        shutil.copytree(kwargs["folder_path"], tmp_path / "uploaded")
        calls.append(("upload_folder", kwargs))
        url = f"https://huggingface.co/{kwargs['repo_id']}/commit/{'0' * 40}"
        return CommitInfo(commit_url=url, commit_message="", commit_description="", oid="0" * 40)

    for name, method in (("create_repo", create_repo), ("create_branch", create_branch),
                         ("upload_folder", upload_folder)):  # fmt: skip
        monkeypatch.setattr(HfApi, name, method)
    return calls


def test_push_uploads_the_folder_in_one_commit(model_folder, hub, tmp_path, capsys):
    assert main(["push", str(model_folder), "someone/tiny-deit", "--private", "--revision", "v1"]) == 0
    assert [name for name, _ in hub] == ["create_repo", "create_branch", "upload_folder"]
    create, branch, upload = (kwargs for _, kwargs in hub)
    assert create["repo_id"] == "someone/tiny-deit" and create["private"] is True and create["exist_ok"] is True
    assert branch["branch"] == "v1" and branch["exist_ok"] is True
    assert upload["repo_id"] == "someone/tiny-deit" and upload["revision"] == "v1"
    assert "https://huggingface.co/someone/tiny-deit" in capsys.readouterr().out

    uploaded = tmp_path / "uploaded"
    files = {str(p.relative_to(uploaded)) for p in uploaded.rglob("*") if p.is_file()}
    assert files == {"model.safetensors", "config.json", "configuration_deit.py", "modeling_deit.py",
                     "preprocessor_config.json", "README.md", "training_curves.png", *ANALYSIS}  # fmt: skip
    # The same weights, the folder's own image processor (its crop) and card, the analysis as written.
    ours, theirs = load_file(model_folder / "model.safetensors"), load_file(uploaded / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    processor = json.loads((uploaded / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 32} and processor["crop_pct"] == 0.75  # resize to 32 / 0.75
    card_text = (model_folder / "README.md").read_text().split("---")[2]  # the text after the metadata
    assert (uploaded / "README.md").read_text().split("---")[2] == card_text
    assert (uploaded / ANALYSIS[1]).read_text() == f"{ANALYSIS[1]} of this run"


def test_push_without_private_or_revision_leaves_them_to_the_hub(model_folder, hub):
    assert main(["push", str(model_folder), "someone/tiny-deit"]) == 0
    assert [name for name, _ in hub] == ["create_repo", "upload_folder"]  # no branch to create
    assert hub[0][1]["private"] is None and hub[1][1]["revision"] is None


def one_line_error(capsys) -> str:
    """The CLI's error line; no traceback (progress bars of a model load may precede it on stderr)."""
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("hf-deit:")]
    assert captured.out == "" and len(errors) == 1 and "Traceback" not in captured.err, captured.err
    return errors[0]


def test_push_offline_says_so_in_one_line(model_folder, hub, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["push", str(model_folder), "someone/tiny-deit"]) == 1
    assert "HF_HUB_OFFLINE" in one_line_error(capsys) and hub == []


def test_push_without_a_token_says_so_in_one_line(model_folder, hub, monkeypatch, tmp_path, capsys):
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    assert main(["push", str(model_folder), "someone/tiny-deit"]) == 1
    error = one_line_error(capsys)
    assert "no Hugging Face token" in error and "hf auth login" in error and hub == []


def test_push_without_a_network_says_which_endpoint(model_folder, hub, monkeypatch, capsys):
    # What the HTTP client (httpx) raises when the name does not resolve; its message names no Hub.
    connect_error = type("ConnectError", (Exception,), {"__module__": "httpx"})

    def unreachable(self, repo_id, **kwargs):
        raise connect_error("[Errno -2] Name or service not known")

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    assert main(["push", str(model_folder), "someone/tiny-deit"]) == 1
    assert f"cannot reach the Hugging Face Hub at {constants.ENDPOINT}" in one_line_error(capsys)


def test_push_refuses_a_folder_without_a_model(tmp_path, hub, capsys):
    assert main(["push", str(tmp_path), "someone/tiny-deit"]) == 1
    assert "is not a saved model folder" in one_line_error(capsys) and hub == []

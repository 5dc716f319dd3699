"""One rule decides "local path or Hub id" (hf_deit.sources), and every command and loader follows it: a local path
that does not exist is reported as a missing folder, never sent to the Hub (where offline it fails as a download)."""

import pytest

from hf_deit.sources import locate, require_source


@pytest.fixture
def in_a_project(tmp_path, monkeypatch):
    """cwd with a runs/ folder holding one model folder, as after `python examples/distill.py --output_dir runs/x`."""
    (tmp_path / "runs" / "deit").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize(
    "spec, local",
    [
        ("runs/deit", True),  # exists
        ("runs/nope", True),  # its first part is a folder here: a missing folder, not the repo "runs/nope"
        ("./nope", True), ("../nope", True), ("/nope/model", True), ("~/nope", True),  # paths by their form
        ("a/b/c", True), ("my model", True), ("org/na--me", True),  # not valid Hub ids (huggingface_hub's rule)
        ("facebook/deit-tiny-patch16-224", False), ("resnet50", False),  # Hub ids, timm names
        ("timm/regnety_160.deit_in1k", False), ("hf-hub:timm/regnety_160.deit_in1k", False),
    ],
)  # fmt: skip
def test_the_rule(in_a_project, spec, local):
    assert locate(spec).local is local


def test_a_missing_local_path_is_said_so(in_a_project):
    assert require_source("runs/deit").exists
    with pytest.raises(FileNotFoundError, match=r"model folder not found: runs/nope \(a local path, not a Hub id"):
        require_source("runs/nope")
    assert not require_source("org/name").local  # a Hub id: whether it exists is the Hub's to say


def _predict(spec):
    from hf_deit.inference import image_classifier

    image_classifier(spec)


def _teacher(spec):
    from hf_deit.distillation.teacher import load_teacher

    load_teacher(spec)


def _dataset(spec):
    from hf_deit.data import load_image_dataset

    load_image_dataset(spec, "train")


def _convert_transformers(spec):
    from hf_deit.hub.convert import from_transformers

    from_transformers(spec)


def _convert_timm(spec):
    from hf_deit.hub.convert import from_timm

    from_timm(spec)


def _analyze(spec):
    from hf_deit.analysis import analyze_cli

    analyze_cli(spec, "data")


@pytest.mark.parametrize("load", [_predict, _teacher, _dataset, _convert_transformers, _convert_timm, _analyze])
def test_every_loader_reports_a_missing_folder(in_a_project, load):
    with pytest.raises(FileNotFoundError, match="runs/nope"):
        load("runs/nope")


def test_cards_do_not_name_a_local_path_as_a_hub_id(in_a_project):
    from hf_deit.hub.convert import _hub_id
    from hf_deit.hub.model_card import Reference, hub_id

    assert hub_id("runs/nope") is None and hub_id("runs/deit") is None and hub_id("org/name") == "org/name"
    assert Reference.of("runs/nope") == Reference("nope", True)
    assert _hub_id("transformers", "runs/nope") is None and _hub_id("transformers", "org/name") == "org/name"

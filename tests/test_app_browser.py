"""The demo page in a real browser: `hf-deit app` on a free loopback port, headless Chromium (Debian's package, driven
by playwright) uploads a real photo, waits for the three heads and the attention maps, and the heads' top-5 must be
what `hf-deit predict` says on the same file.

Skipped, with the reason, where gradio, playwright or Chromium is missing; with CI=true that is a failure (.ci/run
installs Chromium). As a script it takes the screenshot shown in the README (MODEL "tiny": this test's model):

    python tests/test_app_browser.py MODEL PHOTO OUT.png [--teacher T] [--examples DIR]
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HEADS = ("fused", "cls", "distillation")
PANELS = 5  # what the model sees + cls / distillation token x last block / rollout


def require_browser() -> None:
    """Skip (or, with CI=true, fail) with the reason when the page or the browser cannot run here. A session fixture
    below, listed first, so that the check comes before the model is built."""
    missing = [name for name in ("gradio", "playwright") if importlib.util.find_spec(name) is None]
    reason = None
    if missing:
        reason = f"{' and '.join(missing)} not installed: pip install -e \".[dev]\""
    elif not os.path.exists(CHROMIUM):
        reason = "Chromium is absent: apt-get install -y chromium (Debian's package; playwright cannot download one)"
    if reason:
        (pytest.fail if os.environ.get("CI", "").lower() == "true" else pytest.skip)(reason)


@pytest.fixture(scope="session")
def browser_ready() -> None:
    require_browser()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}:\n{process.stdout.read()}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.5)
    raise TimeoutError(f"the app did not listen on port {port} within {timeout:.0f} s")


@contextlib.contextmanager
def serve(command: list[str], port: int, cwd: Path = REPO_ROOT, env: dict | None = None) -> Iterator[str]:
    """Run an app command until the block ends; yields its URL once it listens."""
    env = env if env is not None else {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, process, timeout=300)  # a cold start imports torch, transformers and gradio
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=30)


def serve_app(model: str | Path, *options: str) -> contextlib.AbstractContextManager[str]:
    port = free_port()
    return serve([sys.executable, "-m", "hf_deit.cli", "app", str(model), "--port", str(port), *options], port)


def show_in_browser(url: str, photo: str | Path, screenshot: str | Path | None = None) -> dict:
    """Open the page in headless Chromium, upload `photo`, wait for every output; returns what the page shows:
    {head: [(label, probability), ...]}, "agreement": text, "panels": loaded attention images."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])  # CI runs as root
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.set_input_files("#input-image input[type=file]", str(photo))
        page.wait_for_function(
            f"document.querySelectorAll('#attention-maps img').length >= {PANELS} && "
            "[...document.querySelectorAll('#attention-maps img')].every(img => img.complete && img.naturalWidth > 0)",
            timeout=180_000,
        )
        shown = {
            head: [(m.get_attribute("aria-label"), float(m.get_attribute("value")))
                   for m in page.locator(f"#head-{head} meter").all()]  # fmt: skip
            for head in [*HEADS, "teacher"]
        }
        shown["agreement"] = page.inner_text("#agreement")
        shown["panels"] = page.locator("#attention-maps img").count()
        if screenshot:
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return shown


def predict(model: Path, photo: Path, capsys) -> list[tuple[str, float]]:
    """`hf-deit predict MODEL PHOTO --top-k 5` -> [(label, probability)], from its printed lines."""
    from hf_deit.cli import main

    capsys.readouterr()
    assert main(["predict", str(model), str(photo), "--top-k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    return [(label, float(score)) for score, label in (line.split(maxsplit=1) for line in lines)]


def with_fusion(model: Path, fusion: str, folder: Path) -> Path:
    """A copy of the model whose `logits` are one head alone: `hf-deit predict` on it gives that head's top-5."""
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "fusion": fusion}))
    return folder


def test_the_page_shows_what_hf_deit_predict_says(browser_ready, tiny_student, imagenet_photos, tmp_path, capsys):
    photo = imagenet_photos[0][0]
    with serve_app(tiny_student) as url:
        shown = show_in_browser(url, photo, screenshot=tmp_path / "page.png")
    assert shown["panels"] == PANELS and (tmp_path / "page.png").stat().st_size > 0
    assert shown["teacher"] == []  # no teacher given, none shown
    models = {"fused": tiny_student, "cls": with_fusion(tiny_student, "cls", tmp_path / "cls"),
              "distillation": with_fusion(tiny_student, "distillation", tmp_path / "distillation")}  # fmt: skip
    for head, model in models.items():
        expected = predict(model, photo, capsys)
        assert [label for label, _ in shown[head]] == [label for label, _ in expected], head
        # predict prints three decimals; the page holds the probabilities themselves
        assert [p for _, p in shown[head]] == pytest.approx([p for _, p in expected], abs=5e-4 + 1e-6), head
    assert "disagree" in shown["agreement"] and shown["cls"][0][0] in shown["agreement"]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Screenshot of `hf-deit app MODEL` with PHOTO uploaded.")
    parser.add_argument("model")
    parser.add_argument("photo")
    parser.add_argument("output")
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--examples", default=None)
    args = parser.parse_args()
    options = [*(["--teacher", args.teacher] if args.teacher else []),
               *(["--examples", args.examples] if args.examples else [])]  # fmt: skip
    if args.model == "tiny":
        import tempfile

        from conftest import save_tiny_student

        args.model = str(save_tiny_student(Path(tempfile.mkdtemp()) / "tiny_student"))
    with serve_app(args.model, *options) as page_url:
        print(json.dumps(show_in_browser(page_url, args.photo, screenshot=args.output), indent=1))
    from PIL import Image

    Image.open(args.output).convert("RGB").quantize(colors=256).save(args.output, optimize=True)  # docs-sized PNG

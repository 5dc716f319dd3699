"""Data files by URL (`--train_files` / `--validation_files`): parquet shards written by `hf-deit shard` from real
photos, served over HTTP on 127.0.0.1 by a server that fails requests (503s, bodies cut short). Start-up failures
are retried (hf_deit.data.remote), a lasting one names the URL and its HTTP status, and a tiny training from the
URLs ends with the weights of the same training from the local files. The tests run with HF_HUB_OFFLINE=1
(conftest): plain http is fetched all the same.
"""

from __future__ import annotations

import collections
import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import hf_deit.data.remote as remote
from hf_deit.data import DataArguments, build_datasets, load_image_dataset, load_image_files

SCRIPT = Path(__file__).parent / "scripts" / "train_images.py"
ROOT = Path(__file__).resolve().parents[1]


class FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; the first `fail_first` requests of each path get a 503 (then the `fail_later` after them,
    once `fail_later_after` more have been answered), and with `cut_downloads` the first whole-file GET (no Range
    header: a download, not a streaming read) of each file sends half its body."""

    fail_first = 0
    fail_later = 0
    fail_later_after = 0
    cut_downloads = False
    requests: collections.Counter
    cut: set

    def _failed(self) -> bool:
        self.requests[self.path] += 1
        count, later = self.requests[self.path], self.fail_first + self.fail_later_after
        if count <= self.fail_first or later < count <= later + self.fail_later:
            self.send_error(503, "Service Unavailable")
            return True
        return False

    def do_HEAD(self) -> None:
        if not self._failed():
            super().do_HEAD()

    def do_GET(self) -> None:
        if self._failed():
            return
        whole = self.path.endswith(".parquet") and self.headers.get("Range") is None
        if self.cut_downloads and whole and self.path not in self.cut:
            self.cut.add(self.path)
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def shards(tmp_path_factory, imagenet_photos) -> Path:
    """16 training and 4 validation photos (64 px, 4 classes) as `hf-deit shard` parquet shards: 4 + 4 files."""
    from hf_deit.data import shard_dataset

    root = tmp_path_factory.mktemp("url_photos")
    for index, (path, _) in enumerate(imagenet_photos[:20]):
        target = root / "folder" / ("train" if index < 16 else "val") / f"class_{index % 4}"
        target.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").resize((64, 64), Image.BICUBIC).save(target / f"{index}.JPEG", quality=90)
    shard_dataset(root / "folder", root / "shards", num_shards=4, format="parquet")
    return root / "shards"


@pytest.fixture
def serve(shards):
    """serve(fail_first=0, cut_downloads=False) -> (base URL, per-path request counter); stopped after the test."""
    servers = []

    def start(fail_first: int = 0, cut_downloads: bool = False, fail_later: int = 0, fail_later_after: int = 0):
        handler = type("Handler", (FlakyHandler,), {"fail_first": fail_first, "cut_downloads": cut_downloads,
                                                    "fail_later": fail_later, "fail_later_after": fail_later_after,
                                                    "requests": collections.Counter(), "cut": set()})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(shards)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", handler.requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(remote, "RETRY_BASE_WAIT_S", 0.05)
    monkeypatch.setattr(remote, "RETRY_MAX_WAIT_S", 0.2)


def train_urls(base: str) -> list[str]:
    return [f"{base}/train-{i:05d}-of-00004.parquet" for i in range(4)]


def rows(dataset) -> list[tuple[bytes, int]]:
    return [(example["image"]["bytes"], example["label"]) for example in dataset]


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "map"])
def test_flaky_server_gives_the_local_rows(serve, shards, quick_retries, streaming, tmp_path):
    """Two 503s on the first requests of every file (fsspec's HEAD, then its GET fallback) and, for the map-style
    download, a body cut in half: retried at start-up; the rows equal the local shards'."""
    base, requests = serve(fail_first=2, cut_downloads=True)
    remote_rows = rows(load_image_files(train_urls(base), streaming=streaming, cache_dir=str(tmp_path)))
    local = load_image_dataset(str(shards), "train", streaming=streaming, cache_dir=str(tmp_path / "local"))
    assert remote_rows == rows(local) and len(remote_rows) == 16
    assert all(requests[f"/train-{i:05d}-of-00004.parquet"] > 2 for i in range(4))


def test_a_stream_survives_503s_on_files_it_opens_after_start_up(serve, shards, quick_retries):
    """hf_deit's start-up lookup is each file's first request (a HEAD); the next two (datasets opening the file while
    it streams: fsspec's HEAD for the size, then its GET fallback) get 503s, which fsspec alone reads as "not found".
    Retried by the stream's http client: the rows equal the local shards'."""
    base, requests = serve(fail_later=2, fail_later_after=1)
    remote_rows = rows(load_image_files(train_urls(base), streaming=True))
    assert remote_rows == rows(load_image_dataset(str(shards), "train", streaming=True)) and len(remote_rows) == 16
    assert all(requests[f"/train-{i:05d}-of-00004.parquet"] > 3 for i in range(4))  # the 503s were served


def test_a_glob_on_a_listing_server_and_stream_size_from_footers(serve, quick_retries):
    base, _ = serve(fail_first=2)
    data_args = DataArguments(train_files=[f"{base}/train-*.parquet"], validation_files=[f"{base}/validation-*"],
                              streaming=True, image_size=32)
    prepared = build_datasets(data_args)
    assert prepared.label_names == ["class_0", "class_1", "class_2", "class_3"]
    assert prepared.train_dataset.info.splits["train"].num_examples == 16  # read from the 4 parquet footers
    assert sum(1 for _ in prepared.eval_dataset) == 4


def test_recipe_counts_the_training_files_at_urls(serve, quick_retries):
    """`hf-deit recipe --train_files URLs` plans from the rows in the parquet footers (16), as the run counts them."""
    from hf_deit.distillation.recipe_cli import recipe_report

    base, _ = serve(fail_first=2)
    flags = ["--train_files", *train_urls(base), "--world_size", "1", "--per_device_train_batch_size", "4"]
    assert re.search(r"^Training images: .*train-00000-of-00004.parquet \(\+3 more\) \(parquet footers\)\.$",
                     recipe_report(flags), flags=re.MULTILINE)
    assert "for 16 training images" in recipe_report(flags)
    capped = recipe_report([*flags, "--max_train_samples", "10"])
    assert "for 10 training images" in capped and "capped by --max_train_samples" in capped


def test_a_lasting_503_names_the_url_and_status_after_bounded_retries(serve, quick_retries):
    base, requests = serve(fail_first=10**6)
    url = train_urls(base)[0]
    with pytest.raises(ConnectionError) as error:
        load_image_files([url], streaming=True)
    message = str(error.value)
    assert url in message and "HTTP 503" in message and f"{remote.RETRY_TRIES} tries" in message
    assert "Unable to find" not in message
    assert requests["/train-00000-of-00004.parquet"] == 2 * remote.RETRY_TRIES  # HEAD + GET fallback per try


def test_a_missing_file_is_not_retried(serve, quick_retries):
    base, requests = serve()
    with pytest.raises(FileNotFoundError, match="HTTP 404"):
        load_image_files([f"{base}/nope.parquet"], streaming=True)
    assert requests["/nope.parquet"] == 2  # fsspec's HEAD and GET, once


def test_a_url_as_dataset_name_points_at_train_files():
    with pytest.raises(ValueError, match="--train_files"):
        DataArguments(dataset_name="http://127.0.0.1:1/train-00000-of-00004.parquet")


def test_train_files_without_validation_files_do_not_fall_back_to_the_hub(shards):
    data_args = DataArguments(train_files=[str(shards / "train-*.parquet")], image_size=32)
    with pytest.raises(ValueError, match="--validation_files"):
        build_datasets(data_args)


def start(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(out / "cache")}
    command = [sys.executable, str(SCRIPT), str(data), str(out), "--max-steps", "6", "--save-steps", "100", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_training_from_a_flaky_http_server_equals_training_from_local_files(serve, shards, tmp_path):
    """The full default recipe (train_images.py), 6 steps, streamed from the URLs (2 x 503 on the first requests of
    every file, retried after 1 s) and from the local files: the same weights. (Map-style data from URLs is the same
    rows as from the local files, test_flaky_server_gives_the_local_rows[map]; two more trainings cost a minute.)"""
    base, requests = serve(fail_first=2, cut_downloads=True)
    local = [str(path) for path in sorted(shards.glob("train-*.parquet"))]
    runs = {source: start(shards, tmp_path / source, "--stream", "--train-files", *files)
            for source, files in (("local", local), ("http", train_urls(base)))}
    for process in runs.values():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    a, b = (load_file(tmp_path / source / "weights.safetensors") for source in ("local", "http"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(requests[f"/train-{i:05d}-of-00004.parquet"] > 2 for i in range(4))  # the 503s were served

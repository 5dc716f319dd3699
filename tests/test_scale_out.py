"""Two ranks (torchrun --standalone, gloo, CPU) without surprises (issue 25):

  * a launch killed -9 as a whole (torchrun and every rank, as a pre-empted node) after a checkpoint inside the second
    epoch resumes to the uninterrupted run's weights bit for bit, map-style and streamed;
  * the final evaluation of a stream whose shards split unevenly between the ranks finishes, with the metrics of one
    process evaluating the same model.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPTS = Path(__file__).parent / "scripts"
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TIMEOUT = 300  # seconds: a hang (ranks waiting on each other) fails the test instead of blocking it


def launch(script: str, out: Path, *extra: str, ranks: int = 2) -> subprocess.Popen:
    """torchrun in a session of its own (its ranks start their own sessions: torchrun's SubprocessHandler)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               str(SCRIPTS / script), str(out), *extra]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(process: subprocess.Popen) -> int:
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"{process.args[-2:]} still running after {TIMEOUT} s: ranks waiting on each other?")
    assert process.returncode in (0, -signal.SIGKILL), stderr[-4000:]
    return process.returncode


def kill_when_paused(process: subprocess.Popen, out: Path, ranks: int = 2) -> None:
    """Wait until every rank has paused (tests/scripts/train_tiny.py --pause-at-step), then SIGKILL them and torchrun."""
    markers = [out / f"paused_rank{rank}" for rank in range(ranks)]
    deadline = time.monotonic() + TIMEOUT
    while not all(marker.exists() for marker in markers):
        if process.poll() is not None:
            raise AssertionError(f"the run ended before pausing: {process.stderr.read()[-4000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("the ranks did not reach the pause step")
        time.sleep(0.2)
    for marker in markers:
        os.kill(int(marker.read_text()), signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    assert finish(process) == -signal.SIGKILL


# 16 examples, 2 per rank per step: 4 steps per epoch (map-style; a stream's 4 shards give each rank a pass of 4
# batches). Checkpoints every 3 steps; the launch is killed after step 7 and resumes from checkpoint-6, two batches
# into the second epoch; 10 steps in all.
@pytest.mark.parametrize(
    "extra",
    [
        ("--dataset", "map"),  # the Trainer's random order (epoch-seeded) and Mixup/CutMix
        ("--dataset", "map", "--repeated-aug", "3"),  # the paper's repeated-augmentation order
        ("--dataset", "stream", "--mixup", "0"),  # as tests/test_resume.py: streams are asserted exact without Mixup
    ],
    ids=["map", "map-repeated-aug", "stream"],
)
def test_two_ranks_killed_inside_the_second_epoch_resume_bit_exact(tmp_path, extra):
    full, killed = tmp_path / "full", tmp_path / "killed"
    uninterrupted = launch("train_tiny.py", full, *extra)
    kill_when_paused(launch("train_tiny.py", killed, *extra, "--pause-at-step", "7"), killed)
    assert finish(uninterrupted) == 0
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert finish(launch("train_tiny.py", killed, *extra, "--resume")) == 0
    for rank in (0, 1):
        a = load_file(full / f"weights_rank{rank}.safetensors")
        b = load_file(killed / f"weights_rank{rank}.safetensors")
        assert a.keys() == b.keys()
        different = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
        assert not different, (rank, different)
    start = load_file(killed / "checkpoint-6" / "model.safetensors")
    assert any(not torch.equal(start[k], b[k]) for k in start)  # the resumed run did train


def test_final_evaluation_of_an_unevenly_sharded_stream_on_two_ranks_equals_one_process(tmp_path):
    """13 eval examples in 3 shards (5/4/4): split by whole shards, rank 0 would run 9 batches and rank 1 4, and rank 0
    would wait in the metrics' all_gather for ever. Dispatched (rank 0 reads, the last batch is padded and the padding
    dropped by gather_for_metrics), both ranks finish with one process' metrics on the same weights."""
    assert finish(launch("eval_stream.py", tmp_path)) == 0  # 2 ranks: 2 training steps, then the final evaluation
    command = [sys.executable, str(SCRIPTS / "eval_stream.py"), str(tmp_path), "--weights", str(tmp_path / "final")]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    two, one = (json.loads((tmp_path / f"metrics_{n}.json").read_text()) for n in (2, 1))
    accuracy = [key for key in one if key.endswith(("_top1", "_top5"))]
    assert accuracy and {key: two[key] for key in accuracy} == {key: one[key] for key in accuracy}
    # Evaluation batches of 1: every example's loss is computed alone on either side, so the mean is over the same 13
    # float32 values; 1e-6 relative leaves room for a different summation order only. (transformers weights each
    # batch's mean loss by --per_device_eval_batch_size, so with larger batches a partial last batch is weighted
    # otherwise on 1 and on 2 ranks; the accuracies stay exact.)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-6, abs=0)

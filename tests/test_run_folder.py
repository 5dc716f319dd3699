"""An output folder belongs to one run (hf_deit/distillation/run_folder.py): a lock, a run id in the folder and in
each checkpoint, --overwrite_output_dir; checkpoints complete or skipped; write errors that name the file; room and
writability checked before the image scan; every checkpoint file a resume reads checked (storage.py, checkpoints.py).
"""

import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_deit import DistillationTrainer
from hf_deit.distillation.checkpoints import CheckpointError
from hf_deit.distillation.run_folder import RunFolderError
from hf_deit.distillation.storage import OutputWriteError, checkpoint_bytes, parameter_bytes

from test_run_checks import distill_main, image_folder, no_scan, run_distill  # noqa: F401 (fixtures)
from test_trainer import args, dataset, student

ROOT = Path(__file__).resolve().parents[1]


def train(out: Path, resume=None, data=None, **overrides) -> DistillationTrainer:
    settings = {**dict(distillation_type="none", max_steps=3, save_strategy="steps", save_steps=1, save_total_limit=0),
                **overrides}
    trainer = DistillationTrainer(model=student(), args=args(out, **settings), train_dataset=data or dataset())
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def trained_steps(source: Path | DistillationTrainer) -> list[int]:
    """The steps in the log history: trainer_state.json of a distill.py run, or a trainer's own state."""
    if isinstance(source, Path):
        history = json.loads((source / "trainer_state.json").read_text())["log_history"]
    else:
        history = source.state.log_history
    return [entry["step"] for entry in history if "loss" in entry]


def checkpoints(out: Path) -> list[str]:
    return sorted((p.name for p in out.glob("checkpoint-*")), key=lambda name: int(name.split("-")[1]))


# --- 1. one run per folder: the lock ----------------------------------------------------------------------------------
HOLDER = """
import sys, time
from hf_deit import DeiTTrainingArguments
from hf_deit.distillation.run_folder import claim_output_dir
claim_output_dir(DeiTTrainingArguments(output_dir=sys.argv[1], use_cpu=True, report_to="none"))
print("holding", flush=True)
time.sleep(300)
"""


def test_a_second_run_is_refused_while_one_writes_the_folder_and_a_dead_holder_is_taken_over(tmp_path, caplog):
    out, script = tmp_path / "out", tmp_path / "holder_script.py"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    holder = subprocess.Popen([sys.executable, str(script), str(out)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RunFolderError, match=rf"in use by another run: pid {holder.pid} .*holder_script.py"):
            train(out)
        assert not list(out.glob("checkpoint-*"))
    finally:
        holder.send_signal(signal.SIGKILL)  # as a killed job: its lock file stays behind
        holder.wait()
    with caplog.at_level(logging.WARNING, logger="hf_deit.distillation.run_folder"):
        train(out)
    assert f"taking over the lock left by pid {holder.pid}" in caplog.text
    assert checkpoints(out) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


# --- 1. one run per folder: finished folders, --overwrite_output_dir, resume ------------------------------------------
def test_a_finished_folder_is_refused_unless_resumed_or_overwritten(distill_main, monkeypatch, tmp_path):
    """The issue's scenario: a rerun with a smaller --max_steps left the old run's later checkpoints for
    --resume_from_checkpoint True to continue."""
    data, out = image_folder(tmp_path / "data"), tmp_path / "out"
    common = ["--dataset_name", str(data), "--distillation_type", "none", "--save_steps", "1", "--logging_steps", "1",
              "--output_dir", str(out)]
    run_distill(distill_main, monkeypatch, *common, "--max_steps", "4")
    (out / "notes.txt").write_text("mine")
    final = (out / "model.safetensors").read_bytes()
    refused = "finished at step 4.*--resume_from_checkpoint True.*--overwrite_output_dir"
    with pytest.raises(RunFolderError, match=refused):
        run_distill(distill_main, monkeypatch, *common, "--max_steps", "2")
    assert (out / "model.safetensors").read_bytes() == final and checkpoints(out)[-1] == "checkpoint-4"

    run_distill(distill_main, monkeypatch, *common, "--max_steps", "2", "--overwrite_output_dir")
    assert checkpoints(out) == ["checkpoint-1", "checkpoint-2"] and (out / "notes.txt").read_text() == "mine"
    run_distill(distill_main, monkeypatch, *common, "--max_steps", "3", "--resume_from_checkpoint", "True")
    assert trained_steps(out) == [1, 2, 3]  # continued the new run from its checkpoint-2, not the old checkpoint-4


def test_resume_true_picks_only_checkpoints_of_the_folders_run(tmp_path, caplog):
    ours, other = tmp_path / "ours", tmp_path / "other"
    first = train(ours, max_steps=2)
    train(other, max_steps=3, seed=1)
    shutil.copytree(other / "checkpoint-3", ours / "checkpoint-3")  # newer, but another run's
    with caplog.at_level(logging.WARNING, logger="hf_deit.distillation.run_folder"):
        resumed = train(ours, resume="True", max_steps=3)
    assert "checkpoint-3" in caplog.text and "other runs" in caplog.text
    # our history up to step 2, then step 3 trained: not the other run's checkpoint-3
    assert resumed.state.log_history[:2] == first.state.log_history[:2] and trained_steps(resumed) == [1, 2, 3]


# --- 2. checkpoints complete or skipped -----------------------------------------------------------------------------
def test_resume_true_skips_an_incomplete_checkpoint_and_names_it(tmp_path, caplog):
    out = tmp_path / "out"
    train(out)
    # What a kill while writing checkpoint-3 leaves: weights written, optimizer.pt cut short, no trainer state.
    newest = out / "checkpoint-3"
    (newest / "hf_deit_checkpoint.json").unlink(missing_ok=True)
    (newest / "trainer_state.json").unlink()
    (newest / "optimizer.pt").write_bytes((newest / "optimizer.pt").read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="hf_deit.distillation.run_folder"):
        resumed = train(out, resume="True")
    assert "checkpoint-3 is incomplete" in caplog.text and "from " + str(out / "checkpoint-2") in caplog.text
    assert (out / "_incomplete-checkpoint-3").is_dir() and resumed.state.global_step == 3
    assert (out / "checkpoint-3" / "hf_deit_checkpoint.json").is_file()  # written again, complete


@pytest.fixture
def full_disk_at_second_optimizer_save(monkeypatch):
    """torch.save of the second optimizer.pt fails as torch's writer does on a full disk (half the file written, a
    RuntimeError that names neither the cause nor the file), and the file system then reports no free space."""
    real_save, real_usage, calls = torch.save, shutil.disk_usage, []

    def save(obj, path, *args, **kwargs):
        if str(path).endswith("optimizer.pt"):
            calls.append(path)
            if len(calls) == 2:
                real_save(obj, path, *args, **kwargs)
                Path(path).write_bytes(Path(path).read_bytes()[:64])
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real_save(obj, path, *args, **kwargs)

    def usage(path):
        total, used, free = real_usage(path)
        return type(real_usage(path))(total, used, 0 if len(calls) >= 2 else free)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", usage)


def test_disk_full_while_saving_names_the_file_and_resume_falls_back(tmp_path, monkeypatch,
                                                                     full_disk_at_second_optimizer_save):
    out = tmp_path / "out"
    with pytest.raises(OutputWriteError) as raised:
        train(out)
    message = str(raised.value)
    assert "checkpoint-2" in message and "no space left on device" in message
    assert str(out / "checkpoint-2" / "optimizer.pt") in message
    assert "newest complete checkpoint is checkpoint-1" in message
    assert checkpoints(out) == ["checkpoint-1"]  # the incomplete one was removed
    monkeypatch.undo()  # room again
    assert trained_steps(train(out, resume="True")) == [1, 2, 3]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk (root only; skipped where mounts are not allowed, e.g. most containers)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and the right to mount")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_real_full_disk(small_disk):
    """About 320 KB a checkpoint of the tiny student: the third one does not fit in 1 MiB."""
    out = small_disk / "run"
    with pytest.raises(OutputWriteError, match=r"Writing checkpoint-\d failed: no space left on device.*the file being "
                                               rf"written: {out}/checkpoint-\d/"):
        train(out, max_steps=6)
    complete = checkpoints(out)
    assert complete and all((out / name / "hf_deit_checkpoint.json").is_file() for name in complete)
    with pytest.raises(OutputWriteError, match="free, but one checkpoint"):  # still full: refused before training
        train(out, resume="True", max_steps=6)
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    resumed = train(out, resume="True", max_steps=6)
    assert trained_steps(resumed) == list(range(1, 7))


def test_a_failed_final_save_names_the_file(tmp_path, monkeypatch):
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    trainer = DistillationTrainer(model=student(), args=args(tmp_path, distillation_type="none"))
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    with pytest.raises(OutputWriteError, match=f"Writing the model to {tmp_path / 'final'} failed: no space left"):
        trainer.save_model(str(tmp_path / "final"))


# --- 2. room and writability before the image scan ------------------------------------------------------------------
def test_unwritable_output_dir_is_an_error_before_the_scan(distill_main, monkeypatch, tmp_path, no_scan):
    data, blocker = image_folder(tmp_path / "data"), tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputWriteError, match=f"--output_dir {blocker / 'out'} cannot be written"):
        run_distill(distill_main, monkeypatch, "--dataset_name", str(data), "--distillation_type", "none",
                    "--output_dir", str(blocker / "out"))


def test_too_little_room_for_a_checkpoint_is_an_error_before_the_scan(distill_main, monkeypatch, tmp_path, no_scan):
    data = image_folder(tmp_path / "data")
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: type(real_usage(path))(10**6, 10**6 - 5000, 5000))
    with pytest.raises(OutputWriteError, match=r"has 4.9 KiB free, but one checkpoint \(weights \+ AdamW moments \+ EMA\)"):
        run_distill(distill_main, monkeypatch, "--dataset_name", str(data), "--distillation_type", "none",
                    "--output_dir", str(tmp_path / "out"))


def test_the_checkpoint_estimate_covers_a_real_checkpoint(tmp_path):
    trainer = train(tmp_path / "out", max_steps=1)
    written = sum(f.stat().st_size for f in (tmp_path / "out" / "checkpoint-1").iterdir())
    estimate = checkpoint_bytes(parameter_bytes(trainer.model), ema=trainer.args.use_model_ema)
    assert written <= estimate < 2 * written
    assert parameter_bytes(trainer.model.config) == parameter_bytes(trainer.model)  # built on the meta device


# --- 3. every checkpoint file a resume reads is checked -------------------------------------------------------------
def nan_into_safetensors(path: Path) -> None:
    """NaN bytes over the first float32 value of the first float32 tensor (the header and size stay valid)."""
    raw = bytearray(path.read_bytes())
    header_length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8: 8 + header_length])
    start = next(entry["data_offsets"][0] for name, entry in header.items()
                 if name != "__metadata__" and entry["dtype"] == "F32")
    raw[8 + header_length + start: 8 + header_length + start + 4] = struct.pack("<f", float("nan"))
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def stream_checkpoint(tmp_path_factory):
    """checkpoint-1 of a run on a stream (so it holds stream_state.json)."""
    out = tmp_path_factory.mktemp("stream") / "out"
    train(out, max_steps=2, data=dataset().to_iterable_dataset(num_shards=2))
    assert (out / "checkpoint-1" / "stream_state.json").is_file()
    return out / "checkpoint-1"


@pytest.mark.parametrize("marker", [True, False], ids=["marked", "unmarked"])
@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda c: (c / "config.json").write_text('{"model_type": "deit",'), "config.json"),
        (lambda c: (c / "stream_state.json").write_text("garbage"), "stream_state.json"),
        (lambda c: (c / "stream_state.json").write_text('{"epoch": "one"}'), "stream_state.json"),
        (lambda c: nan_into_safetensors(c / "model.safetensors"), "model.safetensors"),
    ],
    ids=["config.json", "stream_state.json", "stream_state.json keys", "NaN weights"],
)
def test_a_damaged_checkpoint_file_is_named_before_loading(tmp_path, stream_checkpoint, damage, named, marker):
    """With the completion marker, a file whose size changed is named as such; without it (an older checkpoint, or a
    path given by hand), by what is wrong inside. NaN bytes keep the size: named as non-finite either way."""
    checkpoint = tmp_path / "run" / "checkpoint-1"
    shutil.copytree(stream_checkpoint, checkpoint)
    if not marker:
        (checkpoint / "hf_deit_checkpoint.json").unlink(missing_ok=True)
    damage(checkpoint)
    problem = "non-finite" if named == "model.safetensors" else ("truncated or replaced" if marker else "corrupt")
    with pytest.raises(CheckpointError, match=rf"{checkpoint / named} .*{problem}"):
        train(tmp_path / "other", resume=str(checkpoint), max_steps=2, data=dataset().to_iterable_dataset(num_shards=2))


def test_a_safetensors_write_that_failed_is_named_not_the_newest_file(tmp_path):
    """safetensors deletes a weights file it could not finish: the newest file (trainer_state.json written after the
    model) is not the one that failed; the missing weights file is (found on a full tmpfs: the EMA save failed)."""
    from safetensors import SafetensorError

    from hf_deit.distillation.storage import describe_write_error
    error = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / "trainer_state.json").write_text("{}")
    detail = describe_write_error(error, str(tmp_path), 10)
    assert "no space left on device" in detail and detail.count("model_ema.safetensors") == 1
    (tmp_path / "model.safetensors").unlink()
    assert str(tmp_path / "model.safetensors") in describe_write_error(error, str(tmp_path), 10)
    assert str(tmp_path / "trainer_state.json") in describe_write_error(OSError(28, "No space"), str(tmp_path), 10)

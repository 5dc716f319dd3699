"""The GPU benchmark script runs end to end: `bash benchmarks/gpu_check.sh --dry-run --stages all` (every stage on CPU,
tiny models; a few minutes on a busy 2-core machine: each stage starts its own Python), and each stage stops at its
own time cut without stopping the others."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_check import STAGES

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_every_stage(tmp_path):
    out = tmp_path / "figures.md"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--stages", "all",
                             "--out", str(out)], capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    headers = re.findall(r"^## \d+\. .* \[(\w+)\] \(\d+ s, (\w+)", text, flags=re.MULTILINE)
    assert headers == [(stage.name, "finished") for stage in STAGES], text[-3000:]
    rows = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    distill = [row for row in rows if row["bench"] == "distill"]
    assert {row["implementation"] for row in distill} == {"hf_deit", "timm TokenDistillationTask"}
    assert {row["variant"] for row in distill} == {"fp32 eager", "fp32 compiled (both)"}
    assert all(row["images_per_s"] > 0 and row["tflops_per_step"] > 0 for row in distill)
    loader = [row for row in rows if row["bench"] == "loader"]
    assert {row["batches"] for row in loader} == {"float32", "uint8", "device"}
    # the loader is compared with hf_deit's latest distillation step (stage 3, compiled)
    step = [row for row in distill if row["implementation"] == "hf_deit" and row["teacher"] != "none"][-1]
    assert all(abs(row["step_images_per_s"] - step["images_per_s"]) < 0.1 for row in loader)
    (overhead,) = [row for row in rows if row["bench"] == "overhead"]
    assert set(overhead["syncs"]) == set(overhead["ms_per_step"]) == {"ours", "bare distill", "hf Trainer, filter off",
                                                                     "hf Trainer, filter on", "bare plain"}
    assert overhead["syncs"]["bare plain"]["per_step"] == 0  # a plain loop makes none: the counter counts only syncs
    table = json.loads((tmp_path / "gpu_table" / "results_cifar10.json").read_text())
    assert {run["name"] for run in table["runs"]} >= {"hard_token", "timm_hard_token", "hard_token_cached"}


def test_each_stage_stops_at_its_own_cut(tmp_path):
    out = tmp_path / "figures.md"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--stages",
                             "loader", "syncs", "--cut-s", "2", "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    headers = re.findall(r"^## \d+\. .* \[(\w+)\] \(\d+ s, (.*)\)$", out.read_text(), flags=re.MULTILINE)
    # the first stage's cut did not stop the second; nothing else ran
    assert headers == [("loader", "cut at its 2 s limit"), ("syncs", "cut at its 2 s limit")]


def test_the_gpu_script_installs_what_pyproject_requires():
    """gpu_check.sh installs what a bare GPU image lacks; its requirements are pyproject's, not an older copy."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    wanted = re.findall(r'"[\w.]+": "([^"]+)"', script[script.index("wanted = {"):])
    assert wanted, "no install list found in gpu_check.sh"
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        ours = [dep for dep in deps if re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower() == name]
        assert ours == [requirement], f"gpu_check.sh wants {requirement!r}, pyproject.toml says {ours}"

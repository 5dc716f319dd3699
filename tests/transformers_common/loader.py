"""Fetch transformers' common model tests for the installed transformers version (see README.md in this folder)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import transformers

HERE = Path(__file__).resolve().parent
PACKAGE = "transformers_common_tests"  # the assembled package's import name, inside the cache folder
UPSTREAM_FILES = ("tests/test_modeling_common.py", "tests/test_configuration_common.py")
STAND_INS = ("exporters/test_export.py", "generation/test_utils.py", "utils/test_configuration_utils.py")


class BatteryUnavailable(RuntimeError):
    """The transformers sdist could not be fetched or lacks the expected files."""


def cache_root() -> Path:
    default = Path.home() / ".cache" / "hf_deit" / "transformers_tests"
    return Path(os.environ.get("HF_DEIT_TRANSFORMERS_TESTS_CACHE", default)) / transformers.__version__


def _download_sdist(directory: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
        f"transformers=={transformers.__version__}", "-d", str(directory),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BatteryUnavailable(f"`{' '.join(command)}` did not finish: {error}") from error
    archives = list(directory.glob("transformers-*.tar.gz"))
    if result.returncode != 0 or not archives:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BatteryUnavailable(f"`{' '.join(command)}` failed ({last})")
    return archives[0]


def _assemble(target: Path) -> None:
    """Extract the upstream files and add our stand-ins, as one package, atomically (parallel runs may race)."""
    staging = Path(tempfile.mkdtemp(prefix="staging-", dir=target.parent))
    try:
        archive = _download_sdist(staging)
        package = staging / PACKAGE
        package.mkdir()
        with tarfile.open(archive) as tar:
            members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers()}
            for name in UPSTREAM_FILES:
                if name not in members:
                    raise BatteryUnavailable(f"{archive.name} has no {name}")
                data = tar.extractfile(members[name]).read()
                (package / Path(name).name).write_bytes(data)
        (package / "__init__.py").write_text("")
        for name in STAND_INS:
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            (package / Path(name).parent / "__init__.py").touch()
            shutil.copy(HERE / name, package / name)
        try:
            package.rename(target)
        except OSError:  # another process finished first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_battery() -> tuple[ModuleType, ModuleType]:
    """(test_modeling_common, test_configuration_common) modules of the installed transformers version."""
    root = cache_root()
    target = root / PACKAGE
    if not all((target / Path(name).name).is_file() for name in UPSTREAM_FILES):
        root.mkdir(parents=True, exist_ok=True)
        _assemble(target)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling, configuration

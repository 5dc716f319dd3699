"""The docs point at files that exist: relative Markdown links, symlinks, and the repository paths they name.

A move (the package layout changed once already) otherwise leaves dangling links and a broken
`model_cards/deit_model_card_template.md` symlink that no other test reads.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)
# Paths of this repository named in prose or code blocks (not transformers' tests/... paths, hence no tests/).
OUR_PATH = re.compile(r"\b(?:hf_deit|examples|experiments|benchmarks|docs|model_cards)/[\w/.-]+\.(?:py|md|sh|png|json|jinja)")


def tracked(pattern: str) -> list[Path]:
    try:
        listing = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"needs a git checkout to list the tracked files ({error})")
    return [REPO / name for name in listing.stdout.split()]


def pages() -> list[Path]:
    return [page for page in tracked("*.md") if page.exists()]  # a dangling one fails test_no_dangling_symlinks


def test_relative_markdown_links_resolve():
    broken = []
    for page in pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold commands, not links
        for target in LINK.findall(text):
            path = target.split("#")[0]
            if path and not re.match(r"[a-z]+:", path) and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, f"links to missing files: {broken}"


def test_named_repository_paths_exist():
    missing = sorted(
        {f"{page.relative_to(REPO)}: {name}" for page in pages() for name in OUR_PATH.findall(page.read_text())
         if not (REPO / name).exists()}
    )
    assert not missing, f"docs name files that do not exist: {missing}"


def test_no_dangling_symlinks():
    dangling = [str(path.relative_to(REPO)) for path in tracked("*") if path.is_symlink() and not path.exists()]
    assert not dangling, f"symlinks to missing files: {dangling}"

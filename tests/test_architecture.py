"""The layout's rules, checked on the source: which package may import which, no import cycles, short functions.

docs/architecture.md states the rules; this file is what keeps them true. Everything is read with `ast`, nothing
is imported, so a violation is reported even in code that no other test reaches.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_deit"
MAX_FUNCTION_LINES = 60
# A function may be longer when the line above its `def` (or its decorators) says why, starting with this marker.
LONG_FUNCTION_MARKER = "# long function:"

# package -> the packages of ours it may import (besides itself). hf_deit.models travels as remote code with every
# saved model folder, so it imports nothing else of ours; hf_deit.sources (the one "local path or Hub id" rule) imports
# nothing of ours either, so that every layer but the model's code can use it; inference.py is the inference path
# and imports nothing of the training package; the other top-level modules (cli, analysis) and the package root may
# import anything.
ALLOWED_IMPORTS = {
    "hf_deit.models": set(),
    "hf_deit.app": set(),  # `hf-deit space` copies it as a Space's app.py, where hf_deit is not installed
    "hf_deit.sources": set(),
    "hf_deit.data": {"hf_deit.models", "hf_deit.sources"},
    "hf_deit.hub": {"hf_deit.models", "hf_deit.sources", "hf_deit"},
    "hf_deit.distillation": {"hf_deit.models", "hf_deit.data", "hf_deit.hub", "hf_deit.sources", "hf_deit"},
    "hf_deit.inference": {"hf_deit.models", "hf_deit.data", "hf_deit.hub", "hf_deit.sources", "hf_deit"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py")) if "evaluate_metrics" not in path.parts}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours that `name` imports anywhere in its file (function-level imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(candidate for candidate in candidates if candidate in known)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = sources()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def package_of(module: str) -> str:
    for package in ALLOWED_IMPORTS:
        if module == package or module.startswith(package + "."):
            return package
    return module


@pytest.mark.parametrize("package", sorted(ALLOWED_IMPORTS))
def test_packages_import_only_what_the_layout_allows(package):
    wrong = []
    for module, targets in import_graph().items():
        if package_of(module) != package:
            continue
        for target in sorted(targets):
            target_package = package_of(target)
            if target_package != package and target_package not in ALLOWED_IMPORTS[package]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, f"{package} may import only {sorted(ALLOWED_IMPORTS[package]) or 'nothing of ours'}: {wrong}"


# What a Space running hf_deit/app.py has: its requirements.txt (hf_deit/space.py) plus the Space's gradio.
SPACE_PACKAGES = {"torch", "numpy", "PIL", "transformers", "gradio"}


def test_the_app_imports_only_what_a_space_has():
    import sys

    tree = ast.parse((PACKAGE / "app.py").read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import)]
    roots = {alias.name.split(".")[0] for node in imports for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module}  # fmt: skip
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree)), "relative import"
    assert roots - sys.stdlib_module_names - {"__future__"} <= SPACE_PACKAGES, roots


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between modules (depth-first search), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_modules():
    # A package's __init__ re-exporting its modules is not a cycle of design: leave package roots out.
    graph = {module: targets for module, targets in import_graph().items()}
    packages = {module_name(path) for path in PACKAGE.rglob("__init__.py")}
    graph = {m: {t for t in ts if t not in packages} for m, ts in graph.items() if m not in packages}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def long_functions(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
        length = node.end_lineno - node.lineno + 1
        explained = first >= 2 and lines[first - 2].strip().startswith(LONG_FUNCTION_MARKER)
        if length > MAX_FUNCTION_LINES and not explained:
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_functions_are_short_or_say_why():
    found = [entry for path in sources().values() for entry in long_functions(path)]
    assert not found, (
        f"functions over {MAX_FUNCTION_LINES} lines (split them, or explain on the line above: "
        f"'{LONG_FUNCTION_MARKER} ...'): {found}"
    )


"""The docs point at files that exist: relative Markdown links, symlinks, and the repository paths they name.

A move (the package layout changed once already) otherwise leaves dangling links and a broken
`model_cards/deit_model_card_template.md` symlink that no other test reads.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import subprocess
from dataclasses import dataclass, field
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


# -- Named symbols, flags and columns ---------------------------------------------------------------------------------
# The rule, made to give no false alarm on today's docs without a long list of exceptions:
#  * flags: every `--flag` in an inline code span or a fenced block is an option of ours: a field of a dataclass our
#    code parses with HfArgumentParser (TrainingArguments' inherited ones included, in the spellings HfArgumentParser
#    adds: --x_y, --x-y, --no_x), an `add_argument("--x")` of our scripts and CLI, or a `--x)` case of our shell
#    scripts. Other tools' flags are listed in THIRD_PARTY_FLAGS.
#  * names: an inline code span that is a name, a dotted name, a call or an assignment (`a.b`, `f(...)`, `x=1`) is
#    checked part by part. Strictly: `hf_deit.a.B` and `stem.B` (a module of ours, a capitalised name) must be a
#    module and a name bound at its top level; `OurClass.member` a member of that class (or of its bases when all are
#    ours). Loosely, any other part that looks like one of our identifiers (snake_case with an underscore, CamelCase
#    with an inner capital; not ALL_CAPS, in docs mostly environment variables and placeholders) must appear in our
#    code as code: an identifier, attribute, keyword or a string that is a bare name (a column: "example_key").
#    Comments and docstrings do not count, so a name that survives only there is caught. Spans under another
#    library's module (`torch.x`, `timm.y`) are skipped; other libraries' names our code never uses are listed in
#    THIRD_PARTY_NAMES.
CODE_DIRS = ("hf_deit", "examples", "benchmarks", "experiments", "tests")  # names; flags: all but tests/
THIRD_PARTY_MODULES = {"torch", "torchvision", "transformers", "timm", "datasets", "evaluate", "accelerate",
                       "huggingface_hub", "PIL", "np", "nn", "math", "random", "os"}  # fmt: skip
THIRD_PARTY_NAMES = {
    "AcceleratedOptimizer", "sdpa_attention_forward", "total_flos",  # accelerate, transformers
    "q_proj", "k_proj", "v_proj", "fc_norm", "VisionTransformer",  # transformers' and timm's module names
    "DistributedSampler", "adjust_contrast",  # torch, torchvision
    "add_weight_decay", "no_weight_decay",  # the official DeiT code and timm
    "z_cls", "z_dist", "z_t",  # docs/method.md's notation for the logits
}  # fmt: skip
THIRD_PARTY_FLAGS = {
    "--help",  # every argparse parser
    "--cpu", "--multi_gpu", "--num_processes", "--num_machines", "--machine_rank", "--main_process_ip",
    "--main_process_port", "--mixed_precision",  # accelerate launch
    "--repo-type",  # hf upload
    "--nnodes", "--nproc_per_node", "--node_rank", "--rdzv_backend", "--rdzv_endpoint", "--rdzv_id",  # torchrun
}  # fmt: skip
FILE_EXTENSIONS = {"py", "md", "json", "jsonl", "txt", "tsv", "pth", "pt", "safetensors", "lock", "png", "sh", "tar",
                   "parquet", "whl", "jinja"}  # fmt: skip
INLINE_CODE = re.compile(r"`([^`\n]+)`")
FENCED = re.compile(r"```.*?```", flags=re.S)
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
NAME_SPAN = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\(.*\)|\s*=\s*[^=\s].*)?")
LOOKS_OURS = re.compile(r"[A-Za-z0-9]_[A-Za-z0-9]|^_[A-Za-z]|[a-z][A-Z]")
BARE_NAME = re.compile(r"[A-Za-z_]\w*")


@dataclass
class CodeIndex:
    """What our code defines and uses, read with `ast` (nothing is imported)."""

    names: set[str] = field(default_factory=set)  # identifiers, attributes, keywords, bare-name strings
    modules: dict[str, set[str]] = field(default_factory=dict)  # "hf_deit.data" -> the names it binds at top level
    members: dict[str, set[str]] = field(default_factory=dict)  # class -> its fields, methods, self.x attributes
    bases: dict[str, set[str]] = field(default_factory=dict)  # class -> its bases' names
    flags: set[str] = field(default_factory=set)


def _is_bare_name_string(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(BARE_NAME.fullmatch(node.value))


def _used_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Name, ast.Attribute, ast.arg, ast.keyword)):
            names.add(getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "arg", None) or "")
        elif isinstance(node, ast.alias):
            names.update(node.name.split(".") + [node.asname or ""])
        elif _is_bare_name_string(node):
            names.add(node.value)
    return names


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level, and the bare-name strings there (`__all__`, a lazy-import table)."""
    bound, pending = set(), list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            continue  # its body's names are not the module's
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif _is_bare_name_string(node):
            bound.add(node.value)
        pending.extend(ast.iter_child_nodes(node))
    return bound


def _class_members(node: ast.ClassDef) -> set[str]:
    members = set()
    for statement in node.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            members.add(statement.name)
        elif isinstance(statement, (ast.AnnAssign, ast.Assign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            members.update(target.id for target in targets if isinstance(target, ast.Name))
    for inner in ast.walk(node):  # self.x = ... in its methods
        if isinstance(inner, ast.Attribute) and isinstance(inner.ctx, ast.Store):
            members.update([inner.attr] if getattr(inner.value, "id", "") == "self" else [])
    return members


def _base_names(node: ast.ClassDef) -> set[str]:
    return {getattr(base, "id", None) or getattr(base, "attr", "?") for base in node.bases}


def _dataclass_fields(name: str, classes: dict[str, ast.ClassDef]) -> dict[str, bool]:
    """The fields of dataclass `name` and of its bases -> whether the field defaults to True."""
    node = classes.get(name)
    if node is None:
        return {}
    fields = {}
    for base in _base_names(node) - {name}:
        fields.update(_dataclass_fields(base, classes))
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            default = statement.value  # `= True`, or `= field(default=True, ...)`
            if isinstance(default, ast.Call):
                default = next((keyword.value for keyword in default.keywords if keyword.arg == "default"), None)
            fields[statement.target.id] = isinstance(default, ast.Constant) and default.value is True
    return fields


def _transformers_training_arguments() -> ast.ClassDef:
    """transformers' TrainingArguments, read from its source (importing transformers takes seconds)."""
    source = Path(importlib.util.find_spec("transformers").submodule_search_locations[0]) / "training_args.py"
    return next(node for node in ast.parse(source.read_text()).body
                if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments")  # fmt: skip


def _flags(trees: list[ast.AST], classes: dict[str, ast.ClassDef]) -> set[str]:
    """Our parsers' options: argparse's `add_argument("--x")`, and what HfArgumentParser makes of the fields of the
    dataclasses given to it: --x_y and --x-y, and --no_x_y / --no-x-y for a field defaulting to True."""
    flags, groups = set(), set()
    for node in (node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.Call)):
        function = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
        if function == "HfArgumentParser":
            groups.update(name.id for arg in node.args for name in ast.walk(arg) if isinstance(name, ast.Name))
        elif function == "add_argument":
            flags.update(a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--"))
    for group in groups:
        for name, defaults_true in _dataclass_fields(group, classes).items():
            for spelling in [name, f"no_{name}"] if defaults_true else [name]:
                flags |= {f"--{spelling}", f"--{spelling.replace('_', '-')}"}
    return flags


@functools.lru_cache(maxsize=1)
def code_index() -> CodeIndex:
    index, classes, flag_trees = CodeIndex(), {"TrainingArguments": _transformers_training_arguments()}, []
    for folder in CODE_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            index.names |= _used_names(tree)
            parts = path.relative_to(REPO).with_suffix("").parts
            index.modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = _top_level_names(tree)
            for node in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
                classes.setdefault(node.name, node)
                index.members.setdefault(node.name, set()).update(_class_members(node))
                index.bases.setdefault(node.name, set()).update(_base_names(node))
            flag_trees += [tree] if folder != "tests" else []
    index.flags = _flags(flag_trees, classes)
    for script in tracked("*.sh"):  # the `case` arms of our shell scripts' option loops: --out) ...
        index.flags.update(re.findall(r"^\s*(--[\w-]+)\)", script.read_text(), flags=re.M))
    return index


def _is_ours_by_name(part: str, index: CodeIndex) -> bool:
    """The loose rule: a part that looks like one of our identifiers appears in our code (or is listed as not ours)."""
    if not LOOKS_OURS.search(part) or part.isupper():
        return True
    return part in index.names or part in THIRD_PARTY_NAMES


def _is_member(cls: str, attr: str, index: CodeIndex) -> bool:
    if attr in index.members[cls]:
        return True
    bases = index.bases.get(cls, set()) - {cls}
    if any(base not in index.members for base in bases):  # a third-party base may define it: the loose rule
        return _is_ours_by_name(attr, index)
    return any(_is_member(base, attr, index) for base in bases)


def _modules_named(parts: list[str], index: CodeIndex) -> list[str]:
    """`hf_deit...`, or a module stem of ours before a capitalised name (`run_folder.RUN_OUTPUTS`); a lower-case
    `trainer.evaluate()` is a variable's method, left to the loose rule."""
    if parts[0] == "hf_deit":
        return ["hf_deit"]
    if len(parts) < 2 or not parts[1][:1].isupper():
        return []
    return [module for module in index.modules if module.rsplit(".", 1)[-1] == parts[0]]


def unknown_part(dotted: str, index: CodeIndex) -> str | None:
    """The first part of `dotted` (`name` or `a.b.c`) that the rule above does not find in our code, or None."""
    parts = dotted.split(".")
    if parts[0] in THIRD_PARTY_MODULES:
        return None
    modules = _modules_named(parts, index)
    if modules:  # strictly: a module of ours, then a name it binds
        parts = parts[1:]
        while len(modules) == 1 and parts and f"{modules[0]}.{parts[0]}" in index.modules:  # hf_deit.data.crop_record
            modules, parts = [f"{modules[0]}.{parts[0]}"], parts[1:]
        if parts and not any(parts[0] in index.modules[module] for module in modules):
            return parts[0]
    if len(parts) > 1 and parts[0] in index.members:  # strictly: a class of ours, then one of its members
        if not _is_member(parts[0], parts[1], index):
            return parts[1]
        parts = parts[2:]
    elif modules:
        parts = parts[1:]  # checked above
    return next((part for part in parts if not _is_ours_by_name(part, index)), None)


def unknown_names(text: str, index: CodeIndex) -> list[str]:
    """The inline code spans of `text` that name a symbol, field or column our code does not have."""
    unknown = []
    for span in INLINE_CODE.findall(FENCED.sub("", text)):
        match = NAME_SPAN.fullmatch(span.strip())
        if not match or match.group(1).rsplit(".", 1)[-1] in FILE_EXTENSIONS:  # config.json: a file, not a name
            continue
        part = unknown_part(match.group(1), index)
        if part is not None:
            unknown.append(f"{part} (in `{span}`)")
    return unknown


def unknown_flags(text: str, index: CodeIndex) -> list[str]:
    """The `--flags` in inline code spans and fenced blocks of `text` that no parser of ours (or listed tool) takes."""
    code = INLINE_CODE.findall(FENCED.sub("", text)) + FENCED.findall(text)
    return sorted({flag for span in code for flag in FLAG.findall(span)} - index.flags - THIRD_PARTY_FLAGS)


def doc_pages() -> list[Path]:
    return [page for page in pages() if page.parent == REPO / "docs" or page == REPO / "README.md"]


def test_docs_name_only_symbols_fields_and_columns_the_code_has():
    index = code_index()
    found = {page.relative_to(REPO).as_posix(): unknown_names(page.read_text(), index) for page in doc_pages()}
    unknown = {page: names for page, names in found.items() if names}
    assert not unknown, f"docs name symbols, fields or columns our code does not have: {unknown}"


def test_docs_name_only_flags_our_parsers_take():
    index = code_index()
    found = {page.relative_to(REPO).as_posix(): unknown_flags(page.read_text(), index) for page in doc_pages()}
    unknown = {page: names for page, names in found.items() if names}
    assert not unknown, f"docs name command-line flags that no parser of ours takes: {unknown}"


def test_the_checks_catch_a_renamed_column_a_made_up_flag_and_a_missing_member():
    """The old doc bug (`example_index`; the column is `example_key`) and made-up names are caught; real ones pass."""
    index = code_index()
    wrong = ("`example_index`, `--no_such_flag`, `hf_deit.data.no_such_function`, `DataArguments.no_such_field`, "
             "`--no_device_augment` (it defaults to False: HfArgumentParser adds no --no_ form), "
             "`run_folder.NO_SUCH_CONSTANT`, `DeiTSuchClass(x)`, `no_such_field=1`")  # fmt: skip
    assert unknown_names(wrong, index) == [
        "example_index (in `example_index`)", "no_such_function (in `hf_deit.data.no_such_function`)",
        "no_such_field (in `DataArguments.no_such_field`)", "NO_SUCH_CONSTANT (in `run_folder.NO_SUCH_CONSTANT`)",
        "DeiTSuchClass (in `DeiTSuchClass(x)`)", "no_such_field (in `no_such_field=1`)",
    ]  # fmt: skip
    assert unknown_flags(wrong + "\n```\npython examples/distill.py --no_such_flag_either\n```", index) == [
        "--no_device_augment", "--no_such_flag", "--no_such_flag_either"
    ]  # fmt: skip
    right = ("`example_key`, `crop_box`, `hf_deit.data.crop_record`, `hf_deit.DistillationTrainer`, "
             "`DataArguments.device_augment`, `run_folder.RUN_OUTPUTS`, `torch.no_such_thing`, `config.json`, "
             "`--device_augment`, `--no-validate-images`, `--no_validate_images`, `--fast-paths`, `--limit 570`\n"
             "```\nhf-deit recipe --world_size 8 --learning_rate 1e-3\n```")  # fmt: skip
    assert unknown_names(right, index) == [] and unknown_flags(right, index) == []

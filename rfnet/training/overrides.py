"""``--set section.key=value`` overrides of the typed config (torch-free).

Values are parsed as JSON when possible (``3``, ``0.5``, ``true``, ``null``, ``[64,128]``),
otherwise taken as a string, then checked against the type of the field they replace, so a
typo (``mask_head.poolng``) or a wrong type (``input.size=big``) fails with a message that
names the key instead of surfacing later inside the model.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rfnet.config import ModelConfig
from rfnet.errors import UsageError


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _coerce(key: str, old: Any, new: Any) -> Any:
    """Convert ``new`` to the type of ``old`` where that is unambiguous, else raise ValueError."""
    if old is None or new is None:
        return new  # Optional fields (e.g. grad_clip, max_positive_rois): accept as given
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
        raise UsageError(f"--set {key}: expected true or false, got {new!r}")
    if isinstance(old, int):
        if isinstance(new, int) and not isinstance(new, bool):
            return new
        if isinstance(new, float) and new.is_integer():
            return int(new)
        raise UsageError(f"--set {key}: expected an integer, got {new!r}")
    if isinstance(old, float):
        if isinstance(new, (int, float)) and not isinstance(new, bool):
            return float(new)
        raise UsageError(f"--set {key}: expected a number, got {new!r}")
    if isinstance(old, (list, tuple)):
        if isinstance(new, (int, float)) and not isinstance(new, bool):
            new = [new]
        if not isinstance(new, list):
            raise UsageError(f"--set {key}: expected a JSON list such as [1,2], got {new!r}")
        if old:
            return [_coerce(f"{key}[{i}]", old[0], v) for i, v in enumerate(new)]
        return new
    if isinstance(old, str):
        if isinstance(new, str):
            return new
        return json.dumps(new) if not isinstance(new, (int, float)) else str(new)
    return new


def apply_overrides(cfg: ModelConfig, items: Iterable[str]) -> ModelConfig:
    """Return a new config with each ``"a.b=value"`` of ``items`` applied.

    Raises:
        ValueError: malformed item, unknown key (the message lists the valid keys of that
            section) or a value of the wrong type.
    """
    data = cfg.to_dict()
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. mask_head.pooling=pyramid")
        key, _, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
                where = ".".join(parts[:depth]) or "config"
                sections = sorted(k for k, v in node.items() if isinstance(v, dict)) if isinstance(node, dict) else []
                raise UsageError(f"--set {key}: {where} has no section {part!r}; sections: {sections}")
            node = node[part]
        leaf = parts[-1]
        if not isinstance(node, dict) or leaf not in node or isinstance(node[leaf], dict):
            where = ".".join(parts[:-1]) or "config"
            keys = sorted(k for k, v in node.items() if not isinstance(v, dict))
            raise UsageError(f"--set {key}: {where} has no setting {leaf!r}; settings: {keys}")
        node[leaf] = _coerce(key, node[leaf], _parse_value(raw.strip()))
    return ModelConfig.from_dict(data)

"""Nested mappings as dotted keys: the one flattener for params and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys; lists and empty mappings are kept as values."""
    if not isinstance(obj, Mapping):
        return {prefix: obj}
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        flat.update(flatten(value, name) if isinstance(value, Mapping) and value else {name: value})
    return flat


def numeric_leaves(obj: Any) -> dict[str, float]:
    """The numeric leaves of a JSON object as dotted keys (booleans, NaN and strings dropped)."""
    flat = flatten(obj) if isinstance(obj, Mapping) else {}
    return {
        k: float(v)
        for k, v in flat.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # v == v drops NaN
    }

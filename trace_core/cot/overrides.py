"""Routing overrides of params (``cot_generate.routing.overrides``): parsed and checked.

Kept apart from :mod:`trace_core.cot.routing` so that params validation (:mod:`trace_core.config`)
can check the keys without an import cycle.
"""

from __future__ import annotations

from trace_core.data.mbeir import DATASET_IDS, DATASETS


def parse_overrides(overrides: dict[str, int]) -> dict[tuple[int, int | None], int]:
    """Overrides as ``{(dataset_id, task_id or None): z}``; ``ValueError`` names a bad key."""
    out: dict[tuple[int, int | None], int] = {}
    for key, z in overrides.items():
        head, _, tail = key.partition(":")
        head, tail = head.strip().lower(), tail.strip() or "*"
        dataset = int(head) if head.isdigit() else DATASET_IDS.get(head)
        if dataset not in DATASETS or not (tail == "*" or tail.isdigit()):
            raise ValueError(f"routing.overrides key '{key}': expected '<dataset id or name>:<task id or *>'")
        if z not in (0, 1):
            raise ValueError(f"routing.overrides['{key}'] = {z}: z must be 0 or 1")
        out[(dataset, None if tail == "*" else int(tail))] = z
    return out

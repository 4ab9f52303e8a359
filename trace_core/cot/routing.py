"""Complexity routing of training queries: z=0 (embed directly) or z=1 (reason first).

Precedence: a per-(dataset, task) override from params wins; otherwise, in ``assessor`` mode
the assessor model's label decides (a failed or unparsable label falls back to the rule and
is recorded); otherwise the rule from the paper's statistics: a query reasons iff its
dataset is in ``reason_datasets`` (default OVEN, InfoSeek, FashionIQ, CIRR).

Override keys are ``"<dataset>:<task>"`` where dataset is an id (``8``) or a name
(``cirr``) and task an id or ``*``; ``"<dataset>"`` alone means every task. The exact
(dataset, task) key wins over ``dataset:*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trace_core.config import RoutingParams
from trace_core.cot.parse import parse_label
from trace_core.cot.prompts import TeacherResult


@dataclass(frozen=True)
class RouteDecision:
    """z for one query, how it was decided, and the assessor's raw output or error."""

    z: int
    source: str  # "rule" | "override" | "assessor" | "rule-fallback"
    assessor_raw: str | None = None
    assessor_error: str | None = None


def override_z(dataset_id: int, task_id: int, overrides: dict[tuple[int, int | None], int]) -> int | None:
    """The overriding z of a (dataset, task), or ``None``."""
    for key in ((dataset_id, task_id), (dataset_id, None)):
        if key in overrides:
            return overrides[key]
    return None


def rule_z(dataset_id: int, cfg: RoutingParams) -> int:
    """The default rule: reason iff the dataset is a reasoning dataset."""
    return 1 if dataset_id in cfg.reason_datasets else 0


def decide(
    dataset_id: int,
    task_id: int,
    cfg: RoutingParams,
    overrides: dict[tuple[int, int | None], int],
    assessed: TeacherResult | None,
) -> RouteDecision:
    """Route one query (``assessed`` is the assessor's result in assessor mode, else None)."""
    z = override_z(dataset_id, task_id, overrides)
    if z is not None:
        return RouteDecision(z, "override")
    if assessed is None:
        return RouteDecision(rule_z(dataset_id, cfg), "rule")
    label = parse_label(assessed.text)
    if label is not None:
        return RouteDecision(label, "assessor", assessed.text)
    why = assessed.error or "assessor output has no <label>simple|complex</label>"
    return RouteDecision(rule_z(dataset_id, cfg), "rule-fallback", assessed.text, why)


def needs_assessor(
    keys: Sequence[tuple[int, int]], cfg: RoutingParams, overrides: dict[tuple[int, int | None], int]
) -> list[bool]:
    """Which (dataset, task) queries the assessor must label (assessor mode, no override)."""
    if cfg.mode != "assessor":
        return [False] * len(keys)
    return [override_z(d, t, overrides) is None for d, t in keys]

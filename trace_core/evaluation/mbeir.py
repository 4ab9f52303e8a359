"""The M-BEIR table: 16 columns in the paper's order, R@5 (R@10 for the fashion tasks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trace_core.data.mbeir import FASHION_DATASETS, TEST_TASKS, TestTask


@dataclass(frozen=True)
class TableColumn:
    """One column of the table: the task and its reported number (None when absent)."""

    task: TestTask
    metric: str
    value: float | None


@dataclass(frozen=True)
class MbeirTable:
    """The 16 reported numbers and their plain mean over the present columns."""

    columns: tuple[TableColumn, ...]
    average: float | None
    n_present: int

    @property
    def complete(self) -> bool:
        """True when all 16 tasks were scored."""
        return self.n_present == len(TEST_TASKS)

    def as_dict(self) -> dict[str, float | int | None]:
        """Flat JSON form: ``{stem: value, "average": .., "n_tasks": ..}`` (absent tasks omitted)."""
        out: dict[str, float | int | None] = {c.task.stem: c.value for c in self.columns if c.value is not None}
        out["average"] = self.average
        out["n_tasks"] = self.n_present
        return out


def task_ks(task: TestTask, ks: Sequence[int], fashion_ks: Sequence[int]) -> list[int]:
    """Cut-offs scored for a task: ``ks``, plus ``fashion_ks`` for Fashion200K and FashionIQ."""
    extra = fashion_ks if task.dataset_id in FASHION_DATASETS else ()
    return sorted({*ks, *extra, task.reported_k})


def reported_metric(task: TestTask) -> str:
    """The metric name of the task's column, e.g. ``R@5`` or ``R@10``."""
    return f"R@{task.reported_k}"


def build_table(per_task: Mapping[str, Mapping[str, float]]) -> MbeirTable:
    """Pick each present task's reported recall, in TEST_TASKS order, and average them.

    Args:
        per_task: ``stem -> {"R@k": value, ...}`` for the tasks that were scored.

    Raises:
        KeyError: a present task lacks its reported metric.
    """
    columns = []
    for task in TEST_TASKS:
        metric = reported_metric(task)
        scores = per_task.get(task.stem)
        if scores is not None and metric not in scores:
            raise KeyError(f"task {task.stem} was scored without {metric}")
        columns.append(TableColumn(task, metric, None if scores is None else float(scores[metric])))
    values = [c.value for c in columns if c.value is not None]
    average = sum(values) / len(values) if values else None
    return MbeirTable(tuple(columns), average, len(values))

"""The suite: one loader per dataset and the 13 columns of the paper's zero-shot table, in order.

=================  =====================================  ======================
column             query -> candidates                    metric
=================  =====================================  ======================
ShareGPT4V T->I    long caption -> image                  R@1
ShareGPT4V I->T    image -> long caption                  R@1
Urban-1K T->I      long caption -> image                  R@1
Urban-1K I->T      image -> long caption                  R@1
Flickr30K T->I     caption -> image                       R@1
Flickr30K I->T     image -> caption                       R@1
CIRCO              (image, text) -> image, many positives mAP@5
GeneCIS            (image, text) -> image, own gallery    R@1 (mean of subsets)
VisDial            dialogue -> image                      R@1
VIST               interleaved images + sentences -> image R@1
MT-FashionIQ       interleaved turns -> image             R@5
CC-Neg             image -> {caption, negated caption}    accuracy
Sugar-Crepe        image -> {caption, hard negative}      accuracy (mean of subsets)
=================  =====================================  ======================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from trace_core.evaluation.zeroshot import (
    ccneg,
    circo,
    flickr30k,
    genecis,
    mtfashioniq,
    sharegpt4v,
    sugar_crepe,
    urban1k,
    visdial,
    vist,
)
from trace_core.evaluation.zeroshot.base import LoadContext, ZsTask
from trace_core.io import DataError

log = logging.getLogger(__name__)

LOADERS: dict[str, Callable[[LoadContext], list[ZsTask]]] = {
    "sharegpt4v": sharegpt4v.load,
    "urban1k": urban1k.load,
    "flickr30k": flickr30k.load,
    "circo": circo.load,
    "genecis": genecis.load,
    "visdial": visdial.load,
    "vist": vist.load,
    "mtfashioniq": mtfashioniq.load,
    "ccneg": ccneg.load,
    "sugar_crepe": sugar_crepe.load,
}


@dataclass(frozen=True)
class Column:
    """One column: the mean of ``metric`` over the named tasks (all of the dataset's when None)."""

    key: str
    label: str
    dataset: str
    metric: str
    tasks: tuple[str, ...] | None = None

    def covers(self, task: ZsTask) -> bool:
        """Whether ``task`` contributes to this column."""
        return task.dataset == self.dataset and (self.tasks is None or task.name in self.tasks)


COLUMNS: tuple[Column, ...] = (
    Column("sharegpt4v_t2i", "ShareGPT4V T→I", "sharegpt4v", "R@1", ("sharegpt4v_t2i",)),
    Column("sharegpt4v_i2t", "ShareGPT4V I→T", "sharegpt4v", "R@1", ("sharegpt4v_i2t",)),
    Column("urban1k_t2i", "Urban-1K T→I", "urban1k", "R@1", ("urban1k_t2i",)),
    Column("urban1k_i2t", "Urban-1K I→T", "urban1k", "R@1", ("urban1k_i2t",)),
    Column("flickr30k_t2i", "Flickr30K T→I", "flickr30k", "R@1", ("flickr30k_t2i",)),
    Column("flickr30k_i2t", "Flickr30K I→T", "flickr30k", "R@1", ("flickr30k_i2t",)),
    Column("circo", "CIRCO", "circo", "MAP@5"),
    Column("genecis", "GeneCIS", "genecis", "R@1"),
    Column("visdial", "VisDial", "visdial", "R@1"),
    Column("vist", "VIST", "vist", "R@1"),
    Column("mtfashioniq", "MT-FashionIQ", "mtfashioniq", "R@5"),
    Column("ccneg", "CC-Neg", "ccneg", "accuracy"),
    Column("sugar_crepe", "Sugar-Crepe", "sugar_crepe", "accuracy"),
)

#: the paper's TRACE (Qwen2.5-VL-7B) zero-shot numbers given in our spec (docs/TRACE.md §9), in %.
PAPER_TRACE: dict[str, float] = {"circo": 34.8, "genecis": 20.5, "visdial": 65.4}


def load_suite(ctx: LoadContext, datasets: Sequence[str]) -> tuple[list[ZsTask], list[str]]:
    """Tasks of every dataset whose folder exists; the names of the missing ones (warned)."""
    tasks: list[ZsTask] = []
    missing: list[str] = []
    for name in datasets:
        folder = ctx.root / name
        if not folder.is_dir():
            log.warning("zero-shot dataset %s skipped: no folder %s (its columns show n/a)", name, folder)
            missing.append(name)
            continue
        try:
            loaded = LOADERS[name](ctx)
        except DataError:
            raise
        except ValueError as err:  # an inconsistency no single record shows (duplicate ids, ...)
            raise DataError(folder, "dataset", str(err)) from None
        for task in loaded:
            for note in task.notes:
                log.warning("%s: %s", task.name, note)
        log.debug("%s: %s", name, ", ".join(f"{t.name} ({len(t.queries)} queries)" for t in loaded))
        tasks += loaded
    return tasks, missing


def column_values(tasks: Sequence[ZsTask], metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float | None]:
    """Each column's value (mean over its tasks), None when none of its tasks ran."""
    out: dict[str, float | None] = {}
    for col in COLUMNS:
        values = [metrics[t.name][col.metric] for t in tasks if col.covers(t) and t.name in metrics]
        out[col.key] = sum(values) / len(values) if values else None
    return out

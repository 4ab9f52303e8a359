"""Exact in-memory ranking and scoring of one zero-shot task from its embeddings (pure).

Embeddings are unit rows, so the inner product is the cosine similarity. A shared gallery is
searched with one matrix product and :func:`trace_core.indexing.backend.top_k` (ties broken by
gallery order); a per-query gallery (GeneCIS, CC-Neg, Sugar-Crepe) is ranked on its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trace_core.evaluation.metrics import RunEntry, itm_accuracy, map_at_ks, ranked_entries, recall_at_ks
from trace_core.evaluation.zeroshot.base import ZsTask
from trace_core.indexing.backend import top_k


@dataclass(frozen=True)
class Ranking:
    """Ranked candidate ids and scores of one query."""

    ids: list[str]
    scores: list[float]


def rank_shared(task: ZsTask, queries: np.ndarray, candidates: np.ndarray, depth: int) -> dict[str, Ranking]:
    """Top ``depth`` of the whole gallery per query, its ``exclude`` ids removed."""
    ids = [c.id for c in task.candidates]
    position = {cid: i for i, cid in enumerate(ids)}
    scores = queries @ candidates.T  # (n_queries, n_candidates)
    for row, q in enumerate(task.queries):
        scores[row, [position[x] for x in q.exclude if x in position]] = -np.inf
    best_s, best_p = top_k(scores, depth)
    out = {}
    for q, s_row, p_row in zip(task.queries, best_s, best_p, strict=True):
        keep = (p_row >= 0) & np.isfinite(s_row)
        out[q.qid] = Ranking([ids[p] for p in p_row[keep]], s_row[keep].tolist())
    return out


def rank_own(task: ZsTask, queries: np.ndarray, candidates: np.ndarray) -> dict[str, Ranking]:
    """Each query's own gallery fully ranked (stable: ties keep gallery order)."""
    position = {c.id: i for i, c in enumerate(task.candidates)}
    out = {}
    for row, q in enumerate(task.queries):
        gallery = [cid for cid in (q.gallery or ()) if cid not in q.exclude]
        scores = candidates[[position[c] for c in gallery]] @ queries[row]  # (gallery,)
        order = np.argsort(-scores, kind="stable")
        out[q.qid] = Ranking([gallery[i] for i in order], scores[order].tolist())
    return out


def rank_task(task: ZsTask, queries: np.ndarray, candidates: np.ndarray, depth: int) -> dict[str, Ranking]:
    """Rankings of every query (``queries`` rows follow ``task.queries``, ``candidates`` ``task.candidates``)."""
    if queries.shape[0] != len(task.queries) or candidates.shape[0] != len(task.candidates):
        raise ValueError(f"task {task.name}: embeddings do not match its queries/candidates")
    per_query = any(q.gallery is not None for q in task.queries)
    return rank_own(task, queries, candidates) if per_query else rank_shared(task, queries, candidates, depth)


def task_metrics(task: ZsTask, rankings: dict[str, Ranking]) -> dict[str, float]:
    """The task's metric at each of its ks (``R@k``, ``MAP@k`` or ``accuracy``) and ``n_queries``."""
    qids = [q.qid for q in task.queries]
    positives = {q.qid: q.positives for q in task.queries}
    ranked = {qid: r.ids for qid, r in rankings.items()}
    if task.metric == "recall":
        return recall_at_ks(ranked, positives, qids, task.ks)
    if task.metric == "map":
        return map_at_ks(ranked, positives, qids, task.ks)
    pos_scores, neg_scores = [], []
    for q in task.queries:
        r = rankings[q.qid]
        pos_scores.append(max(s for i, s in zip(r.ids, r.scores, strict=True) if i in q.positives))
        neg_scores.append([s for i, s in zip(r.ids, r.scores, strict=True) if i not in q.positives])
    return itm_accuracy(pos_scores, neg_scores)


def run_entries(task: ZsTask, rankings: dict[str, Ranking], run_id: str, keep: int) -> list[RunEntry]:
    """UniIR run lines of the task (top ``keep`` per query, queries in task order)."""
    out: list[RunEntry] = []
    for q in task.queries:
        r = rankings[q.qid]
        out += ranked_entries(q.qid, r.ids[:keep], r.scores[:keep], run_id, q.item.task_id)
    return out

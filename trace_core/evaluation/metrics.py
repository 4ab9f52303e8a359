"""Retrieval metrics shared by M-BEIR and the zero-shot suite, run files and qrels scoring.

Pure, no heavy dependencies. Three metrics:

* UniIR's "Recall@k" (``R@k``) is a hit rate: a query scores 1 when any of its positives
  is among its top k candidates, else 0; a query without positives scores 0.
* CIRCO's mAP@k (``MAP@k``): per query, the sum over ranks i <= k holding a positive of
  precision@i, divided by min(k, number of positives) (a positive counts once, at its first
  rank); a query without positives scores 0.
* Image-text matching accuracy: a query is right when its positive scores strictly above
  every negative (CC-Neg, Sugar-Crepe).

A task's number is the mean over its queries; a query missing from a run scores 0. Run
files use UniIR's format, one line per retrieved candidate::

    qid Q0 did rank score run_id task_id
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from trace_core.data.mbeir import read_qrels
from trace_core.io import DataError

RUN_COLUMNS = 7


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One line of a UniIR run file."""

    qid: str
    did: str
    rank: int
    score: float
    run_id: str
    task_id: int


def hit_at_k(ranked: Sequence[str], positives: AbstractSet[str], k: int) -> float:
    """1.0 if any positive is among the first ``k`` ranked ids, else 0.0 (0.0 without positives)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not positives:
        return 0.0
    return 1.0 if any(did in positives for did in ranked[:k]) else 0.0


def recall_at_ks(
    rankings: Mapping[str, Sequence[str]],
    positives: Mapping[str, AbstractSet[str]],
    qids: Sequence[str],
    ks: Sequence[int],
) -> dict[str, float]:
    """Mean hit@k over ``qids`` for each k; a qid missing from ``rankings`` is a miss.

    Returns ``{"R@k": mean, ..., "n_queries": len(qids)}`` (all zeros when ``qids`` is empty).
    """
    out: dict[str, float] = {}
    for k in ks:
        hits = [hit_at_k(rankings.get(q, ()), positives.get(q, frozenset()), k) for q in qids]
        out[f"R@{k}"] = sum(hits) / len(hits) if hits else 0.0
    out["n_queries"] = len(qids)
    return out


def average_precision_at_k(ranked: Sequence[str], positives: AbstractSet[str], k: int) -> float:
    """CIRCO's AP@k: sum of precision@i at each rank i <= k holding a positive, over min(k, #positives).

    A positive repeated lower in the ranking counts once (at its first rank); 0.0 without positives.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not positives:
        return 0.0
    found: set[str] = set()
    total = 0.0
    for rank, did in enumerate(ranked[:k], start=1):
        if did in positives and did not in found:
            found.add(did)
            total += len(found) / rank
    return total / min(k, len(positives))


def map_at_ks(
    rankings: Mapping[str, Sequence[str]],
    positives: Mapping[str, AbstractSet[str]],
    qids: Sequence[str],
    ks: Sequence[int],
) -> dict[str, float]:
    """Mean AP@k over ``qids`` for each k; a qid missing from ``rankings`` scores 0.

    Returns ``{"MAP@k": mean, ..., "n_queries": len(qids)}`` (all zeros when ``qids`` is empty).
    """
    out: dict[str, float] = {}
    for k in ks:
        aps = [average_precision_at_k(rankings.get(q, ()), positives.get(q, frozenset()), k) for q in qids]
        out[f"MAP@{k}"] = sum(aps) / len(aps) if aps else 0.0
    out["n_queries"] = len(qids)
    return out


def itm_accuracy(positive_scores: Sequence[float], negative_scores: Sequence[Sequence[float]]) -> dict[str, float]:
    """Share of queries whose positive scores strictly above every one of its negatives.

    Returns ``{"accuracy": share, "n_queries": n}``; a query without negatives counts as right.
    """
    if len(positive_scores) != len(negative_scores):
        raise ValueError(f"{len(positive_scores)} positive scores for {len(negative_scores)} negative lists")
    right = [all(pos > neg for neg in negs) for pos, negs in zip(positive_scores, negative_scores, strict=True)]
    return {"accuracy": sum(right) / len(right) if right else 0.0, "n_queries": float(len(right))}


#: ``trace score --metric`` -> (scorer, key prefix)
SCORERS = {"recall": recall_at_ks, "map": map_at_ks}


def format_run_line(entry: RunEntry) -> str:
    """Render one run-file line (with trailing newline)."""
    return f"{entry.qid} Q0 {entry.did} {entry.rank} {entry.score:.6f} {entry.run_id} {entry.task_id}\n"


def format_run(entries: Iterable[RunEntry]) -> str:
    """Render run-file lines."""
    return "".join(format_run_line(e) for e in entries)


def ranked_entries(qid: str, dids: Sequence[str], scores: Sequence[float], run_id: str, task_id: int) -> list[RunEntry]:
    """Run entries of one query from its ranked ids and scores (rank starts at 1)."""
    return [
        RunEntry(qid, d, r, float(s), run_id, task_id)
        for r, (d, s) in enumerate(zip(dids, scores, strict=True), start=1)
    ]


def parse_run_line(line: str, path: Path, lineno: int) -> RunEntry:
    """Parse ``qid Q0 did rank score run_id task_id``; bad lines raise :class:`DataError`."""
    parts = line.split()
    where = f"line {lineno}"
    if len(parts) != RUN_COLUMNS:
        raise DataError(
            path,
            where,
            f"run line must have {RUN_COLUMNS} columns 'qid Q0 did rank score run_id task_id', got {len(parts)}",
        )
    qid, q0, did, rank, score, run_id, task = parts
    if q0 != "Q0":
        raise DataError(path, where, f"column 2 must be 'Q0', got '{q0}'")
    try:
        return RunEntry(qid, did, int(rank), float(score), run_id, int(task))
    except ValueError:
        raise DataError(path, where, "rank and task_id must be integers, score a number") from None


def read_run(path: Path) -> dict[str, list[str]]:
    """Read a run file into ``qid -> dids ordered by rank``; a repeated (qid, rank) is an error."""
    ranked: dict[str, dict[int, str]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            e = parse_run_line(line, path, lineno)
            per_query = ranked.setdefault(e.qid, {})
            if e.rank in per_query:
                raise DataError(path, f"line {lineno}", f"rank {e.rank} repeated for qid {e.qid}")
            per_query[e.rank] = e.did
    return {q: [r[k] for k in sorted(r)] for q, r in ranked.items()}


def qrels_stem(path: Path) -> str:
    """Name a qrels file by its stem without the ``mbeir_`` prefix and ``_qrels`` suffix."""
    stem = path.stem
    stem = stem.removeprefix("mbeir_")
    return stem.removesuffix("_qrels")


def score_run_files(run: Path, qrels: list[Path], ks: list[int], metric: str = "recall") -> dict[str, dict[str, float]]:
    """Score a run file against each qrels file: ``{stem: {"R@k" or "MAP@k": .., "n_queries": n}}``.

    ``metric`` is ``recall`` (UniIR hit@k) or ``map`` (CIRCO mAP@k). The queries of a qrels file
    are the ones it lists; those absent from the run score 0. Any whitespace-free ids are
    accepted (M-BEIR ids or those of the zero-shot runs).
    """
    if not ks:
        raise ValueError("at least one k is needed")
    if metric not in SCORERS:
        raise ValueError(f"metric must be one of {', '.join(SCORERS)}, got {metric!r}")
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    rankings = read_run(run)
    out: dict[str, dict[str, float]] = {}
    for qpath in qrels:
        entries = read_qrels(qpath, check_ids=False)
        positives = {q: e.positives for q, e in entries.items()}
        out[qrels_stem(qpath)] = SCORERS[metric](rankings, positives, sorted(entries), ks)
    return out


def chance_hit_at_k(n_pool: int, n_positives: int, k: int) -> float:
    """Expected hit@k of a uniformly random ranking of ``n_pool`` candidates, ``n_positives`` of them positive.

    ``1 - C(N - P, k) / C(N, k)``, computed as a product so huge pools stay exact enough:
    the chance that none of the first ``k`` draws without replacement is a positive, flipped.
    0.0 without positives or candidates; 1.0 when ``k`` covers every negative.
    """
    if n_positives <= 0 or n_pool <= 0:
        return 0.0
    n_positives = min(n_positives, n_pool)
    miss = 1.0
    for i in range(min(k, n_pool)):
        miss *= max(n_pool - n_positives - i, 0) / (n_pool - i)
    return 1.0 - miss

"""Stage ``cot_build``: join curated chains with the training queries into M-BEIR-CoT.

One row per occurrence of a routed training query in the training file (``data.train_file``;
file order), in the format of :func:`trace_core.data.dataset.sample_to_dict`. cot_generate
routed each distinct query once; a query that UniIR's upsampled union file repeats gets its
(routing, chain) on every occurrence, so training sees the upsampled distribution. Texts are
normalised as ``data.normalize_text`` says.

* z=0 queries target ``<|emb|>`` only;
* z=1 queries with a kept chain target ``reasoning + joiner + answer + <|emb|>`` (tags stripped);
* z=1 queries whose chain was dropped become z=0 rows (``dropped_policy: fallback``) or are
  left out (``exclude``).

The positive is the first of ``pos_cand_list`` present in the training pool (a query with
none is left out and counted); negatives come from ``neg_cand_list`` (at most
``max_negatives``). Statistics per task and z go to ``metrics/cot_build.json``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from trace_core.config import CotBuildParams, Params
from trace_core.cot.generate import read_raw_rows
from trace_core.data.dataset import EMB_TOKEN, candidate_item, query_item, sample_to_dict
from trace_core.data.instructions import Instructions, parse_instructions
from trace_core.data.mbeir import global_pool_file, instructions_file, iter_candidates, load_train_queries
from trace_core.data.normalize import TextNorm
from trace_core.io import DataError, iter_jsonl, write_json, write_jsonl
from trace_core.paths import Paths
from trace_core.types import CandidateRecord, QueryRecord, TrainSample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildInputs:
    """Everything the join needs, in memory."""

    queries: dict[str, QueryRecord]
    pool: dict[str, CandidateRecord]
    chains: dict[str, tuple[str, str]]  # qid -> (reasoning, answer)
    instructions: Instructions
    seed: int
    normalize: TextNorm


def target_of(chain: tuple[str, str] | None, joiner: str) -> str:
    """The generation target: ``<|emb|>`` or ``reasoning + joiner + answer + <|emb|>``."""
    if chain is None:
        return EMB_TOKEN
    reasoning, answer = chain
    return f"{reasoning}{joiner}{answer}{EMB_TOKEN}"


def build_sample(q: QueryRecord, z: int, inp: BuildInputs, cfg: CotBuildParams) -> tuple[TrainSample | None, str]:
    """One training row and its outcome (``z0``, ``z1``, ``fallback``, ``excluded``, ``no_positive``)."""
    pos = next((inp.pool[d] for d in q.pos_cand_list if d in inp.pool), None)
    if pos is None:
        return None, "no_positive"
    chain = inp.chains.get(q.qid) if z == 1 else None
    outcome = "z1" if chain is not None else ("z0" if z == 0 else "fallback")
    if outcome == "fallback" and cfg.dropped_policy == "exclude":
        return None, "excluded"
    query, instruction = query_item(q, inp.instructions, inp.seed, inp.normalize)
    negs = [candidate_item(inp.pool[d], q.task_id, inp.normalize) for d in q.neg_cand_list if d in inp.pool]
    negs = negs[: cfg.max_negatives]
    sample = TrainSample(
        qid=q.qid,
        task_id=q.task_id,
        dataset_id=q.dataset_id,
        z=1 if chain is not None else 0,
        query=query,
        positive=candidate_item(pos, q.task_id, inp.normalize),
        target=target_of(chain, cfg.joiner),
        instruction=instruction,
        negatives=tuple(negs),
    )
    return sample, outcome


def build_rows(
    routes: Sequence[tuple[str, int]], inp: BuildInputs, cfg: CotBuildParams
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of the training file and their statistics.

    ``routes`` holds one ``(qid, routed z)`` per occurrence in the training file (a repeated
    query repeats its route); the ``routed_*`` counts are over distinct queries.
    """
    rows: list[dict[str, Any]] = []
    outcomes: Counter[str] = Counter()
    per_task: Counter[str] = Counter()
    per_dataset: Counter[str] = Counter()
    built: dict[str, tuple[dict[str, Any] | None, str]] = {}  # a repeated query is built once
    for qid, z in routes:
        if qid not in built:
            sample, outcome = build_sample(inp.queries[qid], z, inp, cfg)
            built[qid] = (None if sample is None else sample_to_dict(sample), outcome)
        row, outcome = built[qid]
        outcomes[outcome] += 1
        if row is not None:
            rows.append(row)
            per_task[f"task{row['task_id']}_z{row['z']}"] += 1
            per_dataset[f"dataset{row['dataset_id']}_z{row['z']}"] += 1
    routed = dict(routes)
    stats = {
        "rows": len(rows), "z0": sum(r["z"] == 0 for r in rows), "z1": sum(r["z"] == 1 for r in rows),
        "routed_z0": sum(z == 0 for z in routed.values()), "routed_z1": sum(z == 1 for z in routed.values()),
        "distinct_queries": len(routed), "occurrences": len(routes),
        "fallback": outcomes["fallback"], "excluded": outcomes["excluded"], "no_positive": outcomes["no_positive"],
        "per_task": dict(sorted(per_task.items())), "per_dataset": dict(sorted(per_dataset.items())),
    }  # fmt: skip
    return rows, stats


def load_pool_subset(path: Any, wanted: set[str]) -> dict[str, CandidateRecord]:
    """Stream the pool; keep the wanted candidates."""
    return {c.did: c for c in iter_candidates(path) if c.did in wanted}


def load_routes(raw_rows: Iterable[dict[str, Any]], queries: dict[str, QueryRecord], where: Any) -> dict[str, int]:
    """``qid -> z`` of the raw rows; a qid unknown to the training file is a :class:`DataError`."""
    out: dict[str, int] = {}
    for r in raw_rows:
        if r["qid"] not in queries:
            raise DataError(where, f"record {r['qid']}", "query not in the training file (rerun cot-generate)")
        out[str(r["qid"])] = int(r["z"])
    return out


def expand_routes(occurrences: Sequence[QueryRecord], routes: dict[str, int]) -> list[tuple[str, int]]:
    """``(qid, z)`` per occurrence of a routed query, in training-file order (repeats kept)."""
    return [(q.qid, routes[q.qid]) for q in occurrences if q.qid in routes]


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Stage entry point: write the training file and ``metrics/cot_build.json``."""
    root = paths.data_root
    occurrences = load_train_queries(root, params.data.train_file)
    queries = {q.qid: q for q in occurrences}
    routes = expand_routes(occurrences, load_routes(read_raw_rows(paths.cot_raw_dir), queries, paths.cot_raw_dir))
    chains = {str(r["qid"]): (str(r["reasoning"]), str(r["answer"])) for _, r in iter_jsonl(paths.cot_curated)}
    wanted = {d for qid, _ in routes for d in (*queries[qid].pos_cand_list, *queries[qid].neg_cand_list)}
    pool = load_pool_subset(global_pool_file(root, "train"), wanted)
    instr = parse_instructions(instructions_file(root))
    inp = BuildInputs(queries, pool, chains, instr, params.base.seed, params.data.normalize_text)
    rows, stats = build_rows(routes, inp, params.cot_build)
    write_jsonl(paths.cot_train, rows)
    write_json(paths.metrics_file("cot_build"), stats)
    log.info(
        "cot-build: %d rows (z=0 %d, z=1 %d, fallback %d)", stats["rows"], stats["z0"], stats["z1"], stats["fallback"]
    )
    return stats

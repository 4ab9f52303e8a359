"""Self-chain training data: the model's own chains of the reasoning-route training queries.

Phase 1 embeds a z=1 training query after the teacher's gold chain (teacher forcing); export
embeds it after the chain the model writes itself. This module regenerates those chains
with the trained model (greedy, the export's routed decoding :meth:`TraceEncoder.encode_queries`
with routing ``always``: for a query the model reasons on, ``always`` and ``adaptive`` pick
the same first token, the argmax among the non-``<|emb|>`` tokens), caches them per model id
(``<model_id>.jsonl`` + ``<model_id>.manifest.json`` written last), optionally filters them
with the embedder as judge (:func:`reward_mask`), and sets them as the samples'
``embed_target`` (InfoNCE after the own chain; ``target`` keeps the gold chain for ``L_gen``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trace_core.data.dataset import EMB_TOKEN
from trace_core.io import iter_jsonl, read_json, sha256_file, write_json, write_jsonl
from trace_core.types import TrainSample

log = logging.getLogger(__name__)
#: routing mode of the regeneration (see the module docstring)
ROUTING = "always"
INDEX_FILE = "manifest.json"


@dataclass(frozen=True)
class OwnChain:
    """One regenerated chain: its text (special tokens kept), generated ids, route and length."""

    qid: str
    text: str
    token_ids: tuple[int, ...]
    route: str

    @property
    def embed_target(self) -> str:
        """The response the InfoNCE embedding is pooled after: the own chain then ``<|emb|>``."""
        return self.text + EMB_TOKEN


def reasoning_queries(samples: Iterable[TrainSample], max_queries: int | None = None) -> list[TrainSample]:
    """The first occurrence of each distinct z=1 query, in file order (the first ``max_queries``)."""
    seen: dict[str, TrainSample] = {}
    for s in samples:
        if s.z == 1 and s.qid not in seen:
            seen[s.qid] = s
            if max_queries is not None and len(seen) >= max_queries:
                break
    return list(seen.values())


def queries_key(queries: Sequence[TrainSample]) -> str:
    """Hash of what a chain file answers (qids and query items, in order)."""
    blob = "\n".join(f"{q.qid}\t{q.query!r}" for q in queries)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def chain_file(root: Path, model_id: str) -> Path:
    """The chains of model ``model_id``."""
    return root / f"{model_id}.jsonl"


def manifest_file(root: Path, model_id: str) -> Path:
    """The manifest of :func:`chain_file` (written last: its presence marks a complete file)."""
    return root / f"{model_id}.manifest.json"


def chain_settings(model_id: str, queries: Sequence[TrainSample], max_new_tokens: int) -> dict[str, Any]:
    """What a cached chain file must have been made with to be reused."""
    return {
        "model_id": model_id,
        "routing": ROUTING,
        "max_new_tokens": max_new_tokens,
        "queries": queries_key(queries),
        "n": len(queries),
    }


def load_cached(root: Path, settings: Mapping[str, Any]) -> dict[str, OwnChain] | None:
    """The cached chains of ``settings["model_id"]`` when complete and made with ``settings``; else None."""
    model_id = str(settings["model_id"])
    manifest, path = manifest_file(root, model_id), chain_file(root, model_id)
    if not manifest.is_file() or not path.is_file():
        return None
    meta = read_json(manifest)
    if {k: meta.get(k) for k in settings} != dict(settings) or meta.get("sha256") != sha256_file(path):
        log.warning("%s: made with other settings or incomplete; regenerating", path)
        return None
    return {c.qid: c for c in (chain_from_row(row) for _, row in iter_jsonl(path))}


def chain_from_row(row: Mapping[str, Any]) -> OwnChain:
    """Inverse of :func:`chain_row`."""
    return OwnChain(str(row["qid"]), str(row["text"]), tuple(int(i) for i in row["token_ids"]), str(row["route"]))


def chain_row(c: OwnChain) -> dict[str, Any]:
    """JSON form of one chain (a line of the chain file)."""
    return {"qid": c.qid, "text": c.text, "token_ids": list(c.token_ids), "route": c.route}


def write_chains(root: Path, settings: Mapping[str, Any], chains: Sequence[OwnChain]) -> None:
    """Write the chain file atomically, then its manifest (with the file's hash), then the index."""
    model_id = str(settings["model_id"])
    path = chain_file(root, model_id)
    write_jsonl(path, (chain_row(c) for c in chains))
    write_json(manifest_file(root, model_id), {**settings, "sha256": sha256_file(path)})
    write_index(root)


def write_index(root: Path) -> None:
    """``manifest.json`` of the folder: the model ids whose chain files are complete."""
    ids = sorted(p.name.removesuffix(".manifest.json") for p in root.glob("*.manifest.json"))
    write_json(root / INDEX_FILE, {"model_ids": [i for i in ids if chain_file(root, i).is_file()]})


def own_chains(
    qids: Sequence[str], token_ids: Sequence[Sequence[int]], routes: Sequence[str], decode: Any
) -> list[OwnChain]:
    """Chains from decoded ids; ``decode(ids)`` renders them with special tokens kept."""
    return [
        OwnChain(q, str(decode(list(ids))), tuple(int(i) for i in ids), r)
        for q, ids, r in zip(qids, token_ids, routes, strict=True)
    ]


def choose_own(qids: Iterable[str], fraction: float, seed: int) -> set[str]:
    """``round(fraction * n)`` of the distinct qids, chosen by a seeded shuffle of their sorted order."""
    pool = sorted(set(qids))
    random.Random(seed).shuffle(pool)
    return set(pool[: round(fraction * len(pool))])


def reward_mask(own: np.ndarray, gold: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Rejection sampling with the embedder as judge: keep an own chain iff it ranks the positive higher.

    Args:
        own: (n, dim) unit query embeddings after the model's own chains.
        gold: (n, dim) unit query embeddings after the gold chains (teacher-forced).
        positive: (n, dim) unit embeddings of each query's positive.

    Returns:
        (n,) bool: ``own . positive > gold . positive``.
    """
    return np.asarray((own * positive).sum(axis=1) > (gold * positive).sum(axis=1))


def with_own_chains(samples: Iterable[TrainSample], own: Mapping[str, OwnChain]) -> list[TrainSample]:
    """Every row of a query in ``own`` gets its own chain as ``embed_target`` (the others unchanged)."""
    return [
        dataclasses.replace(s, embed_target=own[s.qid].embed_target) if s.z == 1 and s.qid in own else s
        for s in samples
    ]


def chain_stats(chains: Mapping[str, OwnChain], gold: Mapping[str, str], tokenize: Any, emb_id: int) -> dict[str, Any]:
    """How the own chains compare: forced rate, mean length, equal to the gold text, exact retokenisation.

    Args:
        chains: the own chains by qid.
        gold: each qid's gold target (ending with ``<|emb|>``).
        tokenize: ``text -> ids`` (no special tokens added).
        emb_id: the ``<|emb|>`` id.
    """
    n = len(chains) or 1
    forced = sum(c.route == "forced" for c in chains.values())
    tokens = sum(len(c.token_ids) for c in chains.values())
    same = sum(c.embed_target.strip() == gold[q].strip() for q, c in chains.items() if q in gold)
    exact = sum(list(tokenize(c.embed_target)) == [*c.token_ids, emb_id] for c in chains.values())
    return {
        "n_chains": len(chains),
        "forced_rate": round(forced / n, 6),
        "mean_new_tokens": round(tokens / n, 3),
        "equal_to_gold_rate": round(same / n, 6),
        "retokenized_exact_rate": round(exact / n, 6),
    }

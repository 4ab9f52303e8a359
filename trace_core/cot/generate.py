"""Stage ``cot_generate``: route training queries and let the teacher write chains.

Output (``paths.cot_raw_dir``): ``shard-NNNNN.jsonl`` holding one row per training query
(in the order of the union training file, ``max_queries`` first), each followed by
``shard-NNNNN.manifest.json`` once complete, and ``manifest.json`` (totals) written last.

Resumable: a shard counts as done iff its manifest exists and matches the current
parameters, its query ids and its file hash; a rerun skips done shards and regenerates the
others, so a killed run continues where it stopped without losing or duplicating a row.
Only z=1 queries go to the teacher; a failed request is an ``error`` row with its reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trace_core.config import CotGenerateParams, Params, dump_params
from trace_core.cot import prompts
from trace_core.cot.prompts import TeacherResult
from trace_core.cot.routing import RouteDecision, decide, needs_assessor, parse_overrides
from trace_core.cot.teacher import Teacher, make_teacher, safe_generate
from trace_core.data.dataset import query_item
from trace_core.data.instructions import Instructions, parse_instructions
from trace_core.data.mbeir import global_pool_file, instructions_file, iter_candidates, load_queries, union_train_file
from trace_core.io import read_json, sha256_file, write_json, write_jsonl
from trace_core.paths import Paths
from trace_core.types import CandidateRecord, QueryRecord

log = logging.getLogger(__name__)
TeacherFactory = Callable[[], Teacher]
META_TEXT_KEYS = ("caption", "description", "passage", "target_caption")


@dataclass(frozen=True)
class QueryContext:
    """A training query with what the teacher and the filters need."""

    q: QueryRecord
    instruction: str
    text: str | None  # instructed query text
    target_did: str | None
    target_txt: str | None
    source_txt: str | None


def _meta(raw: str | None) -> dict[str, Any]:
    try:
        obj = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def candidate_text(c: CandidateRecord) -> str | None:
    """A candidate's text, or the caption/description/passage in its metadata."""
    if c.txt:
        return c.txt
    m = _meta(c.src_content)
    return next((str(m[k]) for k in META_TEXT_KEYS if m.get(k)), None)


def source_caption(q: QueryRecord) -> str | None:
    """The source caption of an edit query (from its metadata), else ``None``."""
    m = _meta(q.query_src_content)
    return str(m["source_caption"]) if m.get("kind") == "edit" and m.get("source_caption") else None


def pool_texts(pool: Path, wanted: set[str]) -> dict[str, str | None]:
    """Stream the pool once; keep the text of the wanted dids."""
    out: dict[str, str | None] = {}
    for c in iter_candidates(pool):
        if c.did in wanted:
            out[c.did] = candidate_text(c)
    return out


def build_contexts(
    queries: Sequence[QueryRecord], instr: Instructions, seed: int, texts: dict[str, str | None]
) -> list[QueryContext]:
    """Contexts of the queries; the target is the first positive present in the pool."""
    out = []
    for q in queries:
        item, instruction = query_item(q, instr, seed)
        did = next((d for d in q.pos_cand_list if d in texts), None)
        out.append(QueryContext(q, instruction, item.text, did, texts.get(did) if did else None, source_caption(q)))
    return out


def may_reason(queries: Sequence[QueryRecord], cfg: CotGenerateParams) -> list[QueryRecord]:
    """Queries that can end up z=1 (all in assessor mode), whose targets must be looked up."""
    if cfg.routing.mode == "assessor":
        return list(queries)
    ov = parse_overrides(cfg.routing.overrides)
    return [q for q in queries if decide(q.dataset_id, q.task_id, cfg.routing, ov, None).z == 1]


def chain_request(ctx: QueryContext, data_root: Path, show_hint: bool) -> prompts.TeacherRequest:
    """The teacher request of a z=1 query (task-specific prompt)."""
    q = ctx.q
    kind = prompts.prompt_kind(q.dataset_id, q.task_id)
    user = prompts.chain_user_prompt(
        ctx.text, q.query_img_path is not None, q.task_id, ctx.target_txt if show_hint else None
    )
    image = str(data_root / q.query_img_path) if q.query_img_path else None
    return prompts.TeacherRequest(q.qid, "chain", prompts.SYSTEM_PROMPTS[kind], user, image, q.query_src_content)


def assess_request(ctx: QueryContext, data_root: Path) -> prompts.TeacherRequest:
    """The assessor request of a query."""
    q = ctx.q
    user = prompts.assessor_user_prompt(ctx.text, q.query_img_path is not None, q.task_id)
    image = str(data_root / q.query_img_path) if q.query_img_path else None
    return prompts.TeacherRequest(q.qid, "assess", prompts.ASSESSOR_SYSTEM, user, image, q.query_src_content)


def make_row(
    ctx: QueryContext, route: RouteDecision, result: TeacherResult | None, teacher: str | None
) -> dict[str, Any]:
    """One raw row (z=0 rows have status ``direct`` and no teacher output)."""
    q = ctx.q
    status = "direct" if result is None else ("ok" if result.text is not None else "error")
    return {
        "qid": q.qid, "task_id": q.task_id, "dataset_id": q.dataset_id, "z": route.z, "route": route.source,
        "assessor_raw": route.assessor_raw, "assessor_error": route.assessor_error,
        "instruction": ctx.instruction, "query_txt": ctx.text, "query_img_path": q.query_img_path,
        "query_src_content": q.query_src_content,
        "target_did": ctx.target_did, "target_txt": ctx.target_txt, "source_txt": ctx.source_txt,
        "teacher": teacher if result is not None else None, "status": status,
        "raw": None if result is None else result.text, "error": None if result is None else result.error,
    }  # fmt: skip


def _chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class Generator:
    """Generates shard rows; teachers are built lazily (a fully resumed run loads none)."""

    def __init__(
        self, cfg: CotGenerateParams, data_root: Path, teacher: TeacherFactory, assessor: TeacherFactory
    ) -> None:
        self.cfg, self.data_root = cfg, data_root
        self._factories = {"teacher": teacher, "assessor": assessor}
        self._built: dict[str, Teacher] = {}
        self.overrides = parse_overrides(cfg.routing.overrides)

    def get(self, role: str) -> Teacher:
        """The teacher or assessor, built on first use."""
        if role not in self._built:
            self._built[role] = self._factories[role]()
        return self._built[role]

    def close(self) -> None:
        """Release built teachers."""
        for t in self._built.values():
            t.close()

    def _ask(self, role: str, reqs: Sequence[prompts.TeacherRequest]) -> dict[str, TeacherResult]:
        if not reqs:
            return {}
        step = max(self.cfg.teacher.batch_size, self.cfg.teacher.concurrency)
        return {r.id: r for chunk in _chunks(reqs, step) for r in safe_generate(self.get(role), chunk)}

    def route(self, ctxs: Sequence[QueryContext]) -> list[RouteDecision]:
        """Routing decisions of a shard (calls the assessor in assessor mode)."""
        keys = [(c.q.dataset_id, c.q.task_id) for c in ctxs]
        need = needs_assessor(keys, self.cfg.routing, self.overrides)
        labels = self._ask(
            "assessor", [assess_request(c, self.data_root) for c, n in zip(ctxs, need, strict=True) if n]
        )
        return [
            decide(d, t, self.cfg.routing, self.overrides, labels.get(c.q.qid))
            for c, (d, t) in zip(ctxs, keys, strict=True)
        ]

    def shard_rows(self, ctxs: Sequence[QueryContext]) -> list[dict[str, Any]]:
        """All rows of one shard, in query order."""
        routes = self.route(ctxs)
        hint = self.cfg.teacher.show_target_hint
        reqs = [chain_request(c, self.data_root, hint) for c, r in zip(ctxs, routes, strict=True) if r.z == 1]
        results = self._ask("teacher", reqs)
        name = self.get("teacher").name if reqs else None
        return [
            make_row(c, r, results.get(c.q.qid) if r.z == 1 else None, name) for c, r in zip(ctxs, routes, strict=True)
        ]


# --- shard bookkeeping -------------------------------------------------------------------
def shard_path(raw_dir: Path, i: int) -> Path:
    """Rows of shard ``i``."""
    return raw_dir / f"shard-{i:05d}.jsonl"


def manifest_path(raw_dir: Path, i: int) -> Path:
    """Manifest of shard ``i`` (its existence means the shard is complete)."""
    return raw_dir / f"shard-{i:05d}.manifest.json"


def fingerprint(params: Params) -> str:
    """Hash of the params and prompt texts that change generated rows (the shards' resume key).

    Code changes are DVC's business (the stage lists its code as ``deps``); the prompt texts
    are data the teacher sees, so a shard written under other prompts is never reused.
    """
    cfg = {k: v for k, v in dump_params(params)["cot_generate"].items() if k != "max_queries"}  # qids hash covers it
    key = {"cot_generate": cfg, "seed": params.base.seed, "prompts": prompts.prompt_texts()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def qids_hash(ctxs: Sequence[QueryContext]) -> str:
    """Hash of a shard's inputs in order: every query field, instruction and target/source text."""
    h = hashlib.sha256()
    for c in ctxs:
        h.update(json.dumps(asdict(c), sort_keys=True, default=list).encode() + b"\n")
    return h.hexdigest()


def shard_done(raw_dir: Path, i: int, fp: str, qh: str) -> bool:
    """True iff shard ``i`` has a manifest matching the parameters, query ids and file."""
    m, f = manifest_path(raw_dir, i), shard_path(raw_dir, i)
    if not m.exists() or not f.exists():
        return False
    man = read_json(m)
    return bool(man.get("fingerprint") == fp and man.get("qids_sha256") == qh and man.get("sha256") == sha256_file(f))


def row_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Counts of a shard: rows, z=0, z=1, ok and error rows."""
    return {
        "rows": len(rows),
        "z0": sum(r["z"] == 0 for r in rows),
        "z1": sum(r["z"] == 1 for r in rows),
        "ok": sum(r["status"] == "ok" for r in rows),
        "error": sum(r["status"] == "error" for r in rows),
    }


def write_shard(raw_dir: Path, i: int, rows: Sequence[dict[str, Any]], fp: str, qh: str) -> dict[str, int]:
    """Write the rows atomically, then the manifest; return the counts."""
    manifest_path(raw_dir, i).unlink(missing_ok=True)
    write_jsonl(shard_path(raw_dir, i), rows)
    counts = row_counts(rows)
    man = {"shard": i, "fingerprint": fp, "qids_sha256": qh, "sha256": sha256_file(shard_path(raw_dir, i)), **counts}
    write_json(manifest_path(raw_dir, i), man)
    return counts


def remove_stale(raw_dir: Path, n_shards: int) -> None:
    """Delete shards beyond the current count and temp files left by a killed run."""
    for p in raw_dir.glob("shard-*"):
        stem = p.name.split(".", 1)[0]
        if stem[6:].isdigit() and int(stem[6:]) >= n_shards:
            p.unlink()
    for p in raw_dir.glob(".shard-*.tmp"):
        p.unlink()


def generate_shards(
    gen: Generator, ctxs: Sequence[QueryContext], raw_dir: Path, fp: str, shard_size: int
) -> dict[str, int]:
    """Generate every incomplete shard in order; return totals over all shards."""
    total = {"rows": 0, "z0": 0, "z1": 0, "ok": 0, "error": 0, "shards": 0, "shards_skipped": 0}
    bar = tqdm(total=len(ctxs), unit="query", desc="cot-generate", disable=not sys.stderr.isatty())
    for i, chunk in enumerate(_chunks(ctxs, shard_size)):
        qh = qids_hash(chunk)
        if shard_done(raw_dir, i, fp, qh):
            man = read_json(manifest_path(raw_dir, i))
            counts = {k: int(man[k]) for k in ("rows", "z0", "z1", "ok", "error")}
            total["shards_skipped"] += 1
        else:
            counts = write_shard(raw_dir, i, gen.shard_rows(chunk), fp, qh)
        for k, v in counts.items():
            total[k] += v
        total["shards"] += 1
        bar.update(len(chunk))
    bar.close()
    return total


def read_raw_rows(raw_dir: Path) -> Iterator[dict[str, Any]]:
    """Rows of a complete generation in order; ``FileNotFoundError`` if it is incomplete."""
    from trace_core.io import iter_jsonl

    top = raw_dir / "manifest.json"
    if not top.exists():
        raise FileNotFoundError(f"{top}: cot_generate has not completed (run `trace cot-generate`)")
    for i in range(int(read_json(top)["shards"])):
        if not manifest_path(raw_dir, i).exists():
            raise FileNotFoundError(f"{manifest_path(raw_dir, i)}: shard {i} incomplete")
        for _, row in iter_jsonl(shard_path(raw_dir, i)):
            yield row


def run(
    params: Params, paths: Paths, teacher: TeacherFactory | None = None, assessor: TeacherFactory | None = None
) -> dict[str, int]:
    """Stage entry point (``teacher``/``assessor`` factories may be injected, e.g. by tests)."""
    cfg, root = params.cot_generate, paths.data_root
    queries = load_queries(union_train_file(root))[: cfg.max_queries]
    texts = pool_texts(global_pool_file(root, "train"), {d for q in may_reason(queries, cfg) for d in q.pos_cand_list})
    ctxs = build_contexts(queries, parse_instructions(instructions_file(root)), params.base.seed, texts)
    teacher = teacher or (lambda: make_teacher(cfg.teacher, params.base.seed))
    assessor = assessor or (lambda: make_teacher(cfg.routing.assessor or cfg.teacher, params.base.seed))
    n_shards = (len(ctxs) + cfg.shard_size - 1) // cfg.shard_size
    raw = paths.cot_raw_dir
    raw.mkdir(parents=True, exist_ok=True)
    remove_stale(raw, n_shards)
    (raw / "manifest.json").unlink(missing_ok=True)
    gen = Generator(cfg, root, teacher, assessor)
    try:
        total = generate_shards(gen, ctxs, raw, fingerprint(params), cfg.shard_size)
    finally:
        gen.close()
    summary = {k: v for k, v in total.items() if k != "shards_skipped"}  # the same however often resumed
    write_json(raw / "manifest.json", {**summary, "fingerprint": fingerprint(params)})
    log.info("cot-generate: %s", total)
    return total

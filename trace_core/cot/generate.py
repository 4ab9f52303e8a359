"""Stage ``cot_generate``: route training queries and let the teacher write chains.

Output (``paths.cot_raw_dir``): ``shard-NNNNN.jsonl`` holding one row per *distinct* training
query (``data.train_file``; first occurrences in file order, ``max_queries`` first), each
followed by ``shard-NNNNN.manifest.json`` once complete, and ``manifest.json`` (totals) written
last. UniIR's upsampled union file repeats whole records; each distinct query goes to the
teacher once and ``cot_build`` expands the chains back to every occurrence.

Resumable: a shard counts as done iff its manifest exists and matches the current
parameters, its query ids and its file hash; a rerun skips done shards and regenerates the
others, so a killed run continues where it stopped without losing or duplicating a row.
Only z=1 queries go to the teacher; a failed request is an ``error`` row with its reason, and
a rerun asks the teacher again for the error rows of done shards (nothing else).

Teacher health: when more than ``cot_generate.max_error_rate`` of the teacher requests end as
error rows, the stage fails (:class:`TeacherFailure`, exit 2) with the count and the first
reasons, after writing its shards but before the top manifest, so ``cot_curate`` refuses them.
Query images are resolved inside the data root (:mod:`trace_core.data.files`) before any
request is built: a path leading outside fails the stage and nothing is sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trace_core.config import CotGenerateParams, Params, dump_params
from trace_core.cot import prompts
from trace_core.cot.overrides import parse_overrides
from trace_core.cot.prompts import TeacherResult
from trace_core.cot.routing import RouteDecision, decide, needs_assessor
from trace_core.cot.teacher import Teacher, make_teacher, safe_generate
from trace_core.data.dataset import query_item
from trace_core.data.files import open_record_file
from trace_core.data.instructions import Instructions, parse_instructions
from trace_core.data.mbeir import (
    distinct_queries,
    global_pool_file,
    instructions_file,
    iter_candidates,
    load_train_queries,
)
from trace_core.data.normalize import TextNorm
from trace_core.io import iter_jsonl, read_json, sha256_file, write_json, write_jsonl
from trace_core.paths import Paths
from trace_core.types import CandidateRecord, QueryRecord

log = logging.getLogger(__name__)
TeacherFactory = Callable[[], Teacher]
META_TEXT_KEYS = ("caption", "description", "passage", "target_caption")
#: teacher keys that change how requests are sent, never what a successful row holds
TRANSPORT_KEYS = ("api_key_env", "concurrency", "max_retries", "retry_base_delay_s", "max_retry_after_s", "timeout_s")
COUNT_KEYS = ("rows", "z0", "z1", "ok", "error")


class TeacherFailure(ValueError):
    """Too many teacher requests failed; the message gives the count and the first reasons."""


@dataclass(frozen=True)
class QueryContext:
    """A training query with what the teacher and the filters need."""

    q: QueryRecord
    instruction: str
    text: str | None  # instructed query text
    target_did: str | None
    target_txt: str | None
    target_img_path: str | None  # relative to the data root; the verifier sees it when the target has no text
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


def pool_targets(pool: Path, wanted: set[str]) -> dict[str, CandidateRecord]:
    """Stream the pool once; keep the wanted candidates."""
    return {c.did: c for c in iter_candidates(pool) if c.did in wanted}


def build_contexts(
    queries: Sequence[QueryRecord],
    instr: Instructions,
    seed: int,
    targets: dict[str, CandidateRecord],
    mode: TextNorm,
) -> list[QueryContext]:
    """Contexts of the queries; the target is the first positive present in the pool."""
    out = []
    for q in queries:
        item, instruction = query_item(q, instr, seed, mode)
        target = next((targets[d] for d in q.pos_cand_list if d in targets), None)
        out.append(
            QueryContext(
                q,
                instruction,
                item.text,
                target.did if target else None,
                candidate_text(target) if target else None,
                target.img_path if target else None,
                source_caption(q),
            )
        )
    return out


def may_reason(queries: Sequence[QueryRecord], cfg: CotGenerateParams) -> list[QueryRecord]:
    """Queries that can end up z=1 (all in assessor mode), whose targets must be looked up."""
    if cfg.routing.mode == "assessor":
        return list(queries)
    ov = parse_overrides(cfg.routing.overrides)
    return [q for q in queries if decide(q.dataset_id, q.task_id, cfg.routing, ov, None).z == 1]


def query_image(q: QueryRecord, data_root: Path) -> str | None:
    """The real path of a query's image, refused (:class:`DataError`) if it leaves the data root."""
    return str(open_record_file(data_root, q.query_img_path, q.qid)) if q.query_img_path else None


def chain_request(ctx: QueryContext, data_root: Path, show_hint: bool) -> prompts.TeacherRequest:
    """The teacher request of a z=1 query (task-specific prompt)."""
    q = ctx.q
    kind = prompts.prompt_kind(q.dataset_id, q.task_id)
    user = prompts.chain_user_prompt(
        ctx.text, q.query_img_path is not None, q.task_id, ctx.target_txt if show_hint else None
    )
    image = query_image(q, data_root)
    return prompts.TeacherRequest(q.qid, "chain", prompts.SYSTEM_PROMPTS[kind], user, image, q.query_src_content)


def assess_request(ctx: QueryContext, data_root: Path) -> prompts.TeacherRequest:
    """The assessor request of a query."""
    q = ctx.q
    user = prompts.assessor_user_prompt(ctx.text, q.query_img_path is not None, q.task_id)
    image = query_image(q, data_root)
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
        "target_did": ctx.target_did, "target_txt": ctx.target_txt, "target_img_path": ctx.target_img_path,
        "source_txt": ctx.source_txt,
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
        return self._rows(ctxs, self.route(ctxs))

    def _rows(self, ctxs: Sequence[QueryContext], routes: Sequence[RouteDecision]) -> list[dict[str, Any]]:
        hint = self.cfg.teacher.show_target_hint
        reqs = [chain_request(c, self.data_root, hint) for c, r in zip(ctxs, routes, strict=True) if r.z == 1]
        results = self._ask("teacher", reqs)
        name = self.get("teacher").name if reqs else None
        return [
            make_row(c, r, results.get(c.q.qid) if r.z == 1 else None, name) for c, r in zip(ctxs, routes, strict=True)
        ]

    def retry_errors(self, ctxs: Sequence[QueryContext], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """A done shard's rows with its ``error`` rows asked again (their routing decision kept)."""
        if [r["qid"] for r in rows] != [c.q.qid for c in ctxs]:
            return self.shard_rows(ctxs)  # not this shard's rows after all: regenerate it whole
        todo = [i for i, r in enumerate(rows) if r["status"] == "error"]
        routes = [RouteDecision(1, rows[i]["route"], rows[i]["assessor_raw"], rows[i]["assessor_error"]) for i in todo]
        out = list(rows)
        for i, row in zip(todo, self._rows([ctxs[i] for i in todo], routes), strict=True):
            out[i] = row
        return out


# --- shard bookkeeping -------------------------------------------------------------------
def shard_path(raw_dir: Path, i: int) -> Path:
    """Rows of shard ``i``."""
    return raw_dir / f"shard-{i:05d}.jsonl"


def manifest_path(raw_dir: Path, i: int) -> Path:
    """Manifest of shard ``i`` (its existence means the shard is complete)."""
    return raw_dir / f"shard-{i:05d}.manifest.json"


def content_params(cot_generate: dict[str, Any]) -> dict[str, Any]:
    """The ``cot_generate`` params that change what rows hold.

    Left out: ``max_queries`` (the qids hash covers it), ``max_error_rate`` and the teachers'
    transport settings (timeouts, retries, concurrency), so raising a timeout after failures
    retries the error rows instead of regenerating every shard.
    """
    cfg = {k: v for k, v in cot_generate.items() if k not in ("max_queries", "max_error_rate")}
    cfg["teacher"] = _without_transport(cfg["teacher"])
    cfg["routing"] = {**cfg["routing"], "assessor": _without_transport(cfg["routing"]["assessor"])}
    return cfg


def _without_transport(teacher: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if teacher is None else {k: v for k, v in teacher.items() if k not in TRANSPORT_KEYS}


def fingerprint(params: Params) -> str:
    """Hash of the params and prompt texts that change generated rows (the shards' resume key).

    Code changes are DVC's business (the stage lists its code as ``deps``); the prompt texts
    are data the teacher sees, so a shard written under other prompts is never reused.
    """
    key = {
        "cot_generate": content_params(dump_params(params)["cot_generate"]),
        "seed": params.base.seed,
        "prompts": prompts.prompt_texts(),
    }
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
    """Generate every incomplete shard and retry the error rows of done ones; return totals."""
    total = dict.fromkeys([*COUNT_KEYS, "shards", "shards_skipped", "shards_retried"], 0)
    bar = tqdm(total=len(ctxs), unit="query", desc="cot-generate", disable=not sys.stderr.isatty())
    for i, chunk in enumerate(_chunks(ctxs, shard_size)):
        qh = qids_hash(chunk)
        if not shard_done(raw_dir, i, fp, qh):
            counts = write_shard(raw_dir, i, gen.shard_rows(chunk), fp, qh)
        elif int(read_json(manifest_path(raw_dir, i))["error"]):
            rows = [row for _, row in iter_jsonl(shard_path(raw_dir, i))]
            counts = write_shard(raw_dir, i, gen.retry_errors(chunk, rows), fp, qh)
            total["shards_retried"] += 1
        else:
            man = read_json(manifest_path(raw_dir, i))
            counts = {k: int(man[k]) for k in COUNT_KEYS}
            total["shards_skipped"] += 1
        for k, v in counts.items():
            total[k] += v
        total["shards"] += 1
        bar.update(len(chunk))
    bar.close()
    return total


def error_reasons(raw_dir: Path, n_shards: int) -> Counter[str]:
    """How often each error reason occurs in the shards (only shards with errors are read)."""
    reasons: Counter[str] = Counter()
    for i in range(n_shards):
        if int(read_json(manifest_path(raw_dir, i))["error"]):
            reasons.update(str(r["error"]) for _, r in iter_jsonl(shard_path(raw_dir, i)) if r["status"] == "error")
    return reasons


def health_problem(total: dict[str, int], reasons: Counter[str], max_rate: float, listed: int = 3) -> str | None:
    """Why the teacher's error rate fails the stage (count, rate, first reasons), or None when healthy."""
    asked = total["ok"] + total["error"]
    if not asked or total["error"] / asked <= max_rate:
        return None
    top = "; ".join(f"{n} x {reason[:200]!r}" for reason, n in reasons.most_common(listed))
    return (
        f"cot-generate: {total['error']} of {asked} teacher requests failed "
        f"({total['error'] / asked:.1%} > cot_generate.max_error_rate {max_rate:.1%}); first reasons: {top}. "
        "The shards are kept: fix the teacher (cot_generate.teacher) and re-run to retry only the failed rows"
    )


def read_raw_rows(raw_dir: Path) -> Iterator[dict[str, Any]]:
    """Rows of a complete generation in order; ``FileNotFoundError`` if it is incomplete."""
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
    occurrences = load_train_queries(root, params.data.train_file)
    queries = distinct_queries(occurrences)[: cfg.max_queries]  # the teacher sees each query once
    log.info("training queries: %d records, %d distinct (%s)", len(occurrences), len(queries), params.data.train_file)
    targets = pool_targets(
        global_pool_file(root, "train"), {d for q in may_reason(queries, cfg) for d in q.pos_cand_list}
    )
    instr = parse_instructions(instructions_file(root))
    ctxs = build_contexts(queries, instr, params.base.seed, targets, params.data.normalize_text)
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
    log.info("cot-generate: %s", total)
    reasons = error_reasons(raw, n_shards) if total["error"] else Counter[str]()
    problem = health_problem(total, reasons, cfg.max_error_rate)
    if problem:
        raise TeacherFailure(problem)
    if total["error"]:
        log.warning(
            "cot-generate: %d teacher error rows (within max_error_rate); a re-run retries them", total["error"]
        )
    summary: dict[str, Any] = {k: v for k, v in total.items() if k in (*COUNT_KEYS, "shards")}  # same however resumed
    summary.update(train_file=params.data.train_file, training_records=len(occurrences))
    write_json(raw / "manifest.json", {**summary, "fingerprint": fingerprint(params)})
    return total

"""Stage ``cot_curate`` (rule filter, then verifier) and ``trace cot-filter`` (rule filter alone).

Input: the raw shards of ``cot_generate``; only z=1 rows are curated. A teacher error row is
dropped with rule ``teacher``, a rule-filter drop carries its rule (:mod:`.filters`), a
verifier drop carries ``verifier``. Outputs: ``paths.cot_curated`` (kept chains),
``paths.cot_dropped`` (each with ``rule`` and ``detail``), ``metrics/cot_curate.json``
(drops per rule), ``reports/cot_curate.md`` and the Great Expectations result
``reports/cot_curate_checks.json``; the stage fails if the checks fail.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trace_core.config import CotCurateParams, Params
from trace_core.cot.filters import RULES, FilterResult, apply_rules, input_from_dict
from trace_core.cot.generate import read_raw_rows
from trace_core.cot.parse import Chain
from trace_core.cot.report import render_report
from trace_core.cot.teacher import Teacher, make_teacher
from trace_core.cot.text import TokenCounter, token_counter
from trace_core.cot.verify import VerifyItem, passes, verify
from trace_core.io import DataError, iter_jsonl, write_json, write_jsonl, write_text
from trace_core.paths import Paths

log = logging.getLogger(__name__)
STAGE_RULES: tuple[str, ...] = ("teacher", *RULES, "verifier")
FILTER_FIELDS = ("qid", "raw", "query_txt", "target_txt", "source_txt")


# --- cot-filter ---------------------------------------------------------------------------
def read_filter_inputs(path: Path) -> list[dict[str, Any]]:
    """Records of a ``cot-filter`` input file; a bad record raises :class:`DataError`."""
    rows = []
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj.get("qid"), str) or not obj["qid"]:
            raise DataError(path, f"line {lineno}", "field 'qid' must be a non-empty string")
        if "raw" not in obj:
            raise DataError(path, f"line {lineno}", "missing field 'raw' (the teacher's text)")
        for name in FILTER_FIELDS[1:]:
            if obj.get(name) is not None and not isinstance(obj[name], str):
                raise DataError(path, f"line {lineno}", f"field '{name}' must be a string or null")
        task = obj.get("task_id")
        if task is not None and (not isinstance(task, int) or isinstance(task, bool)):
            raise DataError(path, f"line {lineno}", "field 'task_id' must be an integer or null (optional)")
        rows.append(obj)
    return rows


def split_rows(rows: Sequence[dict[str, Any]], res: FilterResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Kept rows (input fields + reasoning, answer) and dropped rows (+ rule, detail), in input order."""
    by_qid = {r["qid"]: r for r in rows}
    kept = [{**by_qid[rec.qid], "reasoning": ch.reasoning, "answer": ch.answer} for rec, ch in res.kept]
    dropped = [{**by_qid[rec.qid], "rule": rule, "detail": detail} for rec, rule, detail in res.dropped]
    return kept, dropped


def filter_rows(rows: Sequence[dict[str, Any]], cfg: CotCurateParams, count: TokenCounter, path: Path) -> FilterResult:
    """The rule filter over rows (qids must be unique)."""
    seen: set[str] = set()
    for r in rows:
        if r["qid"] in seen:
            raise DataError(path, f"record {r['qid']}", "duplicate qid")
        seen.add(r["qid"])
    return apply_rules((input_from_dict(r) for r in rows), cfg, count)


def filter_file(
    cfg: CotCurateParams, in_path: Path, out_path: Path, dropped_path: Path, tokenizer: str | None = None
) -> dict[str, int]:
    """``trace cot-filter``: the rule filter alone on any file of teacher outputs.

    Args:
        cfg: filter parameters.
        in_path: JSONL with ``qid``, ``raw``, ``query_txt``, ``target_txt``, ``source_txt`` and
            optionally ``task_id`` (7 turns on the source check of composed retrieval).
        out_path: kept records, each with ``reasoning`` and ``answer`` added.
        dropped_path: dropped records, each with ``rule`` and ``detail`` added.
        tokenizer: teacher tokenizer directory (default ``cfg.tokenizer``, else the fallback).

    Returns:
        ``{"input", "kept", <rule>: dropped count ...}``.
    """
    rows = read_filter_inputs(Path(in_path))
    count = token_counter(tokenizer or cfg.tokenizer, cfg.fallback_piece_chars)
    res = filter_rows(rows, cfg, count, Path(in_path))
    kept, dropped = split_rows(rows, res)
    write_jsonl(out_path, kept)
    write_jsonl(dropped_path, dropped)
    out = {"input": len(rows), "kept": len(kept), **res.counts()}
    log.info("cot-filter: %s", out)
    return out


# --- cot-curate ---------------------------------------------------------------------------
def verify_rows(
    kept: list[dict[str, Any]], verifier: Teacher, cfg: CotCurateParams, data_root: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Apply the verifier; return (kept, dropped with rule ``verifier``), verdicts recorded."""
    items = [VerifyItem(r["qid"], r["task_id"], r.get("query_txt"), r.get("query_img_path"), r.get("target_txt"),
                        r.get("query_src_content"), Chain(r["reasoning"], r["answer"]), r.get("target_img_path"))
             for r in kept]  # fmt: skip
    verdicts = verify(verifier, items, data_root, cfg.verifier_teacher.batch_size)
    out_kept, out_dropped = [], []
    for r, v in zip(kept, verdicts, strict=True):
        row = {**r, "verifier_decision": v.decision, "verifier_confidence": v.confidence}
        why = passes(v, cfg.verifier_threshold)
        if why:
            out_dropped.append({**row, "rule": "verifier", "detail": why})
        else:
            out_kept.append(row)
    return out_kept, out_dropped


def curate_metrics(
    rows: Sequence[dict[str, Any]], rule_kept: int, kept: int, dropped: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """DVC metrics: counts of queries, teacher rows, kept and drops per rule."""
    teacher_rows = sum(r["z"] == 1 for r in rows)
    per_rule = {rule: sum(d["rule"] == rule for d in dropped) for rule in STAGE_RULES}
    return {
        "queries": len(rows), "z0": sum(r["z"] == 0 for r in rows), "z1": teacher_rows,
        "teacher_rows": teacher_rows, "rule_kept": rule_kept, "kept": kept, "dropped": per_rule,
        "dropped_total": sum(per_rule.values()), "kept_fraction": kept / teacher_rows if teacher_rows else 0.0,
    }  # fmt: skip


def curate(
    rows: Sequence[dict[str, Any]], cfg: CotCurateParams, count: TokenCounter, verifier: Teacher | None, data_root: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Teacher errors, rule filter, verifier; return (kept, dropped, metrics)."""
    z1 = [r for r in rows if r["z"] == 1]
    errors = [{**r, "rule": "teacher", "detail": r.get("error") or "no output"} for r in z1 if r["status"] != "ok"]
    ok = [r for r in z1 if r["status"] == "ok"]
    kept, dropped = split_rows(ok, filter_rows(ok, cfg, count, Path("<raw shards>")))
    rule_kept = len(kept)
    if verifier is not None:
        kept, v_dropped = verify_rows(kept, verifier, cfg, data_root)
        dropped += v_dropped
    dropped = errors + dropped
    return kept, dropped, curate_metrics(rows, rule_kept, len(kept), dropped)


def make_verifier(params: Params) -> Teacher | None:
    """The verifier named by ``cot_curate.verifier`` (``None`` for ``none``)."""
    cfg = params.cot_curate
    if cfg.verifier == "none":
        return None
    tp = (
        cfg.verifier_teacher if cfg.verifier != "oracle" else cfg.verifier_teacher.model_copy(update={"kind": "oracle"})
    )
    return make_teacher(tp, params.base.seed, cfg.keyword_min_chars)


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Stage entry point: read raw shards, curate, write outputs, metrics, report and checks."""
    from trace_core.cot.checks import check_curated

    cfg = params.cot_curate
    rows = list(read_raw_rows(paths.cot_raw_dir))
    count = token_counter(cfg.tokenizer, cfg.fallback_piece_chars)
    verifier = make_verifier(params)
    try:
        kept, dropped, metrics = curate(rows, cfg, count, verifier, paths.data_root)
    finally:
        if verifier is not None:
            verifier.close()
    checks = check_curated(kept, cfg, count)
    metrics["checks_success"] = checks["success"]
    write_jsonl(paths.cot_curated, kept)
    write_jsonl(paths.cot_dropped, dropped)
    write_json(paths.reports_dir / "cot_curate_checks.json", checks)
    write_text(paths.reports_dir / "cot_curate.md", render_report(metrics, dropped, cfg.report_examples))
    write_json(paths.metrics_file("cot_curate"), metrics)
    log.info(
        "cot-curate: kept %d of %d teacher rows; drops %s", metrics["kept"], metrics["teacher_rows"], metrics["dropped"]
    )
    if not checks["success"]:
        raise DataError(paths.cot_curated, "checks", f"Great Expectations failed: {', '.join(checks['failed'])}")
    return metrics

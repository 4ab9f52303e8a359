"""Stage ``validate``: Great Expectations suites over whatever M-BEIR files are present.

:func:`trace_core.data.validate.checks.collect` streams the files into tables (structural problems
become issues with file and line); one GX suite per table checks every rule, each rule a
named expectation, so Data Docs show them all. Outputs (written atomically, Data Docs
swapped in whole): ``reports/validation/{summary.json,index.html,data_docs/}`` and
``metrics/validation.json``; ``index.html`` is the self-contained (offline) index of every rule,
its reason and its result, GX's own pages are under ``data_docs/``. Only ``summary.json`` is a
DVC output: GX stamps its Data Docs with run times and ids (and the index links to those pages),
so they are a view (logged to MLflow), not a reproducible artifact.
The stage passes only when every expectation and every file does.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trace_core.config import Params
from trace_core.data.mbeir import DATASETS, TASKS, TEST_TASKS
from trace_core.data.validate.checks import Tables, collect
from trace_core.data.validate.docs import RATIONALE, gx_links, link_gx_index, note, render_index
from trace_core.io import write_json, write_text
from trace_core.paths import Paths
from trace_core.types import MODALITIES

log = logging.getLogger(__name__)
ID_REGEX = rf"^(?:{'|'.join(str(d) for d in DATASETS)}):[1-9][0-9]*$"
IDS: dict[str, list[str]] = {
    "queries": ["file", "line", "qid"],
    "candidates": ["file", "line", "did"],
    "qrels": ["file", "line", "qid", "did"],
    "images": ["img_path", "referenced_at"],
    "instructions": ["file", "line"],
    "files": ["file", "first_issue"],
    "tasks": ["stem", "qrels_file"],
}


@dataclass(frozen=True)
class Rule:
    """One validation rule: the table it reads, how to build its expectation, what it means."""

    name: str
    table: str
    kind: str
    column: str | list[str]
    description: str
    value_set: tuple[Any, ...] | None = None
    regex: str | None = None


def _flag(name: str, table: str, column: str, description: str) -> Rule:
    return Rule(name, table, "in_set", column, description, value_set=(True,))


RULES: tuple[Rule, ...] = (
    _flag("file_well_formed", "files", "well_formed", "every line is a JSON object with the required fields and types"),
    Rule("qid_format", "queries", "regex", "qid", "qid is '<dataset_id>:<n>' with a known dataset id", regex=ID_REGEX),
    _flag(
        "qid_unique_per_file",
        "queries",
        "qid_unique",
        "qids are unique within a query file (only the upsampled union train file may repeat one)",
    ),
    _flag(
        "qid_repeats_identical",
        "queries",
        "repeat_identical",
        "a qid repeated in the upsampled union train file repeats the identical record",
    ),
    Rule(
        "query_modality_known",
        "queries",
        "in_set",
        "query_modality",
        "query_modality is text, image or 'image,text'",
        MODALITIES,
    ),
    _flag(
        "query_modality_matches_content",
        "queries",
        "modality_matches_content",
        "query_modality matches null/non-null txt and image",
    ),
    Rule("task_id_known", "queries", "in_set", "task_id", "task_id is an M-BEIR task id", tuple(TASKS)),
    _flag(
        "task_matches_query_modality",
        "queries",
        "task_matches_query_modality",
        "task_id agrees with the query modality",
    ),
    _flag("task_matches_file", "queries", "task_matches_file", "qid dataset and task_id agree with the file name"),
    _flag(
        "positive_datasets_allowed",
        "queries",
        "positive_datasets_allowed",
        "positives belong to the query's dataset (OVEN/InfoSeek may cross)",
    ),
    _flag("positives_in_pool", "queries", "positives_in_pool", "every positive did exists in the split's pool"),
    _flag(
        "positives_match_task_modality",
        "queries",
        "positives_match_task_modality",
        "positives have the task's candidate modality",
    ),
    _flag("instruction_covered", "queries", "instruction_covered", "instructions have a prompt for the query's key"),
    _flag("query_in_qrels", "queries", "in_qrels", "every test query appears in its task's qrels file"),
    Rule(
        "did_format", "candidates", "regex", "did", "did is '<dataset_id>:<n>' with a known dataset id", regex=ID_REGEX
    ),
    Rule("did_unique_per_pool", "candidates", "unique", ["file", "did"], "dids are unique within a pool file"),
    Rule(
        "candidate_modality_known",
        "candidates",
        "in_set",
        "modality",
        "modality is text, image or 'image,text'",
        MODALITIES,
    ),
    _flag(
        "candidate_modality_matches_content",
        "candidates",
        "modality_matches_content",
        "modality matches null/non-null txt and image",
    ),
    _flag("qrels_qid_in_query_file", "qrels", "qid_in_query_file", "every qrels qid exists in its query file"),
    _flag("qrels_did_in_pool", "qrels", "did_in_pool", "every qrels did exists in the task's pool"),
    _flag("qrels_task_matches_file", "qrels", "task_matches_file", "qrels task id agrees with the file name"),
    _flag("test_task_has_qrels", "tasks", "has_qrels", "every test task present has its qrels file"),
    _flag("image_exists", "images", "exists", "every referenced image exists"),
    _flag("image_decodes", "images", "decodes", "every referenced image decodes"),
    Rule(
        "instruction_dataset_known",
        "instructions",
        "in_set",
        "dataset_id",
        "instruction dataset id is known",
        tuple(DATASETS),
    ),
)


def make_expectation(rule: Rule) -> Any:
    """The GX expectation of a rule: name, description and rationale in ``meta``, the sentence in ``notes``."""
    import great_expectations.expectations as gxe

    notes = note(rule.name, rule.description)  # shown by Data Docs under the expectation
    meta = {"rule": rule.name, "description": rule.description, "why": RATIONALE.get(rule.name, "")}
    if rule.kind == "unique":
        return gxe.ExpectCompoundColumnsToBeUnique(column_list=list(rule.column), meta=meta, notes=notes)
    column = rule.column if isinstance(rule.column, str) else rule.column[0]
    if rule.kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(column=column, regex=rule.regex or "", meta=meta, notes=notes)
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(rule.value_set or ()), meta=meta, notes=notes)


def _locate(item: dict[str, Any], table: str) -> str:
    if table == "images":
        return f"{item.get('img_path')} (referenced at {item.get('referenced_at')})"
    if table == "files":
        return str(item.get("first_issue") or item.get("file"))
    if table == "tasks":
        return f"{item.get('stem')}: {item.get('qrels_file')}"
    ident = item.get("qid") or item.get("did")
    return f"{item.get('file')}:line {item.get('line')}" + (f" ({ident})" if ident else "")


def rule_failure(rule: Rule, result: dict[str, Any]) -> dict[str, Any]:
    """Failure record of one expectation: rule, count and the first offenders located."""
    listed = result.get("partial_unexpected_index_list") or result.get("unexpected_index_list") or []
    examples = [f"{_locate(item, rule.table)}: {rule.name}: {rule.description}" for item in listed]
    count = result.get("unexpected_count", len(examples))
    return {
        "rule": rule.name,
        "table": rule.table,
        "description": rule.description,
        "count": count,
        "examples": examples,
    }


def _context(docs_dir: Path) -> Any:
    """Ephemeral GX context: in-memory stores, one filesystem Data Docs site, no progress bars."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={"mbeir": site},
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def expectation_row(rule: Rule, success: bool, result: dict[str, Any]) -> dict[str, Any]:
    """One row of the offline index: the rule, its sentence, rows checked and unexpected count."""
    column = rule.column if isinstance(rule.column, str) else ", ".join(rule.column)
    kinds = {"unique": "unique", "regex": "match regex", "in_set": "in set"}
    return {
        "suite": f"mbeir_{rule.table}",
        "rule": rule.name,
        "column": column,
        "expectation": kinds.get(rule.kind, rule.kind),
        "note": note(rule.name, rule.description),
        "success": success,
        "element_count": result.get("element_count"),
        "unexpected_count": result.get("unexpected_count", 0),
    }


def run_suites(
    tables: Tables, docs_dir: Path, max_listed: int
) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run one suite per table, build Data Docs into ``docs_dir``; return (checks, failures, rows)."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # before import: its INFO lines are noise
    import great_expectations as gx

    ctx = _context(docs_dir)
    source = ctx.data_sources.add_pandas("mbeir")
    failures: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for table, ids in IDS.items():
        rules = [r for r in RULES if r.table == table]
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"mbeir_{table}"))
        for rule in rules:
            suite.add_expectation(make_expectation(rule))
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"mbeir_{table}", data=batch, suite=suite))
        fmt = {"result_format": "SUMMARY", "partial_unexpected_count": max_listed, "unexpected_index_column_names": ids}
        result = vd.run(batch_parameters={"dataframe": getattr(tables, table)}, result_format=fmt)
        by_name = {r.name: r for r in rules}
        for er in result.results:
            rule = by_name[er.expectation_config.meta["rule"]]
            rows.append(expectation_row(rule, bool(er.success), er.result))
            if not er.success:
                failures.append(rule_failure(rule, er.result))
    ctx.build_data_docs()
    return len(RULES), failures, rows


def summarize(
    root: Path, tables: Tables, checks: int, failures: list[dict[str, Any]], max_listed: int
) -> dict[str, Any]:
    """The JSON summary: found test tasks, counts, every failed rule with located examples."""
    found = tables.found_test_tasks
    return {
        "data_root": display_path(root),
        "success": not failures and not tables.issues,
        "found_test_tasks": found,
        "missing_test_tasks": [t.stem for t in TEST_TASKS if t.stem not in found],
        "counts": {name: len(getattr(tables, name)) for name in IDS},
        "checks": checks,
        "failed_checks": len(failures),
        "failures": failures,
        "issues": [str(i) for i in tables.issues[:max_listed]],
        "n_issues": len(tables.issues),
    }


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it (no machine paths in DVC outputs)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat numbers for ``metrics/validation.json`` (DVC metrics)."""
    return {
        "success": int(summary["success"]),
        "checks": summary["checks"],
        "failed_checks": summary["failed_checks"],
        "structural_issues": summary["n_issues"],
        "found_test_tasks": len(summary["found_test_tasks"]),
        **{f"n_{k}": v for k, v in summary["counts"].items()},
    }


def _swap_dir(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _log_outcome(summary: dict[str, Any], report: Callable[..., None] = log.error) -> None:
    for issue in summary["issues"]:
        report("%s", issue)
    for f in summary["failures"]:
        report("rule %s failed on %d rows (%s)", f["rule"], f["count"], f["description"])
        for example in f["examples"]:
            report("  %s", example)


def validate_root(root: Path, out_dir: Path, fraction: float, max_listed: int) -> dict[str, Any]:
    """Validate ``root``; write Data Docs and ``summary.json`` under ``out_dir``; return the summary."""
    tables = collect(root, fraction)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".data_docs."))
    try:
        checks, failures, rows = run_suites(tables, tmp, max_listed)
        link_gx_index(tmp / "index.html")
        links = gx_links(tmp)
        _swap_dir(tmp, out_dir / "data_docs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {**summarize(root, tables, checks, failures, max_listed), "expectations": rows}
    write_json(out_dir / "summary.json", summary)
    write_text(out_dir / "index.html", render_index(summary, links))  # offline: no CDN assets needed
    return summary


def run(params: Params, paths: Paths, data_root: Path | None = None) -> bool:
    """Validate an M-BEIR root; True only when every rule passes on every file present."""
    root = data_root or paths.data_root
    cfg = params.validate_
    if not root.is_dir():
        log.error("%s: data root not found", root)
        return False
    summary = validate_root(root, paths.validation_dir, cfg.image_check_fraction, cfg.max_failures_listed)
    write_json(paths.metrics_file("validation"), metrics(summary))
    log.info("found %d of 16 test tasks: %s", len(summary["found_test_tasks"]), ", ".join(summary["found_test_tasks"]))
    if summary["success"]:
        log.info("validation passed: %d checks over %s", summary["checks"], summary["counts"])
    else:
        _log_outcome(summary)
        log.error("validation FAILED: %d rules, %d structural issues", summary["failed_checks"], summary["n_issues"])
    return bool(summary["success"])

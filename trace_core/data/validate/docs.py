"""Human-readable validation docs: why each rule exists, and an offline HTML index of the results.

Great Expectations' Data Docs load Bootstrap, jQuery and bootstrap-table from CDNs; offline,
their index renders as an empty, unstyled table. :func:`render_index` writes the same
information (every suite, every expectation with its sentence, rows checked, unexpected
values, located failures) as one self-contained page (inline CSS, no script) at
``reports/validation/index.html``, linking to GX's own pages for detail; :func:`link_gx_index`
puts a link back to it at the top of GX's index.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: why each rule matters (what breaks downstream if it fails), by rule name.
RATIONALE: dict[str, str] = {
    "file_well_formed": "a line that is not a well-typed JSON object cannot be read by export or evaluate, "
    "and a silently skipped line would change the query or candidate counts",
    "qid_format": "the dataset id before the colon routes a query to its instructions, task and pool; "
    "an id without it cannot be attributed",
    "qid_unique_per_file": "run files and qrels are keyed by qid: a duplicate would merge two queries' "
    "rankings and double-count one of them in recall",
    "qid_repeats_identical": "UniIR upsamples the union train file by repeating whole records; a repeated qid "
    "whose content differs is two different queries under one id, and training would mix them",
    "query_modality_known": "the model builds its input from the declared modality; an unknown one has no encoding",
    "query_modality_matches_content": "a query that declares an image but has none (or the reverse) would be "
    "encoded from missing content",
    "task_id_known": "the task id selects the instruction and the reported cut-off; unknown tasks cannot be scored",
    "task_matches_query_modality": "each M-BEIR task fixes the query modality; a mismatch means the query sits "
    "in the wrong task and its score lands in the wrong column",
    "task_matches_file": "the file name decides the table column; a record of another dataset or task in it "
    "would be scored under the wrong column",
    "positive_datasets_allowed": "positives from another dataset point at the wrong pool (only OVEN and "
    "InfoSeek share entities), so the query could never be answered",
    "positives_in_pool": "a positive that is not in the searched pool can never be retrieved, which caps recall "
    "below 100% without any model error",
    "positives_match_task_modality": "the task fixes the candidate modality; a positive of another modality "
    "is a labelling error",
    "instruction_covered": "every query is encoded with an instruction for its (dataset, modality) key; "
    "without one it would be encoded differently from training",
    "query_in_qrels": "recall is computed over the qrels' queries: a test query without a judgement is "
    "silently left out of its task's number (or scored 0 by tools that read the query file)",
    "did_format": "the dataset id in a did ties a candidate to its pool and to the qrels",
    "did_unique_per_pool": "index positions map back to dids; a duplicate did makes two vectors answer for "
    "one candidate",
    "candidate_modality_known": "the candidate encoder builds its input from the declared modality",
    "candidate_modality_matches_content": "a candidate declaring content it lacks would be embedded from nothing",
    "qrels_qid_in_query_file": "a qrels line for an unknown qid is a judgement no query uses, usually a "
    "mismatched file",
    "qrels_did_in_pool": "a judged positive outside the pool can never be found, which lowers recall for "
    "reasons the model cannot influence",
    "qrels_task_matches_file": "qrels of another task in this file would score queries against foreign labels",
    "test_task_has_qrels": "without its qrels file a task cannot be scored and its table column would be "
    "empty while the average quietly covers fewer tasks",
    "image_exists": "export reads every referenced image; a missing file stops the pipeline mid-run",
    "image_decodes": "a truncated or corrupt image fails (or silently degrades) the image encoder",
    "instruction_dataset_known": "instructions are keyed by dataset id; an unknown id is a typo that leaves "
    "some real dataset without prompts",
}


def note(rule: str, description: str) -> str:
    """The sentence an expectation carries: what the rule checks and why (missing rationale: what only)."""
    why = RATIONALE.get(rule)
    return f"Checks that {description}. Why: {why}." if why else f"Checks that {description}."


# --- offline HTML index -------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:26px 0 8px}
.ok{color:#1a7f37;font-weight:700}.bad{color:#cf222e;font-weight:700}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #d8dde6;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}tr.fail td{background:#fff0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#5a6475;font-size:12px}code{font-size:12px}
ul.ex{margin:4px 0 0 18px;padding:0;font-size:12px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _status(ok: bool) -> str:
    return '<span class="ok">&#10003; passed</span>' if ok else '<span class="bad">&#10007; failed</span>'


def _counts_table(counts: Mapping[str, int]) -> str:
    head = "".join(f"<th>{_esc(k)}</th>" for k in counts)
    cells = "".join(f'<td class="num">{v:,}</td>' for v in counts.values())
    return f"<table><tr>{head}</tr><tr>{cells}</tr></table>"


def _suite_rows(rows: Sequence[Mapping[str, Any]], examples: Mapping[str, Sequence[str]]) -> str:
    out = []
    for r in rows:
        ex = examples.get(r["rule"], ())
        listed = "<ul class=ex>" + "".join(f"<li>{_esc(e)}</li>" for e in ex) + "</ul>" if ex else ""
        out.append(
            f'<tr class="{"pass" if r["success"] else "fail"}"><td>{_status(bool(r["success"]))}</td>'
            f"<td><code>{_esc(r['rule'])}</code><div class=muted>{_esc(r['expectation'])} on "
            f"<code>{_esc(r['column'])}</code></div></td><td>{_esc(r['note'])}{listed}</td>"
            f'<td class="num">{int(r.get("element_count") or 0):,}</td>'
            f'<td class="num">{int(r.get("unexpected_count") or 0):,}</td></tr>'
        )
    return "".join(out)


def render_index(summary: Mapping[str, Any], links: Mapping[str, Mapping[str, str]]) -> str:
    """The offline validation index: overall status, counts, then one table per suite.

    Args:
        summary: ``summary.json`` content (with its ``expectations`` rows).
        links: suite name -> {"results": ..., "suite": ...} relative links to GX's pages of that suite.
    """
    examples = {f["rule"]: f["examples"] for f in summary.get("failures", [])}
    suites: dict[str, list[Mapping[str, Any]]] = {}
    for row in summary.get("expectations", []):
        suites.setdefault(row["suite"], []).append(row)
    parts = [
        f"<h1>M-BEIR validation: {_status(bool(summary['success']))}</h1>",
        f"<p class=muted>data root <code>{_esc(summary['data_root'])}</code>; {summary['checks']} rules, "
        f"{summary['failed_checks']} failed; {summary['n_issues']} structural issue(s); "
        f"{len(summary['found_test_tasks'])} of 16 test tasks present. Great Expectations' own pages: "
        '<a href="data_docs/index.html">data_docs/index.html</a> (styled only with internet access).</p>',
        _counts_table(summary["counts"]),
    ]
    if summary.get("issues"):
        items = "".join(f"<li>{_esc(i)}</li>" for i in summary["issues"])
        parts.append(f"<h2>Structural issues</h2><ul class=ex>{items}</ul>")
    for suite, rows in suites.items():
        ok = all(r["success"] for r in rows)
        link = "".join(
            f' <a class=muted href="{_esc(href)}">GX {_esc(kind)} page</a>'
            for kind, href in sorted(links.get(suite, {}).items())
        )
        parts.append(
            f"<h2>{_esc(suite)} {_status(ok)}{link}</h2><table><tr><th>status</th><th>rule</th>"
            f"<th>what it checks and why</th><th>rows</th><th>unexpected</th></tr>{_suite_rows(rows, examples)}</table>"
        )
    body = "".join(parts)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>M-BEIR validation</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def gx_links(docs_dir: Path, prefix: str = "data_docs") -> dict[str, dict[str, str]]:
    """Suite name -> {"results": GX validation page, "suite": GX suite page}, relative to the index's folder."""
    links: dict[str, dict[str, str]] = {}
    for page in sorted((docs_dir / "expectations").glob("*.html")):
        links.setdefault(page.stem, {})["suite"] = f"{prefix}/{page.relative_to(docs_dir).as_posix()}"
    for page in sorted((docs_dir / "validations").glob("*/*/*/*.html")):
        suite = page.relative_to(docs_dir / "validations").parts[0]
        links.setdefault(suite, {})["results"] = f"{prefix}/{page.relative_to(docs_dir).as_posix()}"
    return links


BANNER = (
    '<div style="background:#fff8c5;border-bottom:1px solid #d4a72c;padding:8px 16px;font:14px sans-serif">'
    'Offline? This page needs CDN assets. <a href="../index.html">Open the self-contained validation index</a> '
    "(every rule, its reason and its result).</div>"
)


def link_gx_index(index: Path) -> None:
    """Put :data:`BANNER` (a link to the offline index) right after ``<body>`` of GX's index page."""
    if not index.is_file():
        return
    text = index.read_text(encoding="utf-8")
    if BANNER in text or "<body>" not in text:
        return
    index.write_text(text.replace("<body>", "<body>" + BANNER, 1), encoding="utf-8")

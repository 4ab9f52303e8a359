"""The curation report (markdown): counts, drops per rule, examples of each drop reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_CHARS = 240  # examples are shortened to this many characters in the report


def _short(text: Any) -> str:
    s = str(text).replace("\n", " ").replace("|", "\\|")
    return s if len(s) <= MAX_CHARS else s[: MAX_CHARS - 3] + "..."


def render_report(metrics: dict[str, Any], dropped: Sequence[dict[str, Any]], n_examples: int) -> str:
    """Markdown with the totals, the per-rule table and up to ``n_examples`` examples per rule."""
    lines = [
        "# M-BEIR-CoT curation",
        "",
        f"- training queries: {metrics['queries']} (z=0: {metrics['z0']}, z=1: {metrics['z1']})",
        f"- teacher rows: {metrics['teacher_rows']} (errors: {metrics['dropped']['teacher']})",
        f"- kept after rule filter: {metrics['rule_kept']}; after verifier: {metrics['kept']}",
        f"- kept fraction of teacher rows: {metrics['kept_fraction']:.3f}",
        "",
        "| rule | dropped |",
        "|---|---|",
        *[f"| {rule} | {n} |" for rule, n in metrics["dropped"].items()],
        "",
    ]
    for rule, n in metrics["dropped"].items():
        if not n:
            continue
        lines += [f"## {rule} ({n})", ""]
        for row in [r for r in dropped if r["rule"] == rule][:n_examples]:
            lines.append(f"- `{row['qid']}`: {_short(row['detail'])}")
            lines.append(f"  - output: {_short(row.get('raw'))}")
        lines.append("")
    return "\n".join(lines)

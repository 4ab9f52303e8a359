"""Great Expectations checks on the curated chains (format, lengths, no empty fields)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trace_core.config import CotCurateParams
from trace_core.cot.text import TokenCounter

TAG_REGEX = r"</?(?:reasoning|answer)>"


def curated_frame(rows: Sequence[dict[str, Any]], count: TokenCounter) -> Any:
    """A pandas frame of the curated rows with their token counts."""
    import pandas as pd

    cols = ["qid", "reasoning", "answer", "reasoning_tokens", "answer_tokens", "z"]
    data = [{**{k: r.get(k) for k in cols[:3]}, "reasoning_tokens": count(r["reasoning"]),
             "answer_tokens": count(r["answer"]), "z": r.get("z")} for r in rows]  # fmt: skip
    return pd.DataFrame(data, columns=cols)


def expectations(cfg: CotCurateParams) -> list[Any]:
    """The suite: ids unique, fields non-empty and tag-free, lengths within the rule bounds.

    Each expectation carries a sentence in ``notes`` saying what it checks and why.
    """
    import great_expectations as gx

    e = gx.expectations
    out: list[Any] = [
        e.ExpectColumnValuesToBeUnique(
            column="qid", notes="Checks that each query has one chain. Why: cot_build joins chains to queries by qid."
        ),
        e.ExpectColumnValuesToBeInSet(
            column="z",
            value_set=[1],
            notes="Checks that every curated row is a reasoning (z=1) query. Why: z=0 queries get no chain.",
        ),
    ]
    for col in ("qid", "reasoning", "answer"):
        why = f"Why: an empty {col} would train the model to emit nothing before <|emb|>."
        out.append(e.ExpectColumnValuesToNotBeNull(column=col, notes=f"Checks that {col} is present. {why}"))
        non_empty = f"Checks that {col} is non-empty. {why}"
        out.append(e.ExpectColumnValueLengthsToBeBetween(column=col, min_value=1, notes=non_empty))
    for col in ("reasoning", "answer"):
        out.append(
            e.ExpectColumnValuesToNotMatchRegex(
                column=col,
                regex=TAG_REGEX,
                notes=f"Checks that {col} holds no <reasoning>/<answer> tags. Why: cot_build adds the tags itself; "
                "leftovers mean the teacher's output was parsed wrongly.",
            )
        )
    bounds = {
        "reasoning_tokens": (cfg.reasoning_min_tokens, cfg.reasoning_max_tokens),
        "answer_tokens": (cfg.answer_min_tokens, cfg.answer_max_tokens),
    }
    for col, (lo, hi) in bounds.items():
        note = (
            f"Checks that {col} is within the length rule ({lo}-{hi}). Why: the rule filter should already have "
            "dropped others; a violation means the filter and this check disagree."
        )
        out.append(e.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi, notes=note))
    return out


def check_curated(rows: Sequence[dict[str, Any]], cfg: CotCurateParams, count: TokenCounter) -> dict[str, Any]:
    """Run the suite on the curated rows; return ``{"success", "failed", "results"}`` (JSON-able)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        ctx.data_sources.add_pandas("cot").add_dataframe_asset("curated").add_batch_definition_whole_dataframe("all")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name="cot_curated"))
    for exp in expectations(cfg):
        suite.add_expectation(exp)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(data=batch, suite=suite, name="cot_curated"))
    res = vd.run(batch_parameters={"dataframe": curated_frame(rows, count)})
    summary = res.describe_dict()
    failed = [
        f"{x['expectation_type']}({x.get('kwargs', {}).get('column', '')})"
        for x in summary["expectations"]
        if not x["success"]
    ]
    return {"success": bool(res.success), "failed": failed, "results": summary}

"""CIRCO mAP@k and ITM accuracy, and `trace score --metric map` against an independent implementation."""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trace_core.cli import app
from trace_core.evaluation.metrics import (
    RunEntry,
    average_precision_at_k,
    format_run_line,
    itm_accuracy,
    map_at_ks,
    score_run_files,
)


def test_average_precision_by_hand() -> None:
    ranked = ["a", "x", "b", "y", "c"]
    # positives at ranks 1, 3, 5: (1/1 + 2/3 + 3/5) / min(5, 3)
    assert average_precision_at_k(ranked, {"a", "b", "c"}, 5) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # only ranks <= k count; the divisor is min(k, #positives)
    assert average_precision_at_k(ranked, {"a", "b", "c"}, 2) == pytest.approx(1 / 2)
    # more positives than k: divide by k
    assert average_precision_at_k(ranked, {"a", "b", "c", "d", "e", "f"}, 3) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k(["x", "y"], {"a"}, 5) == 0.0
    assert average_precision_at_k(ranked, frozenset(), 5) == 0.0
    assert average_precision_at_k(["a", "a", "b"], {"a", "b"}, 3) == pytest.approx((1 + 2 / 3) / 2)  # repeat once
    with pytest.raises(ValueError):
        average_precision_at_k(ranked, {"a"}, 0)


def test_map_missing_query_scores_zero() -> None:
    out = map_at_ks({"q1": ["a", "b"]}, {"q1": {"a"}, "q2": {"z"}}, ["q1", "q2"], [1, 5])
    assert out == {"MAP@1": 0.5, "MAP@5": 0.5, "n_queries": 2.0}


def test_itm_accuracy_is_strictly_above_every_negative() -> None:
    out = itm_accuracy([0.9, 0.5, 0.5, 0.2], [[0.1], [0.5], [0.4, 0.6], []])
    assert out == {"accuracy": 0.5, "n_queries": 4.0}  # a tie is wrong; no negatives is right
    with pytest.raises(ValueError):
        itm_accuracy([0.1], [])


# --- planted runs vs an independent implementation ------------------------------------------------
def _independent_map(ranked: dict[str, list[str]], gts: dict[str, list[str]], k: int) -> float:
    """mAP@k as the CIRCO evaluation server computes it, in exact fractions."""
    total = Fraction(0)
    for qid, gt in gts.items():
        preds = ranked.get(qid, [])[:k]
        labels = [1 if p in gt else 0 for p in preds]
        cum = 0
        ap = Fraction(0)
        for i, label in enumerate(labels, start=1):
            cum += label
            if label:
                ap += Fraction(cum, i)
        total += ap / min(len(gt), k)
    return float(total / len(gts))


def _planted(tmp_path: Path, seed: int) -> tuple[Path, Path, dict[str, list[str]], dict[str, list[str]]]:
    rng = random.Random(seed)
    pool = [f"circo:{i}" for i in range(60)]
    gts = {f"q{n}": rng.sample(pool, rng.randint(1, 7)) for n in range(40)}
    ranked: dict[str, list[str]] = {}
    for qid, gt in gts.items():
        if rng.random() < 0.2:
            continue  # missing from the run: scores 0
        cands = rng.sample(gt, rng.randint(0, len(gt))) + rng.sample(pool, 25)
        ranked[qid] = list(dict.fromkeys(rng.sample(cands, len(cands))))[:20]
    ranked["not-in-qrels"] = pool[:10]  # ignored
    lines = [
        format_run_line(RunEntry(q, d, r, 1.0 / r, "t", 7)) for q, ds in ranked.items() for r, d in enumerate(ds, 1)
    ]
    rng.shuffle(lines)  # file order must not matter: ranks decide
    run = tmp_path / f"run{seed}.txt"
    run.write_text("".join(lines))
    qrels = tmp_path / f"circo{seed}_qrels.txt"
    qrels.write_text("".join(f"{q} 0 {d} 1 7\n" for q, gt in gts.items() for d in gt))
    return run, qrels, ranked, gts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_map_matches_independent_implementation(tmp_path: Path, seed: int) -> None:
    run, qrels, ranked, gts = _planted(tmp_path, seed)
    out = score_run_files(run, [qrels], [1, 5, 10, 25], "map")[f"circo{seed}"]
    assert out["n_queries"] == len(gts)
    for k in (1, 5, 10, 25):
        assert out[f"MAP@{k}"] == pytest.approx(_independent_map(ranked, gts, k), rel=1e-12, abs=1e-15)
    assert 0.0 < out["MAP@5"] < 1.0


def test_trace_score_cli_prints_map(tmp_path: Path) -> None:
    run, qrels, ranked, gts = _planted(tmp_path, 7)
    result = CliRunner().invoke(app, ["score", "--run", str(run), "--qrels", str(qrels), "--k", "5", "--metric", "map"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert set(printed) == {"circo7"} and set(printed["circo7"]) == {"MAP@5", "n_queries"}
    assert printed["circo7"]["MAP@5"] == pytest.approx(_independent_map(ranked, gts, 5), rel=1e-12)
    recall = CliRunner().invoke(app, ["score", "--run", str(run), "--qrels", str(qrels), "--k", "1,5"])
    assert set(json.loads(recall.output)["circo7"]) == {"R@1", "R@5", "n_queries"}


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--metric", "ndcg"], "metric must be one of recall, map"), (["--k", "0"], "every k must be >= 1")],
)
def test_trace_score_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    run, qrels, _, _ = _planted(tmp_path, 3)
    result = CliRunner().invoke(app, ["score", "--run", str(run), "--qrels", str(qrels), *args])
    assert result.exit_code == 2
    assert message in result.output

"""Validation and the CoT stages on the real-layout sample (tests/fixtures/mbeir_real), no model.

Validation accepts UniIR's upsampled union train file (identical repeats) and names both lines of
a qid repeated with other content; test and per-dataset files keep unique qids. cot_generate
sends every distinct query to the teacher once; cot_build expands the chains to every occurrence.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from trace_core.config import Params, dump_params, parse_params
from trace_core.cot import build, curate, generate
from trace_core.cot.prompts import TeacherRequest, TeacherResult
from trace_core.data.mbeir import distinct_queries, load_queries, union_train_file
from trace_core.data.validate.suite import validate_root
from trace_core.paths import Paths

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mbeir_real"
UNION = "query/union_train/mbeir_union_up_train.jsonl"
TEST_FILE = "query/test/mbeir_cirr_task7_test.jsonl"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "mbeir"))


def _failures(root: Path, out: Path) -> dict[str, list[str]]:
    summary = validate_root(root, out, 1.0, 20)
    assert not summary["issues"], summary["issues"]
    return {f["rule"]: f["examples"] for f in summary["failures"]}


def test_validation_accepts_identical_repeats_and_names_both_lines_of_a_changed_one(root: Path, tmp_path: Path) -> None:
    assert _failures(root, tmp_path / "ok") == {}  # UniIR's union file, repeats and all, passes
    lines = (root / UNION).read_text().splitlines()
    at = [i for i, line in enumerate(lines, start=1) if json.loads(line)["qid"] == "7:2"]
    changed = json.loads(lines[at[1] - 1])
    changed["pos_cand_list"] = ["7:101"]
    lines[at[1] - 1] = json.dumps(changed)
    (root / UNION).write_text("\n".join(lines) + "\n")
    test_lines = (root / TEST_FILE).read_text().splitlines()
    (root / TEST_FILE).write_text("\n".join([*test_lines, test_lines[0]]) + "\n")  # identical repeat in a test file
    failures = _failures(root, tmp_path / "bad")
    assert set(failures) == {"qid_repeats_identical", "qid_unique_per_file"}
    listed = failures["qid_repeats_identical"]
    for n in at:  # every line of the qid is listed: the first and the changed repeat among them
        assert any(e.startswith(f"{root / UNION}:line {n} (7:2): qid_repeats_identical") for e in listed), listed
    unique = failures["qid_unique_per_file"]
    for n in (1, len(test_lines) + 1):
        assert any(e.startswith(f"{root / TEST_FILE}:line {n} (8:1): qid_unique_per_file") for e in unique), unique


class EchoTeacher:
    """A teacher that writes a well-formed English chain from the request; counts what it was asked."""

    name = "echo"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        self.asked += [r.id for r in requests]
        out = []
        for r in requests:
            query = next((ln.split(": ", 1)[1] for ln in r.user.splitlines() if ln.startswith("Query text: ")), "")
            reasoning = (
                "The query image is the starting point of the search, and the request describes what the "
                "retrieved target must show, so the answer restates the request as a description of it."
            )
            out.append(TeacherResult(r.id, f"<reasoning>{reasoning}</reasoning><answer>{query}</answer>"))
        return out

    def close(self) -> None:
        """Nothing to release."""


def _params(tmp_path: Path, root: Path, train_file: str) -> Params:
    raw = dump_params(Params())
    raw["paths"] = {k: str(tmp_path / v) for k, v in raw["paths"].items()}
    raw["paths"]["data_root"] = str(root)
    raw["data"]["train_file"] = train_file
    raw["cot_curate"]["verifier"] = "none"
    return parse_params(raw)


@pytest.mark.parametrize("train_file", ["union_up", "per_dataset"])
def test_teacher_once_per_distinct_query_and_build_expands(root: Path, tmp_path: Path, train_file: str) -> None:
    params = _params(tmp_path, root, train_file)
    paths = Paths.from_params(params)
    teacher = EchoTeacher()
    total = generate.run(params, paths, teacher=lambda: teacher)
    union = load_queries(union_train_file(root))
    distinct = distinct_queries(union)
    reason = [q.qid for q in distinct if q.dataset_id in (5, 6, 7, 8)]
    assert sorted(teacher.asked) == sorted(reason)  # each distinct z=1 query once, repeats or not
    assert total["rows"] == len(distinct) and total["z1"] == len(reason)
    metrics = curate.run(params, paths)
    assert metrics["kept"] == len(reason)
    stats = build.run(params, paths)
    rows = [json.loads(line) for line in paths.cot_train.read_text().splitlines()]
    expected = union if train_file == "union_up" else distinct
    assert Counter(r["qid"] for r in rows) == Counter(q.qid for q in expected)
    assert stats["occurrences"] == len(expected) and stats["distinct_queries"] == len(distinct)
    cirr = [r for r in rows if r["qid"] == "8:1"]
    assert len(cirr) == (3 if train_file == "union_up" else 1) and all(r["z"] == 1 for r in cirr)
    assert all(r == cirr[0] for r in cirr)  # every occurrence carries the same chain
    assert cirr[0]["query"]["text"] == (
        "Retrieve a photo that is this one modified as follows. Change the background to a snowy field."
    )

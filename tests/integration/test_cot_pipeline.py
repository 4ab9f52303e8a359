"""The three CoT stages on a small M-BEIR-mini: generate (resumable) -> curate -> build, and cot-filter."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trace_core.cli import app
from trace_core.config import CotBuildParams, CotCurateParams, CotGenerateParams, MiniParams, Params, RoutingParams
from trace_core.cot import build, curate, generate
from trace_core.cot.prompts import TeacherRequest, TeacherResult
from trace_core.cot.teacher import OracleTeacher
from trace_core.data.dataset import EMB_TOKEN, candidate_item, load_train_samples, query_item
from trace_core.data.instructions import parse_instructions
from trace_core.data.mbeir import global_pool_file, instructions_file, load_pool, load_queries, union_train_file
from trace_core.data.mini import write_mini
from trace_core.paths import Paths

MINI = MiniParams(train_per_task=16, test_per_task=4, pool_per_task=12, val_per_task=2, n_entities=24)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cot_mini") / "data" / "mbeir"
    write_mini(MINI, 42, root)
    return root


def setup(tmp: Path, data_root: Path, max_error_rate: float = 0.05, **sections) -> tuple[Params, Paths]:
    params = Params(cot_generate=CotGenerateParams(shard_size=16, max_error_rate=max_error_rate), **sections)
    paths = Paths.from_params(params, tmp)
    paths = Paths(**{**paths.__dict__, "data_root": data_root})
    return params, paths


class Killer:
    """Oracle teacher that raises KeyboardInterrupt after ``n`` records (a simulated kill)."""

    name = "oracle"

    def __init__(self, n: int) -> None:
        self.inner, self.left, self.calls = OracleTeacher(42, 40, 3), n, 0

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        self.calls += len(requests)
        if self.left < len(requests):
            raise KeyboardInterrupt
        self.left -= len(requests)
        return self.inner.generate(requests)

    def close(self) -> None:
        pass


def read_dir(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_three_stages_produce_training_file(tmp_path: Path, data_root: Path) -> None:
    params, paths = setup(tmp_path, data_root)
    gen = generate.run(params, paths)
    assert gen["z1"] == 6 * MINI.train_per_task and gen["ok"] == gen["z1"] and gen["error"] == 0
    metrics = curate.run(params, paths)
    assert metrics["teacher_rows"] == gen["z1"]
    assert metrics["kept"] + metrics["dropped_total"] == metrics["teacher_rows"]
    assert metrics["kept"] >= 0.9 * metrics["teacher_rows"]  # oracle chains pass the filters on mini
    assert metrics["checks_success"]
    # every drop of an oracle chain is a genuinely repeated (image, question) query
    assert {rule for rule, n in metrics["dropped"].items() if n} <= {"duplicate"}
    report = (paths.reports_dir / "cot_curate.md").read_text()
    assert "| format | 0 |" in report and "| duplicate |" in report
    stats = build.run(params, paths)
    samples = load_train_samples(paths.cot_train)
    assert len(samples) == stats["rows"] == gen["rows"]
    assert stats["z1"] == metrics["kept"] and stats["fallback"] == metrics["dropped_total"]
    check_rows(samples, data_root, paths)


def check_rows(samples, data_root: Path, paths: Paths) -> None:
    queries = {q.qid: q for q in load_queries(union_train_file(data_root))}
    pool = {c.did: c for c in load_pool(global_pool_file(data_root, "train"))}
    instr = parse_instructions(instructions_file(data_root))
    kept = {}
    for line in paths.cot_curated.read_text().splitlines():
        row = json.loads(line)
        kept[row["qid"]] = row
    for s in samples:
        q = queries[s.qid]
        item, instruction = query_item(q, instr, 42, "uniir")
        assert s.query == item and s.instruction == instruction
        first = next(d for d in q.pos_cand_list if d in pool)
        assert s.positive == candidate_item(pool[first], q.task_id, "uniir")
        if s.z == 0:
            assert s.target == EMB_TOKEN
        else:
            chain = kept[s.qid]
            assert s.target == f"{chain['reasoning']}\n{chain['answer']}{EMB_TOKEN}"
            assert "<reasoning>" not in s.target and "<answer>" not in s.target


def test_resume_after_kill_is_byte_identical(tmp_path: Path, data_root: Path) -> None:
    params, ref_paths = setup(tmp_path / "ref", data_root)
    generate.run(params, ref_paths)
    _, paths = setup(tmp_path / "killed", data_root)
    killer = Killer(20)
    with pytest.raises(KeyboardInterrupt):
        generate.run(params, paths, teacher=lambda: killer)
    done = sorted(p.name for p in paths.cot_raw_dir.glob("*.manifest.json"))
    assert done and not (paths.cot_raw_dir / "manifest.json").exists()
    (paths.cot_raw_dir / ".shard-00009.jsonl.123.tmp").write_text("partial")  # leftover of a hard kill
    second = Killer(10_000)
    total = generate.run(params, paths, teacher=lambda: second)
    assert total["shards_skipped"] == len(done)
    assert 0 < second.calls < total["z1"]  # finished shards were not sent to the teacher again
    assert read_dir(paths.cot_raw_dir) == read_dir(ref_paths.cot_raw_dir)
    third = Killer(0)
    generate.run(params, paths, teacher=lambda: third)  # everything done: the teacher is never called
    assert third.calls == 0


def test_teacher_errors_become_rows_and_drops(tmp_path: Path, data_root: Path) -> None:
    class Flaky(OracleTeacher):
        def generate(self, requests):
            if requests[0].id.startswith("8:"):
                raise RuntimeError("server exploded")
            return [TeacherResult(r.id, None, "refused") if r.id.endswith("3") else x
                    for r, x in zip(requests, super().generate(requests), strict=True)]  # fmt: skip

    params, paths = setup(tmp_path, data_root, 1.0, cot_build=CotBuildParams(dropped_policy="exclude"))
    gen = generate.run(params, paths, teacher=lambda: Flaky(42, 40, 3))
    assert gen["error"] > MINI.train_per_task
    metrics = curate.run(params, paths)
    assert metrics["dropped"]["teacher"] == gen["error"]
    dropped = [json.loads(x) for x in paths.cot_dropped.read_text().splitlines()]
    assert any("server exploded" in d["detail"] for d in dropped) and all(d["rule"] for d in dropped)
    stats = build.run(params, paths)
    assert stats["excluded"] == metrics["dropped_total"] and stats["rows"] == gen["rows"] - stats["excluded"]


def test_assessor_mode_records_labels(tmp_path: Path, data_root: Path) -> None:
    cg = CotGenerateParams(shard_size=64, routing=RoutingParams(mode="assessor", overrides={"cirr": 0}))
    params = Params(cot_generate=cg)
    paths = Paths(**{**Paths.from_params(params, tmp_path).__dict__, "data_root": data_root})
    generate.run(params, paths)
    rows = list(generate.read_raw_rows(paths.cot_raw_dir))
    by_ds = {}
    for r in rows:
        by_ds.setdefault(r["dataset_id"], set()).add((r["z"], r["route"]))
    assert by_ds[8] == {(0, "override")}
    assert by_ds[5] == {(1, "assessor")} and by_ds[9] == {(0, "assessor")}
    assert all(r["assessor_raw"].startswith("<label>") for r in rows if r["route"] == "assessor")


def test_cot_filter_cli(tmp_path: Path) -> None:
    good = (
        "<reasoning>The source image shows a small red circle at the top left; the request makes it green, "
        "and everything else stays the same.</reasoning><answer>A small green circle at the top left.</answer>"
    )
    records = [
        {"qid": "8:1", "raw": good, "query_txt": "Make the red circle green.", "target_txt": None, "source_txt": None},
        {"qid": "8:2", "raw": "I'm sorry, I cannot help.", "query_txt": None, "target_txt": None, "source_txt": None},
        {"qid": "8:3", "raw": good, "query_txt": "Make the red circle green.", "target_txt": None,
         "source_txt": "A small green circle at the top left."},
    ]  # fmt: skip
    src = tmp_path / "raw.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out, dropped = tmp_path / "kept.jsonl", tmp_path / "dropped.jsonl"
    args = [
        "cot-filter",
        "--in",
        str(src),
        "--out",
        str(out),
        "--dropped",
        str(dropped),
        "-p",
        str(REPO / "params.yaml"),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert [k["qid"] for k in kept] == ["8:1"] and kept[0]["answer"] == "A small green circle at the top left."
    drops = {d["qid"]: d["rule"] for d in map(json.loads, dropped.read_text().splitlines())}
    assert drops == {"8:2": "format", "8:3": "unchanged"}
    src.write_text('{"qid": "8:1"}\n')
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 2 and "line 1" in bad.output and "raw" in bad.output


def test_filter_file_with_teacher_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "the a small red green circle top left source image shows request makes it and everything".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words, ".", ";", ","])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    raw = (
        "<reasoning>The source image shows a small red circle at the top left; the request makes it green."
        "</reasoning><answer>A small green circle.</answer>"
    )
    src = tmp_path / "raw.jsonl"
    src.write_text(
        json.dumps({"qid": "1", "raw": raw, "query_txt": "green", "target_txt": None, "source_txt": None}) + "\n"
    )
    from trace_core.cot.text import token_counter

    n_tok = token_counter(str(tmp_path / "tok"), 4)(raw.split("</reasoning>")[0].removeprefix("<reasoning>"))
    n_fallback = token_counter(None, 4)(raw.split("</reasoning>")[0].removeprefix("<reasoning>"))
    assert n_tok != n_fallback
    kept, dropped = tmp_path / "k.jsonl", tmp_path / "d.jsonl"
    for minimum, tokenizer, n_kept in ((n_tok, str(tmp_path / "tok"), 1), (n_tok + 1, str(tmp_path / "tok"), 0),
                                       (n_fallback, None, 1), (n_fallback + 1, None, 0)):  # fmt: skip
        cfg = CotCurateParams(reasoning_min_tokens=minimum)
        counts = curate.filter_file(cfg, src, kept, dropped, tokenizer=tokenizer)
        assert counts["kept"] == n_kept and counts["length"] == 1 - n_kept


def test_checks_flag_bad_curated_rows() -> None:
    from trace_core.cot.checks import check_curated
    from trace_core.cot.text import token_counter

    count = token_counter(None, 4)
    good = {
        "qid": "8:1",
        "z": 1,
        "reasoning": " ".join(["the red circle turns green"] * 4),
        "answer": "A green circle.",
    }
    assert check_curated([good], CotCurateParams(), count)["success"]
    bad = [good, {**good, "answer": "<answer>x</answer>"}, {**good, "qid": "8:2", "reasoning": ""}]
    res = check_curated(bad, CotCurateParams(), count)
    assert not res["success"]
    failed = " ".join(res["failed"])
    assert (
        "unique(qid)" in failed and "not_match_regex(answer)" in failed and "lengths_to_be_between(reasoning)" in failed
    )


def test_model_verifier_needs_matching_teacher_kind() -> None:
    from pydantic import ValidationError

    from trace_core.config import TeacherParams

    with pytest.raises(ValidationError, match="verifier_teacher.kind"):
        CotCurateParams(verifier="openai")
    CotCurateParams(verifier="openai", verifier_teacher=TeacherParams(kind="openai", model="m", base_url="http://x"))


def test_health_problem_threshold_and_reasons() -> None:
    from collections import Counter

    reasons = Counter({"HTTP 503": 4, "timeout": 2})
    assert generate.health_problem({"ok": 95, "error": 5}, reasons, 0.05) is None  # exactly at the limit
    assert generate.health_problem({"ok": 0, "error": 0}, Counter(), 0.05) is None  # nothing asked
    msg = generate.health_problem({"ok": 94, "error": 6}, reasons, 0.05)
    assert msg is not None and "6 of 100 teacher requests failed (6.0% > cot_generate.max_error_rate 5.0%)" in msg
    assert msg.index("4 x 'HTTP 503'") < msg.index("2 x 'timeout'")

"""Real M-BEIR conformance (issue 11): the upsampled train multiset, UniIR text normalisation,
CoT curation on real records, and index types per pool kind. Literal inputs and outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trace_core.config import CotCurateParams, IndexParams, Params, ParamsError, load_params, parse_params
from trace_core.cot.build import expand_routes
from trace_core.cot.filters import FilterInput, record_rules
from trace_core.cot.parse import Chain
from trace_core.cot.text import token_counter
from trace_core.data.dataset import candidate_item, query_item
from trace_core.data.instructions import Instructions
from trace_core.data.mbeir import (
    distinct_queries,
    load_queries,
    load_train_queries,
    train_query_file,
    union_train_file,
)
from trace_core.data.normalize import instructed, normalize, uniir_format
from trace_core.evaluation.evaluate import search_spec
from trace_core.evaluation.report import markdown
from trace_core.indexing.build_index import pool_index_params
from trace_core.io import DataError
from trace_core.types import CandidateRecord, EncodeItem, QueryRecord, TrainSample

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "mbeir_real"


# --- 1. the upsampled union train file is a multiset --------------------------------------------
def test_union_up_file_loads_as_a_multiset_of_identical_repeats() -> None:
    union = load_queries(union_train_file(FIXTURE))
    distinct = distinct_queries(union)
    assert (len(union), len(distinct)) == (29, 17)
    assert [q.qid for q in distinct] == list(dict.fromkeys(q.qid for q in union))  # first occurrences, in order
    repeats = [q for q in union if q.qid == "8:1"]
    assert len(repeats) == 3 and len(set(repeats)) == 1  # CIRR's query drawn three times, identical


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_union_up_repeat_with_different_content_names_file_both_lines_and_qid(tmp_path: Path) -> None:
    src = union_train_file(FIXTURE)
    lines = _lines(src)
    first, second = [i for i, line in enumerate(lines, start=1) if json.loads(line)["qid"] == "8:1"][:2]
    obj = json.loads(lines[second - 1])
    obj["query_txt"] = "Change the background to a beach."
    lines[second - 1] = json.dumps(obj)
    path = tmp_path / "query" / "union_train" / src.name
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load_queries(path)
    assert err.value.path == str(path)
    assert err.value.where == f"lines {first} and {second} (record 8:1)"
    assert err.value.rule == "qid repeated with different content (fields query_txt differ)"


@pytest.mark.parametrize(
    "rel",
    ["query/train/mbeir_cirr_train.jsonl", "query/test/mbeir_cirr_task7_test.jsonl"],
)
def test_other_query_files_keep_unique_qids(tmp_path: Path, rel: str) -> None:
    line = _lines(FIXTURE / rel)[0]
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_text("\n".join([*_lines(FIXTURE / rel), line]) + "\n")  # an identical repeat
    n = len(_lines(path))
    with pytest.raises(DataError) as err:
        load_queries(path)
    qid = json.loads(line)["qid"]
    assert err.value.where == f"lines 1 and {n} (record {qid})" and "duplicate qid" in err.value.rule


def test_train_file_choice_union_up_or_per_dataset(tmp_path: Path) -> None:
    union = load_train_queries(FIXTURE, "union_up")
    per_dataset = load_train_queries(FIXTURE, "per_dataset")
    assert len(union) == 29 and len(per_dataset) == 17 == len({q.qid for q in per_dataset})
    assert [q.dataset_id for q in per_dataset] == sorted(q.dataset_id for q in per_dataset)  # ten files in order
    assert {q.qid for q in per_dataset} == {q.qid for q in union}
    root = tmp_path / "copy"
    shutil.copytree(FIXTURE / "query", root / "query")
    train_query_file(root, "EDIS").unlink()
    with pytest.raises(DataError, match=r"mbeir_edis_train\.jsonl:file: training query file missing"):
        load_train_queries(root, "per_dataset")


def test_cot_build_expands_routes_to_every_occurrence() -> None:
    union = load_queries(union_train_file(FIXTURE))
    routes = {"8:1": 1, "9:1": 0}  # routed once per distinct query
    expanded = expand_routes(union, routes)
    assert expanded == [(q.qid, routes[q.qid]) for q in union if q.qid in routes]
    assert expanded.count(("8:1", 1)) == 3 and expanded.count(("9:1", 0)) == 2


def test_validation_split_holds_out_every_occurrence_of_a_query() -> None:
    from trace_core.training.data import split_validation

    def sample(qid: str, task: int) -> TrainSample:
        item = EncodeItem(qid, task, f"query {qid}", None)
        return TrainSample(qid, task, 9, 0, item, EncodeItem("9:100", task, "c", None), "<|emb|>")

    samples = [sample(f"9:{i % 5 + 1}", i % 2 * 3) for i in range(20)]  # 5 qids, each repeated 4 times
    train, val = split_validation(samples, 2, seed=0)
    assert len({s.qid for s in val}) == len(val) == 2  # one row per held-out query
    assert not {s.qid for s in val} & {s.qid for s in train} and len(train) == 20 - 4 * 2


# --- 2. UniIR text normalisation -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("a man riding a horse", "A man riding a horse."),
        (
            "A man riding on the back of a motorcycle down a road.",
            "A man riding on the back of a motorcycle down a road.",
        ),
        ("Is it red?", "Is it red?"),
        ("stop!", "Stop!"),
        ("Flood water covers a road near the river\r\n", "Flood water covers a road near the river."),
        ("line one\r\nline two", "Line one\nline two."),
        ('"quoted whole"', "Quoted whole."),
        (
            '  "The Lion King" cast gathers on stage at the premiere  ',
            'The Lion King" cast gathers on stage at the premiere.',
        ),
        ('say "hi" twice', 'Say "hi" twice.'),
        ('" spaced"', " spaced."),
        ("état civil", "État civil."),
        ("3 dogs", "3 dogs."),
        ("", ""),
        ("   ", ""),
        ('""', ""),
        (None, ""),
    ],
)
def test_uniir_format_literal_pairs(before: str | None, after: str) -> None:
    assert uniir_format(before) == after


def test_instructed_text_as_uniir_builds_it() -> None:
    assert instructed("Find a caption for the image.", None, "uniir") == "Find a caption for the image."
    assert instructed("Describe it", None, "uniir") == "Describe it."
    assert (
        instructed("Show me a picture of this item", "black silk wrap dress", "uniir")
        == "Show me a picture of this item. black silk wrap dress."
    )
    assert instructed("Find this", '"quoted title"\r', "uniir") == 'Find this. "quoted title.'
    assert instructed("Show me this item", "black silk wrap dress", "none") == "Show me this item black silk wrap dress"
    assert instructed("Describe it", None, "none") == "Describe it"


def test_items_follow_data_normalize_text() -> None:
    instr = Instructions({(9, "text", "image"): ("find an image of",)})
    q = QueryRecord("9:1", "a dog on a sofa", None, "text", None, ("9:2",), (), 0)
    assert query_item(q, instr, 0, "uniir") == (
        EncodeItem("9:1", 0, "Find an image of. a dog on a sofa.", None),
        "find an image of",
    )
    assert query_item(q, instr, 0, "none")[0].text == "find an image of a dog on a sofa"
    no_key = QueryRecord("9:3", "  a dog", None, "text", None, ("9:2",), (), 3)  # no instruction for task 3
    assert query_item(no_key, instr, 0, "uniir")[0].text == "A dog."
    c = CandidateRecord("0:13", '"The Lion King" premiere\r', None, "text", None)
    assert candidate_item(c, 3, "uniir").text == 'The Lion King" premiere.'
    assert candidate_item(c, 3, "none").text == '"The Lion King" premiere\r'
    image_only = CandidateRecord("9:1", None, "img.jpg", "image", None)
    assert candidate_item(image_only, 0, "uniir") == EncodeItem("9:1", 0, None, "img.jpg")
    assert normalize("  ", "uniir") is None and normalize("  ", "none") == "  "


# --- 4. CoT curation on real records -------------------------------------------------------------
CFG = CotCurateParams()
COUNT = token_counter(None, CFG.fallback_piece_chars)
FRENCH_REASONING = (
    "Il y a une robe bleue avec des manches longues et un col blanc dans l'image source. La modification "
    "demande une robe rouge, et le reste de la robe ne change pas dans cette image."
)


def _rule(rec: FilterInput, cfg: CotCurateParams = CFG) -> str:
    return record_rules(rec, cfg, COUNT)[1]


def _raw(reasoning: str, answer: str) -> str:
    return f"<reasoning>{reasoning}</reasoning><answer>{answer}</answer>"


def test_french_chain_is_dropped_as_language_before_later_rules() -> None:
    french = _raw(FRENCH_REASONING, "Une robe rouge avec des manches longues et un col blanc.")
    query = "Is red and has a white collar."
    chain, rule, detail = record_rules(FilterInput("7:1", french, query, None, None, task_id=7), CFG, COUNT)
    assert chain is None and rule == "language" and "function words are English" in detail
    # it also breaks keyword (no English keyword shared) and length (too long): language still wins
    strict = CFG.model_copy(update={"reasoning_max_tokens": 20})
    assert _rule(FilterInput("7:1", french, query, None, None, task_id=7), strict) == "language"


def test_english_chain_naming_a_french_place_is_kept() -> None:
    reasoning = (
        "The image shows a cathedral with two towers on an island in the river, which is Notre-Dame de Paris. "
        "The question asks when its construction began, and the passage about the cathedral states this."
    )
    raw = _raw(reasoning, "Notre-Dame de Paris: the cathedral was begun in 1163.")
    assert _rule(FilterInput("5:1", raw, "When was this cathedral begun?", None, None, task_id=6)) == ""


def test_unchanged_rule_without_metadata_uses_the_chains_source_sentence() -> None:
    reasoning = (
        "The source image shows a blue denim jacket with silver buttons. The requested change is a red "
        "colour, and the cut, the collar and the buttons stay the same."
    )
    same = _raw(reasoning, "A blue denim jacket with silver buttons.")
    edited = _raw(reasoning, "A red denim jacket with silver buttons.")
    query = "Is red instead of blue."
    assert _rule(FilterInput("7:1", same, query, None, None, task_id=7)) == "unchanged"
    assert _rule(FilterInput("7:1", edited, query, None, None, task_id=7)) == ""
    assert _rule(FilterInput("6:1", same, "Which jacket is blue?", None, None, task_id=6)) == ""  # not an edit


ENDPOINT = {"kind": "openai", "model": "teacher", "base_url": "http://127.0.0.1:8000/v1"}


def test_teacher_max_tokens_must_reach_the_filter_length_bounds() -> None:
    assert Params().cot_generate.teacher.max_new_tokens >= 256 + 64 + 24
    with pytest.raises(ParamsError, match=r"cot_generate.teacher.max_new_tokens \(256\) must be at least .* \(344\)"):
        parse_params({"cot_generate": {"teacher": {**ENDPOINT, "max_new_tokens": 256}}}, "p.yaml")
    ok = {**ENDPOINT, "max_new_tokens": 64}
    assert parse_params(
        {"cot_generate": {"teacher": ok}, "cot_curate": {"reasoning_max_tokens": 32, "answer_max_tokens": 8}}
    )
    assert parse_params(
        {"cot_generate": {"teacher": {"kind": "oracle", "max_new_tokens": 8}}}
    )  # the oracle writes no tokens


def test_verifier_payload_carries_the_target_image(tmp_path: Path) -> None:
    from PIL import Image

    from trace_core.config import TeacherParams
    from trace_core.cot.teacher_openai import build_payload
    from trace_core.cot.verify import VerifyItem, verify_request

    for name in ("q.jpg", "t.jpg"):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / name)
    chain = Chain("The source shows a dress.", "A red dress.")
    image_target = verify_request(VerifyItem("7:1", 7, "is red", "q.jpg", None, None, chain, "t.jpg"), tmp_path)
    parts = build_payload(image_target, TeacherParams(kind="openai", model="m", base_url="http://x"))["messages"][1]
    assert [p["type"] for p in parts["content"]] == ["image_url", "image_url", "text"]
    assert "Ground-truth target: the second attached image" in image_target.user
    text_only = verify_request(VerifyItem("2:1", 1, "how tall?", None, None, None, chain, "t.jpg"), tmp_path)
    assert (
        text_only.images == (str(tmp_path / "t.jpg"),) and "Ground-truth target: the attached image" in text_only.user
    )


# --- 3. index type per pool kind, recorded next to every number -----------------------------------
def test_local_pools_use_local_index_type_union_uses_index_type() -> None:
    p = IndexParams(index_type="HNSW", local_index_type="FLAT")
    assert pool_index_params(p, "union").index_type == "HNSW"
    assert pool_index_params(p, "cirr_task7").index_type == "FLAT"
    full = load_params(ROOT / "presets" / "full-qwen2.5-vl-7b.yaml").index
    assert (full.local_index_type, full.index_type) == ("FLAT", "HNSW")


def test_search_spec_names_exact_and_approximate_settings() -> None:
    params = Params()
    assert search_spec(params, "numpy", {"index_type": "exact"}, 10) == {
        "backend": "numpy",
        "index_type": "exact",
        "exact": True,
    }
    assert search_spec(params, "milvus", {"index_type": "FLAT"}, 10)["exact"] is True
    assert search_spec(params, "milvus", {"index_type": "HNSW"}, 100) == {
        "backend": "milvus",
        "index_type": "HNSW",
        "exact": False,
        "M": 16,
        "efConstruction": 200,
        "ef": 100,
    }
    assert search_spec(params, "milvus", {"index_type": "IVF_FLAT"}, 5)["nprobe"] == 16


def test_report_marks_numbers_from_an_approximate_index() -> None:
    from trace_core.data.mbeir import TEST_TASKS
    from trace_core.evaluation.mbeir import build_table

    stems = [t.stem for t in TEST_TASKS]
    tasks = {s: {"R@1": 0.1, "R@5": 0.5, "R@10": 0.6} for s in stems}
    exact = {"backend": "milvus", "index_type": "FLAT", "exact": True}
    hnsw = {"backend": "milvus", "index_type": "HNSW", "exact": False, "M": 16, "efConstruction": 200, "ef": 64}
    routing = {s: {"direct_rate": 1.0, "reasoned_rate": 0.0, "forced_rate": 0.0, "mean_new_tokens": 0.0, "qps": 1.0}
               for s in stems}  # fmt: skip
    scope = {"table": build_table(tasks).as_dict(), "tasks": tasks}
    metrics = {
        "local": {**scope, "index": dict.fromkeys(stems, exact), "approximate": []},
        "union": {**scope, "index": dict.fromkeys(stems, hnsw), "approximate": stems},
        "routing": routing,
        "query_qps": 1.0,
        "model_id": "m",
    }
    md = markdown(metrics)
    local = next(line for line in md.splitlines() if line.startswith("| local |"))
    union = next(line for line in md.splitlines() if line.startswith("| union |"))
    assert "†" not in local and union.count("†") == 17 and union.endswith("51.9† |")  # 16 tasks + average
    assert "- local: milvus FLAT: exact search" in md
    assert "- union: milvus HNSW (M=16, efConstruction=200, ef=64): † approximate search on 16 of 16 tasks" in md

"""Routing rule, overrides and assessor; the oracle teacher and verifier on constructed metadata."""

from __future__ import annotations

import json

import pytest

from trace_core.config import CotCurateParams, RoutingParams
from trace_core.cot.filters import FilterInput, record_rules
from trace_core.cot.oracle import oracle_chain, oracle_verdict
from trace_core.cot.overrides import parse_overrides
from trace_core.cot.parse import parse_chain, parse_verdict
from trace_core.cot.prompts import TeacherRequest, TeacherResult
from trace_core.cot.routing import decide, needs_assessor
from trace_core.cot.teacher import OracleTeacher
from trace_core.cot.text import token_counter

SCENE = {"objects": [{"shape": "circle", "color": "red", "size": "small", "position": "top left"},
                     {"shape": "square", "color": "blue", "size": "large", "position": "center"}],
         "background": "white"}  # fmt: skip
TARGET = {**SCENE, "objects": [{**SCENE["objects"][0], "color": "green"}, SCENE["objects"][1]]}
EDIT = {
    "kind": "edit", "source": SCENE, "target": TARGET, "modification": "make the red circle green",
    "source_caption": "A small red circle at the top left and a large blue square at the center on white.",
    "target_caption": "A small green circle at the top left and a large blue square at the center on white.",
    "change": {"object": 0, "attribute": "color", "from": "red", "to": "green"},
}  # fmt: skip
KNOW = {
    "kind": "knowledge", "entity": "Zorbel", "scene": SCENE, "question": "What is the patron animal of this city?",
    "answer": "otter",
    "passage": "Zorbel is a city whose emblem is a red circle. Its home region is north; its patron animal is otter.",
}  # fmt: skip


@pytest.mark.parametrize(
    ("dataset", "task", "z"),
    [(0, 0, 0), (9, 3, 0), (1, 0, 0), (2, 1, 0), (3, 2, 0), (4, 4, 0), (8, 7, 1), (7, 7, 1), (5, 6, 1), (6, 8, 1)],
)
def test_rule_matches_paper_statistics(dataset, task, z):
    cfg = RoutingParams()
    assert decide(dataset, task, cfg, {}, None).z == z


def test_overrides_by_id_and_name():
    cfg = RoutingParams(overrides={"cirr:7": 0, "9": 1, "5:8": 0})
    ov = parse_overrides(cfg.overrides)
    assert decide(8, 7, cfg, ov, None).z == 0 and decide(8, 7, cfg, ov, None).source == "override"
    assert decide(9, 0, cfg, ov, None).z == 1
    assert decide(5, 8, cfg, ov, None).z == 0
    assert decide(5, 6, cfg, ov, None).z == 1 and decide(5, 6, cfg, ov, None).source == "rule"


@pytest.mark.parametrize("bad", [{"nodataset:7": 1}, {"8:x": 1}, {"8:7": 2}])
def test_bad_override_named(bad):
    with pytest.raises(ValueError, match="routing.overrides"):
        parse_overrides(bad)


def test_assessor_decides_and_falls_back():
    cfg = RoutingParams(mode="assessor", overrides={"0:0": 0})
    ov = parse_overrides(cfg.overrides)
    assert needs_assessor([(0, 0), (9, 0)], cfg, ov) == [False, True]
    got = decide(9, 0, cfg, ov, TeacherResult("9:1", "<label>complex</label>"))
    assert (got.z, got.source, got.assessor_raw) == (1, "assessor", "<label>complex</label>")
    fb = decide(8, 7, cfg, ov, TeacherResult("8:1", "no idea"))
    assert (fb.z, fb.source) == (1, "rule-fallback") and "label" in (fb.assessor_error or "")


def test_oracle_chains_pass_filters_and_vary_by_qid():
    cfg, count = CotCurateParams(), token_counter(None, 4)
    texts = set()
    for meta, target, source in ((EDIT, EDIT["target_caption"], EDIT["source_caption"]), (KNOW, KNOW["passage"], None)):
        for qid in ("8:1", "8:2", "8:3", "8:4"):
            raw = oracle_chain(json.dumps(meta), qid, 42, 40)
            ch, why = parse_chain(raw)
            assert ch is not None, why
            rec = FilterInput(qid, raw, meta.get("modification") or meta.get("question"), target, source)
            assert record_rules(rec, cfg, count)[1] == "", raw
            texts.add(ch.reasoning)
    assert len(texts) > 2  # wording varies deterministically per qid
    assert oracle_chain(json.dumps(EDIT), "8:1", 42, 40) == oracle_chain(json.dumps(EDIT), "8:1", 42, 40)
    edit_answer = parse_chain(oracle_chain(json.dumps(EDIT), "8:1", 42, 40))[0]
    assert edit_answer is not None and edit_answer.answer == EDIT["target_caption"]
    know = parse_chain(oracle_chain(json.dumps(KNOW), "5:1", 42, 40))[0]
    assert (
        know is not None and "Zorbel" in know.reasoning and "otter" in know.answer and know.answer.startswith("Zorbel")
    )


def test_oracle_verifier_accepts_right_and_rejects_wrong():
    right = parse_verdict(oracle_verdict(json.dumps(EDIT), EDIT["target_caption"], 3))
    assert right.decision == "consistent" and right.confidence > 0.9
    source = parse_verdict(oracle_verdict(json.dumps(EDIT), EDIT["source_caption"], 3))
    assert source.decision == "inconsistent"
    wrong_entity = parse_verdict(oracle_verdict(json.dumps(KNOW), "Belka: its patron animal is otter.", 3))
    assert wrong_entity.decision == "inconsistent"
    vague = parse_verdict(oracle_verdict(json.dumps(KNOW), "Zorbel, some place.", 3))
    assert vague.decision == "consistent" and vague.confidence <= 0.7


def test_oracle_teacher_error_rows_and_labels():
    t = OracleTeacher(42, 40, 3)
    reqs = [
        TeacherRequest("8:1", "chain", "s", "u", meta=None),
        TeacherRequest("8:2", "chain", "s", "u", meta='{"kind": "weird"}'),
        TeacherRequest("8:3", "assess", "s", "u", meta=json.dumps(EDIT)),
        TeacherRequest("9:1", "assess", "s", "u", meta=json.dumps({"kind": "scene", "scene": SCENE, "caption": "x"})),
    ]
    out = t.generate(reqs)
    assert out[0].text is None and "null" in (out[0].error or "")
    assert out[1].text is None and "weird" in (out[1].error or "")
    assert out[2].text == "<label>complex</label>" and out[3].text == "<label>simple</label>"

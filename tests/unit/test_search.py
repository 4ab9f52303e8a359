"""`trace search` without a model: query records, instructions, hit rendering, candidate lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trace_core.config import Params
from trace_core.data.mbeir import TEST_TASKS_BY_STEM
from trace_core.io import DataError
from trace_core.paths import Paths
from trace_core.search import (
    DEFAULT_TASK_TYPE,
    Hit,
    SearchResult,
    check_index,
    find_candidates,
    query_encode_item,
    query_modality,
    query_record,
    render_hits,
    render_result,
    resolve_task,
    to_hits,
)


def test_modality_and_task_checks():
    assert query_modality("a car", None) == "text"
    assert query_modality(None, "/x.png") == "image"
    assert query_modality("make it red", "/x.png") == "image,text"
    with pytest.raises(ValueError, match="query text, an --image"):
        query_modality("", None)
    assert resolve_task(None, "text") is None
    assert resolve_task("mscoco_task0", "text") == TEST_TASKS_BY_STEM["mscoco_task0"]
    with pytest.raises(ValueError, match="unknown task 'coco'"):
        resolve_task("coco", "text")
    with pytest.raises(ValueError, match="'cirr_task7' takes image,text queries, this query is text"):
        resolve_task("cirr_task7", "text")


def test_query_record_defaults_and_task():
    q = query_record("a red car", None, None)
    assert (q.dataset_id, q.task_id, q.query_modality) == (-1, DEFAULT_TASK_TYPE["text"], "text")
    q = query_record("make it red", "/img.png", TEST_TASKS_BY_STEM["cirr_task7"])
    assert (q.dataset_id, q.task_id, q.query_img_path) == (8, 7, "/img.png")


def test_instruction_applied_like_export(tmp_path):
    params = Params.model_validate({"paths": {"data_root": "data"}, "tracking": {"enabled": False}})
    paths = Paths.from_params(params, tmp_path)
    tsv = paths.data_root / "instructions" / "query_instructions.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text(
        "query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\n"
        "text\timage\tMSCOCO\t9\tFind me an everyday image that matches the given caption:\n"
    )
    item, instruction = query_encode_item(
        query_record("a red car", None, TEST_TASKS_BY_STEM["mscoco_task0"]), params, paths
    )
    assert instruction.startswith("Find me") and item.text.startswith("Find me") and item.text.endswith("a red car.")
    item, instruction = query_encode_item(query_record("a red car", None, None), params, paths)
    assert (instruction, item.text, item.task_id) == ("", "A red car.", 0)  # data.normalize_text: uniir
    raw = params.model_copy(update={"data": params.data.model_copy(update={"normalize_text": "none"})})
    assert query_encode_item(query_record("a red car", None, None), raw, paths)[0].text == "a red car"


def test_render_hits_is_aligned_and_clipped():
    hits = [
        Hit(1, 0.91234, "9:1", "image", None, "img/a.png"),
        Hit(2, 0.5, "10:22", "text", "word " * 40, None),
    ]
    lines = render_hits(hits, image_root="/data/", text_width=20).splitlines()
    assert lines[0] == "  1.   0.9123  9:1    [/data/img/a.png]"
    assert lines[1].startswith("  2.   0.5000  10:22  word word") and lines[1].endswith("…") and len(lines[1]) < 60
    assert render_hits([]) == "  (no hits)"


def test_render_result_shows_route_and_chain():
    result = SearchResult(
        {"text": "q", "image": None, "task": None, "task_type": 0, "instruction": ""},
        "union",
        "abc",
        "dir",
        "reasoned",
        "the target is a red car",
        6,
        [Hit(1, 1.0, "9:1")],
    )
    text = render_result(result)
    assert "route    reasoned  (6 tokens)" in text and "chain    the target is a red car" in text
    assert json.loads(json.dumps(result.to_json()))["hits"][0]["did"] == "9:1"


def _pool(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_candidates_found_across_files_and_missing_ones_stay_empty(tmp_path):
    a = _pool(
        tmp_path / "a.jsonl", [{"did": "9:1", "txt": "one", "img_path": None, "modality": "text", "src_content": None}]
    )
    b = _pool(
        tmp_path / "b.jsonl",
        [{"did": "9:2", "txt": None, "img_path": "i.png", "modality": "image", "src_content": None}],
    )
    found = find_candidates([a, tmp_path / "missing.jsonl", b], {"9:1", "9:2"})
    assert set(found) == {"9:1", "9:2"}
    hits = to_hits(["9:2", "9:9"], [0.5, 0.25], found)
    assert hits[0] == Hit(1, 0.5, "9:2", "image", None, "i.png") and hits[1] == Hit(2, 0.25, "9:9")


def test_index_of_another_model_is_refused(tmp_path):
    paths = Paths.from_params(Params(), tmp_path)
    with pytest.raises(DataError, match="no index manifest"):
        check_index(paths, "union", "m1")
    paths.index_dir.mkdir(parents=True)
    paths.index_manifest.write_text(json.dumps({"model_id": "m0", "pools": {"union": {}}}))
    with pytest.raises(DataError, match="pool 'cirr_task7'.*not indexed"):
        check_index(paths, "cirr_task7", "m0")
    with pytest.raises(DataError, match="embeddings of model m0, the query model is m1"):
        check_index(paths, "union", "m1")
    assert check_index(paths, "union", "m0")["model_id"] == "m0"


def test_champion_is_cached_while_the_store_is_unchanged(tmp_path, monkeypatch):
    import os

    from trace_core import search

    db = tmp_path / "mlruns.db"
    db.write_bytes(b"x")
    params = Params.model_validate({"tracking": {"tracking_uri": f"sqlite:///{db}"}})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    calls = []

    def ask(p):
        calls.append(1)
        return str(len(calls)), f"m{len(calls)}", "models:/trace-retriever@champion"

    monkeypatch.setattr(search, "champion", ask)
    cache = tmp_path / "state" / "alias.json"
    assert search.cached_champion(params, cache)[:2] == ("1", "m1")
    assert search.cached_champion(params, cache)[:2] == ("1", "m1") and len(calls) == 1
    db.write_bytes(b"xy")  # any write to the store (a new alias) invalidates it
    os.utime(db, ns=(1, 1))
    assert search.cached_champion(params, cache)[:2] == ("2", "m2")
    server = Params.model_validate({"tracking": {"tracking_uri": "http://mlflow:5000"}})
    search.cached_champion(server, cache)
    search.cached_champion(server, cache)
    assert len(calls) == 4  # a server store is always asked

"""M-BEIR layout parsers on fixtures in the real layout (literal records from docs/MBEIR.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trace_core.data.instructions import choose_index, instructed_text, parse_instructions
from trace_core.data.mbeir import (
    CROSS_DATASET_POSITIVES,
    TEST_TASKS,
    TEST_TASKS_BY_STEM,
    global_pool_file,
    instructions_file,
    load_pool,
    load_queries,
    local_pool_file,
    present_test_tasks,
    qrels_file,
    query_file,
    read_qrels,
    train_query_file,
    union_train_file,
)
from trace_core.io import DataError

REAL_QUERY = (
    '{"qid": "9:6", "query_txt": null, "query_img_path": '
    '"mbeir_images/mscoco_images/val2014/COCO_val2014_000000391895.jpg", "query_modality": "image", '
    '"query_src_content": null, "pos_cand_list": ["9:2", "9:3", "9:4", "9:5", "9:6"], '
    '"neg_cand_list": [], "task_id": 3}'
)
REAL_CANDIDATE = (
    '{"txt": "A man riding on the back of a motorcycle down a road.", "img_path": null, '
    '"modality": "text", "did": "9:14174", "src_content": null}'
)
HEADER = "query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\tprompt_2\tprompt_3\tprompt_4\n"


@pytest.fixture()
def real_root(tmp_path: Path) -> Path:
    root = tmp_path / "M-BEIR"
    q = query_file(root, "test", "mscoco_task3")
    q.parent.mkdir(parents=True)
    q.write_text(REAL_QUERY + "\n")
    pool = local_pool_file(root, "mscoco_task3")
    pool.parent.mkdir(parents=True)
    pool.write_text(REAL_CANDIDATE + "\n")
    qr = qrels_file(root, "test", "mscoco_task3")
    qr.parent.mkdir(parents=True)
    qr.write_text("".join(f"9:6 0 9:{n} 1 3\n" for n in range(2, 7)))
    ins = instructions_file(root)
    ins.parent.mkdir(parents=True)
    ins.write_text(HEADER + "image\ttext\tMSCOCO\t9\tFind a caption for the image.\tDescribe it.\t\t\n")
    return root


def test_real_layout_names(tmp_path: Path) -> None:
    assert local_pool_file(tmp_path, "mscoco_task0").name == "mbeir_mscoco_task0_test_cand_pool.jsonl"
    assert local_pool_file(tmp_path, "cirr_task7").name == "mbeir_cirr_task7_cand_pool.jsonl"
    assert query_file(tmp_path, "val", "oven_task8").as_posix().endswith("query/val/mbeir_oven_task8_val.jsonl")
    assert train_query_file(tmp_path, "InfoSeek").name == "mbeir_infoseek_train.jsonl"
    assert union_train_file(tmp_path).as_posix().endswith("query/union_train/mbeir_union_up_train.jsonl")
    assert global_pool_file(tmp_path, "test").name == "mbeir_union_test_cand_pool.jsonl"
    assert qrels_file(tmp_path, "test", "nights_task4").name == "mbeir_nights_task4_test_qrels.txt"


def test_sixteen_task_table() -> None:
    stems = [t.stem for t in TEST_TASKS]
    assert stems == [
        "visualnews_task0", "mscoco_task0", "fashion200k_task0", "webqa_task1", "edis_task2", "webqa_task2",
        "visualnews_task3", "mscoco_task3", "fashion200k_task3", "nights_task4", "oven_task6", "infoseek_task6",
        "fashioniq_task7", "cirr_task7", "oven_task8", "infoseek_task8",
    ]  # fmt: skip
    assert [t.reported_k for t in TEST_TASKS].count(10) == 3
    assert TEST_TASKS_BY_STEM["fashioniq_task7"].modalities == ("image,text", "image")
    assert CROSS_DATASET_POSITIVES[6] == frozenset({5, 6})


def test_parse_real_records(real_root: Path) -> None:
    (q,) = load_queries(query_file(real_root, "test", "mscoco_task3"))
    assert q.qid == "9:6" and q.dataset_id == 9 and q.task_id == 3
    assert q.query_txt is None and q.query_img_path.endswith("COCO_val2014_000000391895.jpg")
    assert q.pos_cand_list == ("9:2", "9:3", "9:4", "9:5", "9:6") and q.neg_cand_list == ()
    (c,) = load_pool(local_pool_file(real_root, "mscoco_task3"))
    assert (c.did, c.modality, c.img_path) == ("9:14174", "text", None)
    qrels = read_qrels(qrels_file(real_root, "test", "mscoco_task3"))
    assert qrels["9:6"].positives == frozenset(q.pos_cand_list) and qrels["9:6"].task_id == 3
    assert [t.stem for t in present_test_tasks(real_root)] == ["mscoco_task3"]


def test_instructions_header_and_deterministic_choice(real_root: Path) -> None:
    instr = parse_instructions(instructions_file(real_root))
    (q,) = load_queries(query_file(real_root, "test", "mscoco_task3"))
    assert instr.for_query(q) == ("Find a caption for the image.", "Describe it.")  # empty cells dropped
    prompt, text = instructed_text(q, instr, 42, "uniir")
    assert text == prompt  # image-only query gets the prompt alone
    assert prompt == instr.for_query(q)[choose_index(q.qid, 2, 42)]
    assert instructed_text(q, instr, 42, "uniir") == (prompt, text)


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("{not json", "malformed JSON"),
        (REAL_QUERY.replace('"task_id": 3', '"task_idx": 3'), "missing field 'task_id'"),
        (REAL_QUERY.replace('"image"', '"video"'), "unknown modality 'video'"),
        (REAL_QUERY.replace('"9:6"', '"9-6"'), "qid '9-6' is not"),
        (REAL_QUERY.replace('"task_id": 3', '"task_id": "3"'), "field 'task_id' must be int"),
        (REAL_QUERY.replace('"query_modality": "image"', '"query_modality": "text"'), "inconsistent"),
    ],
)
def test_bad_query_lines_name_file_line_rule(tmp_path: Path, line: str, rule: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(REAL_QUERY.replace('"9:6"', '"9:7"') + "\n" + line + "\n")
    with pytest.raises(DataError) as err:
        load_queries(path)
    assert err.value.where == "line 2" and rule in err.value.rule and str(path) in str(err.value)


def test_duplicate_ids_rejected(tmp_path: Path) -> None:
    q, c = tmp_path / "q.jsonl", tmp_path / "c.jsonl"
    q.write_text(REAL_QUERY + "\n" + REAL_QUERY + "\n")
    c.write_text(REAL_CANDIDATE + "\n" + REAL_CANDIDATE + "\n")
    with pytest.raises(DataError, match="duplicate qid"):
        load_queries(q)
    with pytest.raises(DataError, match="duplicate did"):
        load_pool(c)


@pytest.mark.parametrize("line", ["9:6 0 9:2 1", "9:6 1 9:2 1 3", "9:6 0 x:2 1 3"])
def test_bad_qrels_lines(tmp_path: Path, line: str) -> None:
    path = tmp_path / "qrels.txt"
    path.write_text("9:6 0 9:3 1 3\n" + line + "\n")
    with pytest.raises(DataError) as err:
        read_qrels(path)
    assert err.value.where == "line 2"


def test_candidate_json_roundtrip_keeps_fields() -> None:
    obj = json.loads(REAL_CANDIDATE)
    assert list(obj) == ["txt", "img_path", "modality", "did", "src_content"]

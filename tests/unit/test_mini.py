"""M-BEIR-mini generator: determinism, layout, the schema contract and benchmark properties."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from PIL import Image

from trace_core.config import MiniParams
from trace_core.data.instructions import instruction_key, parse_instructions
from trace_core.data.mbeir import (
    DATASETS,
    TEST_TASKS,
    global_pool_file,
    instructions_file,
    load_pool,
    load_queries,
    local_pool_file,
    query_file,
    read_qrels,
    train_query_file,
    union_train_file,
)
from trace_core.data.mini import build_mini, write_mini
from trace_core.data.mini.scene import EditPayload, Scene, payload_from_json, scene_caption, to_json
from trace_core.io import sha256_file

TINY = MiniParams(train_per_task=4, test_per_task=4, val_per_task=2, pool_per_task=12, n_entities=6)


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path) -> None:
    write_mini(TINY, 7, tmp_path / "a")
    write_mini(TINY, 7, tmp_path / "b")
    write_mini(TINY, 8, tmp_path / "c")
    a, b, c = _hashes(tmp_path / "a"), _hashes(tmp_path / "b"), _hashes(tmp_path / "c")
    assert a == b and len(a) > 100
    assert a != c


def test_layout_and_contract(mini_root: Path) -> None:
    instr = parse_instructions(instructions_file(mini_root))
    assert len(instr.prompts) == 16 and all(len(v) == 4 for v in instr.prompts.values())
    union_train = {c.did: c for c in load_pool(global_pool_file(mini_root, "train"))}
    union_test = {c.did for c in load_pool(global_pool_file(mini_root, "test"))}
    for task in TEST_TASKS:
        queries = load_queries(query_file(mini_root, "test", task.stem))
        pool = {c.did: c for c in load_pool(local_pool_file(mini_root, task.stem))}
        qrels = read_qrels(mini_root / "qrels" / "test" / f"mbeir_{task.stem}_test_qrels.txt")
        assert set(pool) <= union_test
        for q in queries:
            assert (q.dataset_id, q.task_id, q.query_modality) == (task.dataset_id, task.task_id, task.modalities[0])
            assert qrels[q.qid].positives == frozenset(q.pos_cand_list)
            assert all(pool[d].modality == task.modalities[1] for d in q.pos_cand_list)
            assert instr.for_query(q), instruction_key(q)
            payload_from_json(q.query_src_content)  # parses
    train = load_queries(union_train_file(mini_root))
    assert Counter((q.dataset_id, q.task_id) for q in train) == {(t.dataset_id, t.task_id): 8 for t in TEST_TASKS}
    assert all(d in union_train for q in train for d in (*q.pos_cand_list, *q.neg_cand_list))
    assert all(q.query_src_content for q in train)
    per_dataset = sum(len(load_queries(train_query_file(mini_root, n))) for n in DATASETS.values())
    assert per_dataset == len(train)


def test_payload_roundtrip_and_captions_determine_targets(mini_root: Path) -> None:
    for task in TEST_TASKS:
        pool = load_pool(local_pool_file(mini_root, task.stem))
        for c in pool:
            assert to_json(payload_from_json(c.src_content)) == c.src_content
        texts = [c.txt for c in pool if c.txt is not None]
        images = [json.dumps(json.loads(c.src_content).get("scene") or json.loads(c.src_content)) for c in pool]
        assert len(set(texts)) == len(texts), task.stem  # no two candidates share a text
        if task.modalities[1] == "image":
            assert len(set(images)) == len(images), task.stem  # no two images show the same content
    q = load_queries(query_file(mini_root, "test", "cirr_task7"))[0]
    edit = payload_from_json(q.query_src_content)
    assert isinstance(edit, EditPayload) and edit.modification == q.query_txt
    assert edit.target_caption == scene_caption(edit.target) != edit.source_caption


def test_images_square_multiple_of_28(mini_root: Path) -> None:
    q = load_queries(query_file(mini_root, "test", "nights_task4"))[0]
    with Image.open(mini_root / q.query_img_path) as im:
        assert im.size == (112, 112) and im.size[0] % 28 == 0


def test_oven_infoseek_cross_dataset_positives(mini_root: Path) -> None:
    pool = {c.did for c in load_pool(local_pool_file(mini_root, "infoseek_task6"))}
    assert any(d.startswith("5:") for d in pool)  # shared OVEN passages live in InfoSeek's pool
    union = [c.did for c in load_pool(global_pool_file(mini_root, "test"))]
    assert len(union) == len(set(union))


def test_default_sizes_fit_the_budget() -> None:
    data = build_mini(MiniParams(), 42)
    train = sum(len(v) for (split, _), v in data.queries.items() if split == "train")
    test = [len(v) for (split, _), v in data.queries.items() if split == "test"]
    assert 3000 <= train <= 4000 and set(test) == {200}  # 200 test queries: per-task standard error ~3 points
    # pools hold every test query's positives and distractors, padded to pool_per_task (entity pools: n_entities)
    assert all(150 <= len(p) <= 800 for p in data.local_pools.values())


def test_scene_roundtrip() -> None:
    scene = Scene.from_dict(
        {"objects": [{"shape": "star", "color": "red", "size": "large", "position": "center"}], "background": "white"}
    )
    assert Scene.from_dict(scene.to_dict()) == scene
    assert scene_caption(scene) == "A large red star at the center on a white background."

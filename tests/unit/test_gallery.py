"""Retrieval gallery: the shared hit-list rendering and the page built from real mini data."""

from __future__ import annotations

import json
from pathlib import Path

from trace_core.data.mbeir import (
    TEST_TASKS,
    iter_queries,
    load_pool,
    local_pool_file,
    qrels_file,
    query_file,
    read_qrels,
)
from trace_core.evaluation import gallery
from trace_core.evaluation.metrics import RunEntry


def test_render_hits_marks_positives_and_escapes() -> None:
    hits = [
        gallery.Hit(1, "9:1", 0.9, "<b>a cat</b>", None, False),
        gallery.Hit(2, "9:2", 0.8, None, "data:image/jpeg;base64,AAAA", True),
    ]
    html = gallery.render_hits(hits)
    assert html.count("<li") == 2 and html.count('class="pos"') == 1
    assert "&lt;b&gt;a cat&lt;/b&gt;" in html and "<b>a cat" not in html
    assert 'src="data:image/jpeg;base64,AAAA"' in html and "#2" in html


def test_pick_queries_mixes_hits_and_misses() -> None:
    qids = [f"q{i}" for i in range(10)]
    hits = {"q1", "q5", "q8"}
    picked = gallery.pick_queries(qids, 4, hits)
    assert len(picked) == 4 and len(set(picked) & hits) == 2 and picked == sorted(picked, key=qids.index)
    assert gallery.pick_queries(qids, 3, set()) == ["q0", "q4", "q9"]  # spread over the file
    assert gallery.pick_queries(qids[:2], 5, hits) == ["q0", "q1"]
    assert gallery.pick_queries(qids, 0, hits) == []


def test_collect_from_mini_data(mini_root: Path, tmp_path: Path) -> None:
    task = next(t for t in TEST_TASKS if t.stem == "mscoco_task0")  # text -> image
    queries = list(iter_queries(query_file(mini_root, "test", task.stem)))
    pool = [c.did for c in load_pool(local_pool_file(mini_root, task.stem))]
    qrels = read_qrels(qrels_file(mini_root, "test", task.stem))
    entries = []
    for i, q in enumerate(queries):  # even queries: positive at rank 2; odd: five negatives
        negatives = [d for d in pool if d not in qrels[q.qid].positives]
        ranked = negatives[:5] if i % 2 else [negatives[0], sorted(qrels[q.qid].positives)[0], *negatives[1:4]]
        entries += [RunEntry(q.qid, d, r, 1.0 - r / 10, "t", task.task_id) for r, d in enumerate(ranked, start=1)]
    routing = tmp_path / "routing.jsonl"
    row = {"qid": queries[0].qid, "task": task.stem, "route": "reasoned", "chain": "a <dog>"}
    routing.write_text(json.dumps(row) + "\n")
    sections = gallery.collect(mini_root, [task], {task.stem: entries}, routing, seed=42, n=4)
    [(title, cards)] = sections.items()
    assert title.startswith("02. qt->ci MSCOCO")
    assert len(cards) == 4 and sum(any(h.positive for h in c.hits) for c in cards) == 2
    first = cards[0]
    assert first.qid == queries[0].qid and first.route == "reasoned" and first.chain == "a <dog>"
    assert first.instruction and first.text == queries[0].query_txt
    thumbs = [h.image or "" for c in cards for h in c.hits]
    assert len(thumbs) == 20 and all(t.startswith("data:image/jpeg;base64,") for t in thumbs)
    page = gallery.write_gallery(tmp_path / "gallery" / "index.html", sections, "note").read_text()
    assert "a &lt;dog&gt;" in page and "positive at rank 2" in page and "no positive in the top 5" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained

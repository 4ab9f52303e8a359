"""M-BEIR-mini: a small benchmark generated offline and deterministically in the real layout.

:func:`build_mini` is pure (seed + sizes -> records); :func:`write_mini` renders the images
and writes every file atomically. The same seed and sizes give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trace_core.config import MiniParams
from trace_core.data.mbeir import (
    DATASETS,
    TEST_TASKS,
    TestTask,
    format_qrels,
    global_pool_file,
    instructions_file,
    local_pool_file,
    qrels_file,
    query_file,
    train_query_file,
    union_train_file,
)
from trace_core.data.mini.prompts import instructions_tsv
from trace_core.data.mini.render import RenderSpec, png_bytes, render_scene
from trace_core.data.mini.scene import to_json
from trace_core.data.mini.tasks import RECIPES, CandSpec, ImageSpec, QuerySpec, RecipeContext, filler, make_entities
from trace_core.io import atomic_open, write_text

log = logging.getLogger(__name__)
SPLITS: tuple[str, ...] = ("test", "val", "train")


@dataclass
class Registry:
    """Id assignment in generation order: qids and dids per dataset, image paths per dataset."""

    next_qid: dict[int, int] = field(default_factory=dict)
    next_did: dict[int, int] = field(default_factory=dict)
    next_img: dict[int, int] = field(default_factory=dict)
    did_of: dict[tuple[int, str], str] = field(default_factory=dict)
    cands: dict[str, CandSpec] = field(default_factory=dict)
    images: dict[ImageSpec, str] = field(default_factory=dict)

    @staticmethod
    def _bump(counter: dict[int, int], ds: int) -> int:
        counter[ds] = counter.get(ds, 0) + 1
        return counter[ds]

    def qid(self, ds: int) -> str:
        """A fresh ``<dataset_id>:<n>`` query id."""
        return f"{ds}:{self._bump(self.next_qid, ds)}"

    def did(self, cand: CandSpec) -> str:
        """The did of a candidate; equal content within the owner dataset shares one did."""
        key = (cand.dataset_id, cand.key)
        if key not in self.did_of:
            did = f"{cand.dataset_id}:{self._bump(self.next_did, cand.dataset_id)}"
            self.did_of[key], self.cands[did] = did, cand
            if cand.image is not None:
                self.image_path(cand.image)
        return self.did_of[key]

    def image_path(self, spec: ImageSpec) -> str:
        """Relative path of an image, ``mbeir_images/<dataset>_images/<n>.png``."""
        if spec not in self.images:
            n = self._bump(self.next_img, spec.dataset_id)
            self.images[spec] = f"mbeir_images/{DATASETS[spec.dataset_id].lower()}_images/{n:06d}.png"
        return self.images[spec]


@dataclass
class MiniData:
    """Everything to write: query rows per (split, stem), pools as did lists."""

    registry: Registry
    queries: dict[tuple[str, str], list[dict[str, Any]]]
    local_pools: dict[str, list[str]]
    global_pools: dict[str, list[str]]


def query_row(reg: Registry, spec: QuerySpec, negatives: bool) -> dict[str, Any]:
    """An M-BEIR query line (field order of the real files)."""
    return {
        "qid": reg.qid(spec.dataset_id),
        "query_txt": spec.txt,
        "query_img_path": reg.image_path(spec.image) if spec.image else None,
        "query_modality": "image,text"
        if spec.txt is not None and spec.image
        else ("text" if spec.image is None else "image"),
        "query_src_content": to_json(spec.payload),
        "pos_cand_list": [reg.did(c) for c in spec.positives],
        "neg_cand_list": [reg.did(c) for c in spec.distractors] if negatives else [],
        "task_id": spec.task_id,
    }


def candidate_row(reg: Registry, did: str) -> dict[str, Any]:
    """An M-BEIR candidate line (field order of the real files)."""
    c = reg.cands[did]
    img = reg.image_path(c.image) if c.image else None
    return {"txt": c.txt, "img_path": img, "modality": c.modality, "did": did, "src_content": to_json(c.payload)}


def _count(params: MiniParams, split: str) -> int:
    return {"train": params.train_per_task, "val": params.val_per_task, "test": params.test_per_task}[split]


def _task_queries(
    reg: Registry, ctx: RecipeContext, task: TestTask, seed: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Query rows of one task and split, and the dids they reference (positives first)."""
    rng = random.Random(f"{seed}:{ctx.split}:{task.stem}")
    recipe = RECIPES[(task.dataset_id, task.task_id)]
    rows, dids = [], []
    for i in range(_count(ctx.params, ctx.split)):
        spec = recipe(ctx, rng, i)
        rows.append(query_row(reg, spec, negatives=ctx.split == "train"))
        dids += [reg.did(c) for c in (*spec.positives, *spec.distractors)]
    return rows, dids


def _fill_pool(reg: Registry, ctx: RecipeContext, task: TestTask, seed: int, dids: list[str]) -> list[str]:
    """Pad a local pool with candidates of the task's kind up to ``pool_per_task``."""
    pool = list(dict.fromkeys(dids))
    have = set(pool)
    rng = random.Random(f"{seed}:{ctx.split}:{task.stem}:fill")
    fill = filler(task.dataset_id, task.task_id)
    for i in range(4 * ctx.params.pool_per_task):
        if len(pool) >= ctx.params.pool_per_task:
            break
        did = reg.did(fill(ctx, rng, i))
        if did not in have:
            have.add(did)
            pool.append(did)
    return pool


def build_mini(params: MiniParams, seed: int) -> MiniData:
    """Generate every record of M-BEIR-mini (no I/O)."""
    reg = Registry()
    entities = make_entities(params, seed)
    queries: dict[tuple[str, str], list[dict[str, Any]]] = {}
    local: dict[str, list[str]] = {}
    global_: dict[str, list[str]] = {}
    for split in SPLITS:
        ctx = RecipeContext(params, split, entities)
        split_dids: list[str] = []
        for task in TEST_TASKS:
            rows, dids = _task_queries(reg, ctx, task, seed)
            queries[(split, task.stem)] = rows
            if split == "test":
                dids = local[task.stem] = _fill_pool(reg, ctx, task, seed, dids)
            split_dids += dids
        global_[split] = list(dict.fromkeys(split_dids))
    return MiniData(reg, queries, local, global_)


# --- writing ------------------------------------------------------------------------------------
def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _qrels_text(rows: list[dict[str, Any]]) -> str:
    return format_qrels([(r["qid"], d, r["task_id"]) for r in rows for d in r["pos_cand_list"]])


def write_images(reg: Registry, params: MiniParams, root: Path) -> Iterator[Path]:
    """Render every registered image (atomic writes); yield the written paths."""
    spec = RenderSpec(params.image_size, params.jitter_px, params.shade_jitter)
    made: set[Path] = set()
    for image, rel in tqdm(reg.images.items(), desc="render", unit="img", disable=None):
        path = root / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        # tmp + rename keeps every image whole; durability comes from one sync before the manifest
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(png_bytes(render_scene(image.scene, spec, image.variant)))
        os.replace(tmp, path)
        yield path


def write_annotations(data: MiniData, root: Path) -> Iterator[Path]:
    """Write query files, pools, qrels and instructions; yield the written paths."""
    reg = data.registry
    for (split, stem), rows in data.queries.items():
        if split != "train":
            yield _jsonl(query_file(root, split, stem), rows)
            path = qrels_file(root, split, stem)
            write_text(path, _qrels_text(rows))
            yield path
    for stem, dids in data.local_pools.items():
        yield _jsonl(local_pool_file(root, stem), [candidate_row(reg, d) for d in dids])
    for split, dids in data.global_pools.items():
        yield _jsonl(global_pool_file(root, split), [candidate_row(reg, d) for d in dids])
    union: list[dict[str, Any]] = []
    for ds, name in DATASETS.items():
        rows = [r for t in TEST_TASKS if t.dataset_id == ds for r in data.queries[("train", t.stem)]]
        union += rows
        yield _jsonl(train_query_file(root, name), rows)
    yield _jsonl(union_train_file(root), union)
    path = instructions_file(root)
    write_text(path, instructions_tsv())
    yield path


def write_mini(params: MiniParams, seed: int, root: Path) -> list[Path]:
    """Generate and write M-BEIR-mini under ``root``; return every file written."""
    data = build_mini(params, seed)
    log.info("M-BEIR-mini: %d images, %d candidates", len(data.registry.images), len(data.registry.cands))
    written = list(write_annotations(data, root))
    written += list(write_images(data.registry, params, root))
    return written

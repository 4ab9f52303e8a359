"""Test doubles of the export: an encoder with known geometry and a tiny M-BEIR layout.

``KeyEncoder``: a candidate's vector is a hash of its did; a query's vector is the vector of
the did named by its last word, so every query whose text names its positive is a hit at
rank 1 and the expected recall is known. ``make_layout`` writes two test tasks and a union
pool with one union-only candidate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trace_core.config import Params
from trace_core.paths import Paths

DIM = 16


@dataclass
class Enc:
    vectors: np.ndarray
    routes: list[str]
    new_tokens: list[int]
    chains: list[str]


class KeyEncoder:
    model_id = "test-key-encoder"
    dim = DIM

    def __init__(self) -> None:
        self.calls = {"queries": 0, "candidates": 0}

    @staticmethod
    def _vec(key: str) -> np.ndarray:
        seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
        v = np.random.default_rng(seed).standard_normal(DIM)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def encode_candidates(self, items, image_root, batch_size):
        self.calls["candidates"] += len(items)
        return np.stack([self._vec(it.id) for it in items])

    def encode_queries(self, items, image_root, mode, max_new_tokens, batch_size):
        self.calls["queries"] += len(items)
        keys = [it.text.rstrip(".").split()[-1] for it in items]
        reason = [mode == "always" or (mode == "adaptive" and it.task_id == 7) for it in items]
        return Enc(
            np.stack([self._vec(k) for k in keys]),
            ["reasoned" if r else "direct" for r in reason],
            [5 if r else 0 for r in reason],
            ["a chain" if r else "" for r in reason],
        )


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_layout(root: Path) -> None:
    """mscoco_task0 (t->i, 6 queries, 1 names a wrong did) and cirr_task7 ((i,t)->i, 4 queries)."""
    (root / "instructions").mkdir(parents=True)
    (root / "instructions" / "query_instructions.tsv").write_text(
        "query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\ntext\timage\tMSCOCO\t9\tFind an image of\n"
    )
    coco_pool = [
        {"did": f"9:{i}", "txt": None, "img_path": f"img/9_{i}.jpg", "modality": "image", "src_content": None}
        for i in range(1, 13)
    ]
    cirr_pool = [
        {"did": f"8:{i}", "txt": None, "img_path": f"img/8_{i}.jpg", "modality": "image", "src_content": None}
        for i in range(1, 9)
    ]
    coco_q = [
        {
            "qid": f"9:{100 + i}",
            "query_txt": f"thing 9:{i if i < 6 else 12}",
            "query_img_path": None,
            "query_modality": "text",
            "query_src_content": None,
            "pos_cand_list": [f"9:{i}"],
            "neg_cand_list": [],
            "task_id": 0,
        }
        for i in range(1, 7)
    ]
    cirr_q = [
        {
            "qid": f"8:{100 + i}",
            "query_txt": f"edit 8:{i}",
            "query_img_path": f"img/8_{i + 4}.jpg",
            "query_modality": "image,text",
            "query_src_content": None,
            "pos_cand_list": [f"8:{i}"],
            "neg_cand_list": [],
            "task_id": 7,
        }
        for i in range(1, 5)
    ]
    _jsonl(root / "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl", coco_pool)
    _jsonl(root / "cand_pool/local/mbeir_cirr_task7_cand_pool.jsonl", cirr_pool)
    extra = {"did": "3:1", "txt": "union only", "img_path": None, "modality": "text", "src_content": None}
    _jsonl(root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", [*coco_pool, *cirr_pool, extra])
    _jsonl(root / "query/test/mbeir_mscoco_task0_test.jsonl", coco_q)
    _jsonl(root / "query/test/mbeir_cirr_task7_test.jsonl", cirr_q)
    qrels = root / "qrels/test"
    qrels.mkdir(parents=True)
    for stem, qs in (("mscoco_task0", coco_q), ("cirr_task7", cirr_q)):
        (qrels / f"mbeir_{stem}_test_qrels.txt").write_text(
            "".join(f"{q['qid']} 0 {q['pos_cand_list'][0]} 1 {q['task_id']}\n" for q in qs)
        )


def export_params(**export: object) -> Params:
    """Params of a layout at ``data/``: shards of 4, batches of 2, tracking off; ``export`` overrides."""
    return Params.model_validate(
        {
            "paths": {"data_root": "data"},
            "export": {"shard_size": 4, "batch_size": 2, **export},
            "tracking": {"enabled": False},
            "index": {"search_batch": 3},
        }
    )


def layout_params(tmp_path: Path) -> tuple[Params, Paths]:
    """Params (see :func:`export_params`) and paths of a fresh layout under ``tmp_path``."""
    make_layout(tmp_path / "data")
    params = export_params()
    return params, Paths.from_params(params, tmp_path)


def save_micro_model(model_dir: Path, params: Params, texts: list[str]) -> Path:
    """Save an untrained model of ``params.model`` (tiny family) the way the train stage does."""
    import torch

    from trace_core.config import dump_params
    from trace_core.model.backbone import build_backbone, family_of
    from trace_core.model.checkpoint import META_FILE, save_backbone

    mp = params.model
    bb = build_backbone(mp, texts, params.base.seed, torch.float32)
    save_backbone(bb.model, bb.proc, model_dir)
    meta = {
        "family": mp.family,
        "model_class": family_of(mp).model_class,
        "emb_token": mp.emb_token,
        "emb_token_id": bb.proc.ids.emb,
        "dtype": "float32",
        "temperature": params.train.temperature,
        "params": dump_params(params),
    }
    (model_dir / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return model_dir

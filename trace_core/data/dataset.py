"""Conversions from M-BEIR records to model inputs, and the training-file row format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trace_core.data.files import check_record_path
from trace_core.data.instructions import Instructions, instructed_text
from trace_core.data.normalize import TextNorm, normalize
from trace_core.io import DataError, iter_jsonl
from trace_core.types import CandidateRecord, EncodeItem, QueryRecord, TrainSample

EMB_TOKEN = "<|emb|>"


def query_item(q: QueryRecord, instructions: Instructions, seed: int, mode: TextNorm) -> tuple[EncodeItem, str]:
    """Model input of a query (instruction-prefixed, normalised text) and the instruction chosen."""
    instruction, text = instructed_text(q, instructions, seed, mode)
    return EncodeItem(q.qid, q.task_id, text or None, q.query_img_path), instruction


def candidate_item(c: CandidateRecord, task_id: int, mode: TextNorm) -> EncodeItem:
    """Model input of a candidate: no instruction, text normalised as ``mode`` says."""
    return EncodeItem(c.did, task_id, normalize(c.txt, mode), c.img_path)


def item_to_dict(item: EncodeItem) -> dict[str, Any]:
    """JSON form of an :class:`EncodeItem`."""
    return {"id": item.id, "task_id": item.task_id, "text": item.text, "img_path": item.img_path}


def item_from_dict(d: dict[str, Any]) -> EncodeItem:
    """Inverse of :func:`item_to_dict`."""
    return EncodeItem(str(d["id"]), int(d["task_id"]), d.get("text"), d.get("img_path"))


def sample_to_dict(s: TrainSample) -> dict[str, Any]:
    """JSON form of one training-file row."""
    return {
        "qid": s.qid,
        "task_id": s.task_id,
        "dataset_id": s.dataset_id,
        "z": s.z,
        "instruction": s.instruction,
        "query": item_to_dict(s.query),
        "positive": item_to_dict(s.positive),
        "negatives": [item_to_dict(n) for n in s.negatives],
        "target": s.target,
    }


def sample_from_dict(d: dict[str, Any]) -> TrainSample:
    """Inverse of :func:`sample_to_dict`."""
    return TrainSample(
        qid=str(d["qid"]),
        task_id=int(d["task_id"]),
        dataset_id=int(d["dataset_id"]),
        z=int(d["z"]),
        query=item_from_dict(d["query"]),
        positive=item_from_dict(d["positive"]),
        target=str(d["target"]),
        instruction=str(d.get("instruction", "")),
        negatives=tuple(item_from_dict(n) for n in d.get("negatives", [])),
    )


def load_train_samples(path: Path) -> list[TrainSample]:
    """Read the training file; a bad row (or an image path leaving the data root) raises :class:`DataError`."""
    out = []
    for lineno, obj in iter_jsonl(path):
        try:
            sample = sample_from_dict(obj)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(path, f"line {lineno}", f"not a training row ({err})") from None
        if not sample.target.endswith(EMB_TOKEN):
            raise DataError(path, f"line {lineno}", f"target must end with {EMB_TOKEN}")
        for item in (sample.query, sample.positive, *sample.negatives):
            check_record_path(item.img_path, f"image of {item.id}", path, f"line {lineno} (record {sample.qid})")
        out.append(sample)
    return out

"""CC-Neg: image -> {true caption, negated caption}, ITM accuracy.

Source: CC-Neg from "Learn 'No' to Say 'Yes' Better" (CoN-CLIP; Singh et al., WACV 2025),
``github.com/jaisidhsingh/CoN-CLIP``. File read: ``ccneg_preprocessed.pt``, a ``torch.save``d
dict of plain Python objects (loaded with ``weights_only=True``, so nothing else unpickles)::

    {"image_paths": ["/workspace/datasets/cc3m/cc3m_subset_images_extracted_final/<name>.jpg", ...],
     "annotations": [{"json": {"caption": "<true caption>", ...},
                      "sop_data": {"negative-prompt": "<negated caption>", ...}}, ...]}

The authors' evaluation split is the last 40,000 records (:data:`EVAL_SAMPLES`; all of them when
the file has fewer). Image paths carry the authors' prefix ``/workspace/datasets/cc3m/``,
replaced by the folder ``ccneg_images/``. A query is right when its true caption scores above
the negated one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trace_core.data.zeroshot import CCNEG_FILE, CCNEG_IMAGES, CCNEG_PATH_PREFIX
from trace_core.evaluation.zeroshot.base import (
    IMAGE_TO_TEXT,
    LoadContext,
    ZsQuery,
    ZsTask,
    make_id,
    query_item,
    require_file,
    text_candidate,
)
from trace_core.io import DataError

NAME = "ccneg"
EVAL_SAMPLES = 40_000
INSTRUCTION = "Find the caption that is true of this image."


def read_pt(path: Path) -> dict[str, Any]:
    """The ``.pt`` file's dict (plain objects only)."""
    import pickle

    import torch

    require_file(path, "CC-Neg annotation file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise DataError(path, "file", f"not a readable CC-Neg .pt file of plain objects ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("image_paths"), list):
        raise DataError(path, "top level", "must be a dict with lists 'image_paths' and 'annotations'")
    if not isinstance(data.get("annotations"), list) or len(data["annotations"]) != len(data["image_paths"]):
        raise DataError(path, "top level", "'annotations' must be a list as long as 'image_paths'")
    return data


def _text(path: Path, index: int, ann: Any, outer: str, inner: str) -> str:
    value = ann.get(outer, {}).get(inner) if isinstance(ann, dict) and isinstance(ann.get(outer), dict) else None
    if not isinstance(value, str) or not value.strip():
        raise DataError(
            path, f"record {index}", f"annotations[{index}]['{outer}']['{inner}'] must be a non-empty string"
        )
    return value.strip()


def load(ctx: LoadContext) -> list[ZsTask]:
    """One accuracy task over the evaluation split."""
    folder = ctx.root / NAME
    path = folder / CCNEG_FILE
    data = read_pt(path)
    start = max(0, len(data["image_paths"]) - EVAL_SAMPLES)
    queries, texts = [], []
    for i in range(start, len(data["image_paths"])):
        image, ann = data["image_paths"][i], data["annotations"][i]
        if not isinstance(image, str) or not image.startswith(CCNEG_PATH_PREFIX):
            raise DataError(path, f"record {i}", f"image path must start with {CCNEG_PATH_PREFIX}, got {image!r}")
        rel = ctx.rel(folder / CCNEG_IMAGES / image[len(CCNEG_PATH_PREFIX) :])
        pos, neg = make_id(NAME, f"{i}pos"), make_id(NAME, f"{i}neg")
        texts += [
            text_candidate(pos, IMAGE_TO_TEXT, _text(path, i, ann, "json", "caption")),
            text_candidate(neg, IMAGE_TO_TEXT, _text(path, i, ann, "sop_data", "negative-prompt")),
        ]
        qid = make_id(NAME, i)
        item = query_item(qid, IMAGE_TO_TEXT, INSTRUCTION, None, rel)
        queries.append(ZsQuery(qid, item, frozenset({pos}), gallery=(pos, neg)))
    if not queries:
        raise DataError(path, "top level", "no records")
    return [ZsTask(NAME, NAME, "accuracy", (1,), tuple(queries), tuple(texts))]

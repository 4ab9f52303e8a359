"""CIRCO: composed image retrieval with several ground truths per query, mAP@5.

Source: CIRCO (Baldrati et al., ICCV 2023), ``github.com/miccunifi/CIRCO``. Files read:

* ``annotations/val.json``: a JSON array of queries::

      {"reference_img_id": 85932, "target_img_id": 9761,
       "relative_caption": "is held by a little girl on a chair", "shared_concept": "a teddy bear",
       "gt_img_ids": [9761, 489535, 57541, 375057, 119881], "id": 0}

  (``test.json`` has no ``target_img_id``/``gt_img_ids``: the test split is scored by the
  authors' evaluation server, so the validation split is evaluated here.)
* ``COCO2017_unlabeled/annotations/image_info_unlabeled2017.json`` (COCO 2017 unlabeled image
  info: ``{"images": [{"id": 9761, "file_name": "000000009761.jpg", ...}]}``); every listed image
  is a candidate, its file in ``COCO2017_unlabeled/unlabeled2017/``.

The query is the reference image with the relative caption; the metric is CIRCO's mAP@k over
all ground truths (:func:`trace_core.evaluation.metrics.average_precision_at_k`).
"""

from __future__ import annotations

from trace_core.data.zeroshot import CIRCO_ANNOTATIONS, CIRCO_IMAGE_INFO, CIRCO_IMAGES
from trace_core.evaluation.zeroshot.base import (
    COMPOSED_TO_IMAGE,
    JsonFile,
    LoadContext,
    ZsQuery,
    ZsTask,
    image_candidate,
    make_id,
    query_item,
)

NAME = "circo"
INSTRUCTION = "Find an everyday photo sharing the subject of this one, except that it"
QUERY_FIELDS = {"id": int, "reference_img_id": int, "relative_caption": str, "gt_img_ids": list}


def image_files(ctx: LoadContext) -> dict[int, str]:
    """COCO unlabeled image id -> image path (relative to the zero-shot root)."""
    folder = ctx.root / NAME
    jf = JsonFile.read(folder / CIRCO_IMAGE_INFO, "COCO 2017 unlabeled image info")
    images = jf.fields(jf.data, {"images": list}, [])["images"]
    out = {}
    for i, obj in enumerate(images):
        rec = jf.fields(obj, {"id": int, "file_name": str}, ["images", i])
        if rec["id"] in out:
            raise jf.error(["images", i], f"image id {rec['id']} listed twice")
        out[rec["id"]] = ctx.rel(folder / CIRCO_IMAGES / rec["file_name"])
    return out


def load(ctx: LoadContext) -> list[ZsTask]:
    """One mAP task over the validation queries; the gallery is every unlabeled image."""
    files = image_files(ctx)
    jf = JsonFile.read(ctx.root / NAME / CIRCO_ANNOTATIONS, "CIRCO validation annotations")
    queries, seen = [], set()
    for i, obj in enumerate(jf.expect(jf.data, list, [], "the top level")):
        rec = jf.fields(obj, QUERY_FIELDS, [i])
        gts = [jf.expect(g, int, [i], "each of 'gt_img_ids'") for g in rec["gt_img_ids"]]
        if not gts:
            raise jf.error([i], "gt_img_ids is empty")
        unknown = [g for g in [rec["reference_img_id"], *gts] if g not in files]
        if unknown:
            raise jf.error([i], f"image ids {unknown} are not in {CIRCO_IMAGE_INFO}")
        qid = make_id(NAME, f"q{rec['id']}")
        if qid in seen:
            raise jf.error([i], f"query id {rec['id']} used twice")
        seen.add(qid)
        caption = jf.nonempty_text(rec["relative_caption"], [i], "field 'relative_caption'")
        item = query_item(qid, COMPOSED_TO_IMAGE, INSTRUCTION, caption, files[rec["reference_img_id"]])
        queries.append(ZsQuery(qid, item, frozenset(make_id(NAME, g) for g in gts)))
    if not queries:
        raise jf.error([], "no queries")
    gallery = tuple(image_candidate(make_id(NAME, i), COMPOSED_TO_IMAGE, p) for i, p in files.items())
    return [ZsTask(NAME, NAME, "map", (5, 10, 25, 50), tuple(queries), gallery)]

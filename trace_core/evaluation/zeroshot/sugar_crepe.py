"""Sugar-Crepe: image -> {positive caption, hard negative caption}, ITM accuracy over 7 subsets.

Source: SugarCrepe (Hsieh et al., NeurIPS 2023), ``github.com/RAIVNLab/sugar-crepe``. Files read:
``data/<subset>.json`` for the subsets add_att, add_obj, replace_att, replace_obj, replace_rel,
swap_att, swap_obj (newer copies name the object subsets ``*_ent``), each a JSON object::

    {"0": {"filename": "000000544519.jpg",
           "caption": "A girl with a green shirt brushing her teeth with a blue toothbrush.",
           "negative_caption": "A girl with a blue shirt brushing her teeth with a green toothbrush."}, ...}

and the COCO 2017 validation images ``val2017/<filename>``. A record is right when its caption
scores above its negative caption; the column is the mean accuracy of the subsets present.
"""

from __future__ import annotations

from pathlib import Path

from trace_core.data.zeroshot import SUGAR_CREPE_DATA, SUGAR_CREPE_IMAGES, SUGAR_CREPE_SUBSETS
from trace_core.evaluation.zeroshot.base import (
    IMAGE_TO_TEXT,
    JsonFile,
    LoadContext,
    ZsQuery,
    ZsTask,
    make_id,
    query_item,
    text_candidate,
)
from trace_core.io import DataError

NAME = "sugar_crepe"
INSTRUCTION = "Find the caption that correctly describes this image."
FIELDS = {"filename": str, "caption": str, "negative_caption": str}


def load_subset(ctx: LoadContext, subset: str, path: Path) -> ZsTask:
    """One accuracy task over a subset file."""
    jf = JsonFile.read(path, f"Sugar-Crepe {subset} file")
    records = jf.expect(jf.data, dict, [], "the top level")
    queries, texts = [], []
    for key, obj in records.items():
        rec = jf.fields(obj, FIELDS, [key])
        image = ctx.rel(ctx.root / NAME / SUGAR_CREPE_IMAGES / jf.nonempty_text(rec["filename"], [key], "filename"))
        pos, neg = make_id(NAME, f"{subset}{key}pos"), make_id(NAME, f"{subset}{key}neg")
        texts += [
            text_candidate(pos, IMAGE_TO_TEXT, jf.nonempty_text(rec["caption"], [key], "field 'caption'")),
            text_candidate(neg, IMAGE_TO_TEXT, jf.nonempty_text(rec["negative_caption"], [key], "negative_caption")),
        ]
        qid = make_id(NAME, f"{subset}{key}")
        item = query_item(qid, IMAGE_TO_TEXT, INSTRUCTION, None, image)
        queries.append(ZsQuery(qid, item, frozenset({pos}), gallery=(pos, neg)))
    if not queries:
        raise jf.error([], "no records")
    return ZsTask(f"{NAME}_{subset}", NAME, "accuracy", (1,), tuple(queries), tuple(texts))


def load(ctx: LoadContext) -> list[ZsTask]:
    """One task per subset file present (at least one is required)."""
    folder = ctx.root / NAME / SUGAR_CREPE_DATA
    found = []
    for names in SUGAR_CREPE_SUBSETS:
        path = next((folder / f"{n}.json" for n in names if (folder / f"{n}.json").is_file()), None)
        if path is not None:
            found.append((names[0], path))
    if not found:
        raise DataError(folder, "folder", "no Sugar-Crepe subset file (add_att.json, add_obj.json, ...)")
    return [load_subset(ctx, subset, path) for subset, path in found]

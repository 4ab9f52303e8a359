"""Visual Dialog: dialogue history (text) -> image, R@1.

Source: VisDial v1.0 (Das et al., CVPR 2017), ``visualdialog.org``. Files read:
``visdial_1.0_val.json``::

    {"version": "1.0", "split": "val2018",
     "data": {"questions": ["is the photo in color", ...], "answers": ["yes", ...],
              "dialogs": [{"image_id": 185565, "caption": "...",
                           "dialog": [{"question": 0, "answer": 0, "answer_options": [...], "gt_index": 5}, ...]}]}}

and the images ``VisualDialog_val2018/VisualDialog_val2018_<image_id:012d>.jpg``. Each dialogue
is a query: its rounds as ``Q: <question>? A: <answer>.`` (the caption is left out, as in
LamRA's protocol); the gallery is every dialogue's image and the positive its own.
"""

from __future__ import annotations

from trace_core.data.zeroshot import VISDIAL_IMAGES, VISDIAL_JSON
from trace_core.evaluation.zeroshot.base import (
    TEXT_TO_IMAGE,
    JsonFile,
    LoadContext,
    ZsQuery,
    ZsTask,
    image_candidate,
    make_id,
    query_item,
    unique_candidates,
)

NAME = "visdial"
INSTRUCTION = "Find the everyday photo that this dialogue is about:"


def _pick(jf: JsonFile, table: list[object], index: object, keys: list[str | int], what: str) -> str:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(table):
        raise jf.error(keys, f"{what} index {index!r} is not an index of data.{what}s")
    return jf.nonempty_text(table[index], ["data", f"{what}s", index], f"{what} {index}").rstrip("?.")


def dialog_text(jf: JsonFile, dialog: list[object], tables: dict[str, list[object]], keys: list[str | int]) -> str:
    """``Q: ...? A: ...`` over the rounds of one dialogue."""
    parts = []
    for r, obj in enumerate(dialog):
        rnd = jf.fields(obj, {"question": int, "answer": int}, [*keys, r])
        parts.append(f"Q: {_pick(jf, tables['question'], rnd['question'], [*keys, r], 'question')}?")
        parts.append(f"A: {_pick(jf, tables['answer'], rnd['answer'], [*keys, r], 'answer')}.")
    return " ".join(parts)


def load(ctx: LoadContext) -> list[ZsTask]:
    """One R@1 task: every dialogue against every dialogue's image."""
    folder = ctx.root / NAME
    jf = JsonFile.read(folder / VISDIAL_JSON, "VisDial v1.0 validation file")
    data = jf.fields(
        jf.fields(jf.data, {"data": dict}, [])["data"], {"questions": list, "answers": list, "dialogs": list}, ["data"]
    )
    tables = {"question": data["questions"], "answer": data["answers"]}
    queries, images = [], []
    for i, obj in enumerate(data["dialogs"]):
        keys: list[str | int] = ["data", "dialogs", i]
        rec = jf.fields(obj, {"image_id": int, "dialog": list}, keys)
        if not rec["dialog"]:
            raise jf.error(keys, "a dialogue without rounds")
        cid = make_id(NAME, rec["image_id"])
        path = folder / VISDIAL_IMAGES / f"VisualDialog_val2018_{rec['image_id']:012d}.jpg"
        images.append(image_candidate(cid, TEXT_TO_IMAGE, ctx.rel(path)))
        qid = make_id(NAME, f"d{i}")
        text = dialog_text(jf, rec["dialog"], tables, [*keys, "dialog"])
        queries.append(ZsQuery(qid, query_item(qid, TEXT_TO_IMAGE, INSTRUCTION, text, None), frozenset({cid})))
    if not queries:
        raise jf.error(["data", "dialogs"], "no dialogues")
    return [ZsTask(NAME, NAME, "recall", (1, 5, 10), tuple(queries), unique_candidates(images))]

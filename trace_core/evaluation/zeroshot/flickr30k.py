"""Flickr30K: text<->image retrieval on the 1K test split, R@1 both ways.

Source: Flickr30K (Young et al., 2014) with the Karpathy split (Karpathy & Fei-Fei, 2015), the
file ``dataset_flickr30k.json`` distributed with the split::

    {"dataset": "flickr30k",
     "images": [{"filename": "1000092795.jpg", "imgid": 0, "split": "test",
                 "sentids": [0, 1, 2, 3, 4],
                 "sentences": [{"raw": "Two young guys ...", "tokens": [...], "imgid": 0, "sentid": 0}, ...]}]}

Images of ``split == "test"`` (1,000 images, 5,000 captions) are evaluated; image files sit in
``flickr30k-images/``. A caption query's positive is its image; an image query's positives
are its five captions.
"""

from __future__ import annotations

from trace_core.data.zeroshot import FLICKR30K_IMAGES, FLICKR30K_JSON
from trace_core.evaluation.zeroshot.base import CaptionPair, JsonFile, Key, LoadContext, ZsTask, caption_tasks

NAME = "flickr30k"
SPLIT = "test"
T2I = "Find the everyday photo that this caption describes:"
I2T = "Find a caption describing this everyday photo."


def load(ctx: LoadContext) -> list[ZsTask]:
    """The t2i and i2t tasks over the Karpathy test split."""
    folder = ctx.root / NAME
    jf = JsonFile.read(folder / FLICKR30K_JSON, "Flickr30K Karpathy split file")
    top = jf.fields(jf.data, {"images": list}, [])
    pairs: list[CaptionPair] = []
    sentids: set[str] = set()
    for i, obj in enumerate(top["images"]):
        rec = jf.fields(obj, {"filename": str, "split": str, "sentences": list}, ["images", i])
        if rec["split"] != SPLIT:
            continue
        image = ctx.rel(folder / FLICKR30K_IMAGES / rec["filename"])
        if not rec["sentences"]:
            raise jf.error(["images", i], "a test image has no sentences")
        for j, sent in enumerate(rec["sentences"]):
            keys: list[Key] = ["images", i, "sentences", j]
            raw = jf.nonempty_text(jf.fields(sent, {"raw": str}, keys)["raw"], keys, "field 'raw'")
            sentid = str(sent.get("sentid", f"{i}_{j}"))
            if sentid in sentids:
                raise jf.error(keys, f"sentid {sentid} used twice")
            sentids.add(sentid)
            pairs.append(CaptionPair(rec["filename"], image, sentid, raw))
    if not pairs:
        raise jf.error(["images"], f"no image with split '{SPLIT}'")
    return caption_tasks(NAME, pairs, T2I, I2T)

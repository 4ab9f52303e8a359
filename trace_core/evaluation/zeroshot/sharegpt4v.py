r"""ShareGPT4V: long-caption text<->image retrieval, R@1 both ways.

Source: ShareGPT4V (Chen et al., 2023), distributed on the Hugging Face hub as
``Lin-Chen/ShareGPT4V``. File read: ``sharegpt4v_instruct_gpt4-vision_cap100k.json``, a JSON
array of LLaVA-style conversations::

    {"id": "000000000009", "image": "coco/train2017/000000000009.jpg",
     "conversations": [{"from": "human", "value": "<image>\nWhat is ..."},
                       {"from": "gpt", "value": "<the GPT-4V caption>"}]}

``image`` is relative to the folder holding the images (the JSON's own folder here). The
caption is the first ``gpt`` turn. The long-caption retrieval protocol (Long-CLIP, LamRA)
evaluates 1,000 held-out pairs; we take the first :data:`EVAL_PAIRS` records in file order.
"""

from __future__ import annotations

from trace_core.data.zeroshot import SHAREGPT4V_JSON
from trace_core.evaluation.zeroshot.base import CaptionPair, JsonFile, LoadContext, ZsTask, caption_tasks

NAME = "sharegpt4v"
EVAL_PAIRS = 1000
T2I = "Find the image that this detailed description depicts:"
I2T = "Find the detailed description of this image."


def load(ctx: LoadContext) -> list[ZsTask]:
    """The t2i and i2t tasks over the first :data:`EVAL_PAIRS` records."""
    folder = ctx.root / NAME
    jf = JsonFile.read(folder / SHAREGPT4V_JSON, "ShareGPT4V caption file")
    records = jf.expect(jf.data, list, [], "the top level")
    pairs = []
    for i, obj in enumerate(records[:EVAL_PAIRS]):
        rec = jf.fields(obj, {"id": (str, int), "image": str, "conversations": list}, [i])
        gpt = [t for t in rec["conversations"] if isinstance(t, dict) and t.get("from") == "gpt"]
        if not gpt:
            raise jf.error([i], "conversations hold no 'gpt' turn (the caption)")
        caption = jf.nonempty_text(gpt[0].get("value"), [i], "the gpt turn's 'value'")
        image = jf.nonempty_text(rec["image"], [i], "field 'image'")
        pairs.append(CaptionPair(image, ctx.rel(folder / image), str(i), caption))
    if not pairs:
        raise jf.error([], "no records")
    return caption_tasks(NAME, pairs, T2I, I2T)

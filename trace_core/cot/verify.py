"""The model filter: a verifier (any teacher-protocol model) judges each kept chain.

The verifier answers ``<decision>consistent|inconsistent</decision><confidence>x</confidence>``
(:func:`~trace_core.cot.parse.parse_verdict`). A chain survives iff the decision is
``consistent`` and the confidence is strictly above ``cot_curate.verifier_threshold``.
The oracle verifier (M-BEIR-mini) recomputes the expected target from the query metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trace_core.cot import prompts
from trace_core.cot.parse import Chain, Verdict, parse_verdict
from trace_core.cot.teacher import Teacher, safe_generate
from trace_core.data.files import open_record_file


@dataclass(frozen=True)
class VerifyItem:
    """What the verifier sees of one chain."""

    qid: str
    task_id: int
    query_txt: str | None
    query_img_path: str | None
    target_txt: str | None
    meta: str | None
    chain: Chain
    target_img_path: str | None = None  # relative to the data root


def verify_request(item: VerifyItem, data_root: Path) -> prompts.TeacherRequest:
    """The verifier request of one chain: the query (text, image), the chain and the target.

    A target without text (an image-only candidate, e.g. CIRR, FashionIQ, MSCOCO images) is
    attached as an image after the query image, so the verifier sees the target either way.
    """
    image = str(open_record_file(data_root, item.query_img_path, item.qid)) if item.query_img_path else None
    target_image = (
        str(open_record_file(data_root, item.target_img_path, item.qid))
        if item.target_img_path and not item.target_txt
        else None
    )
    user = prompts.verifier_user_prompt(
        item.query_txt,
        item.task_id,
        item.chain.reasoning,
        item.chain.answer,
        item.target_txt,
        query_image=image is not None,
        target_image=target_image is not None,
    )
    return prompts.TeacherRequest(
        item.qid, "verify", prompts.VERIFIER_SYSTEM, user, image, item.meta, item.chain.answer, target_image
    )


def verify(verifier: Teacher, items: Sequence[VerifyItem], data_root: Path, batch: int) -> list[Verdict]:
    """Verdicts in item order; a failed request gives an ``error`` verdict."""
    out: list[Verdict] = []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        for res in safe_generate(verifier, [verify_request(it, data_root) for it in chunk]):
            out.append(parse_verdict(res.text) if res.text is not None else Verdict("error", 0.0, res.error))
    return out


def passes(v: Verdict, threshold: float) -> str:
    """Empty string when the verdict keeps the chain, else the reason."""
    if v.error:
        return f"verifier failed: {v.error}"
    if v.decision != "consistent":
        return f"verifier decision '{v.decision}' (confidence {v.confidence:.2f})"
    if not v.confidence > threshold:
        return f"verifier confidence {v.confidence:.2f} <= {threshold}"
    return ""

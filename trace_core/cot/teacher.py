"""Teachers behind one protocol: ``oracle``, ``transformers`` and ``openai``.

A teacher turns :class:`~trace_core.cot.prompts.TeacherRequest` objects into text, one
:class:`TeacherResult` per request in the same order. A request that fails yields a result
with ``text=None`` and the reason in ``error``; the run never aborts on a teacher failure.
The same protocol serves as chain writer, routing assessor and verifier (``purpose``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from trace_core.config import TeacherParams
from trace_core.cot.oracle import OracleError, oracle_chain, oracle_label, oracle_verdict
from trace_core.cot.prompts import TeacherRequest, TeacherResult

log = logging.getLogger(__name__)


class Teacher(Protocol):
    """Anything that answers teacher requests in order."""

    name: str

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        """One result per request, in order; failures as error results."""
        ...

    def close(self) -> None:
        """Release resources (model, HTTP client)."""
        ...


class OracleTeacher:
    """Writes exact outputs from M-BEIR-mini metadata (``request.meta``); needs no model."""

    name = "oracle"

    def __init__(self, seed: int, answer_max_words: int, keyword_min_chars: int) -> None:
        self.seed, self.max_words, self.min_chars = seed, answer_max_words, keyword_min_chars

    def _one(self, r: TeacherRequest) -> str:
        if r.purpose == "chain":
            return oracle_chain(r.meta, r.id, self.seed, self.max_words)
        if r.purpose == "assess":
            return oracle_label(r.meta)
        return oracle_verdict(r.meta, r.answer or "", self.min_chars)

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        """Answer every request from its metadata; missing/invalid metadata is an error row."""
        out = []
        for r in requests:
            try:
                out.append(TeacherResult(r.id, self._one(r)))
            except OracleError as err:
                out.append(TeacherResult(r.id, None, f"oracle: {err}"))
        return out

    def close(self) -> None:
        """Nothing to release."""


def make_teacher(cfg: TeacherParams, seed: int, keyword_min_chars: int = 3) -> Teacher:
    """Build the teacher named by ``cfg.kind`` (heavy libraries imported lazily)."""
    if cfg.kind == "oracle":
        return OracleTeacher(seed, cfg.oracle_answer_max_words, keyword_min_chars)
    if cfg.kind == "transformers":
        from trace_core.cot.teacher_hf import TransformersTeacher

        return TransformersTeacher(cfg, seed)
    from trace_core.cot.teacher_openai import OpenAITeacher

    return OpenAITeacher(cfg)


def safe_generate(teacher: Teacher, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
    """``teacher.generate`` where an exception turns every request into an error row.

    Only :class:`Exception` is caught: an interrupt (``KeyboardInterrupt``, ``SystemExit``)
    still stops the run, which is what makes a killed generation resumable.
    """
    if not requests:
        return []
    try:
        results = teacher.generate(requests)
    except Exception as err:  # noqa: BLE001 - a teacher failure is data, not a crash
        log.warning("teacher %s failed on %d requests: %s", teacher.name, len(requests), err)
        return [TeacherResult(r.id, None, f"{type(err).__name__}: {err}") for r in requests]
    if [r.id for r in results] != [r.id for r in requests]:
        return [TeacherResult(r.id, None, "teacher returned results out of order or missing") for r in requests]
    return results

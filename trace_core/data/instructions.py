"""M-BEIR query instructions: TSV parsing, deterministic choice, prefixing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from trace_core.data.mbeir import TASKS
from trace_core.data.normalize import TextNorm, instructed, normalize
from trace_core.io import DataError, iter_text_lines
from trace_core.types import QueryRecord

HEADER_PREFIX = ("query_modality", "cand_modality", "dataset_name", "dataset_id")

InstructionKey = tuple[int, str, str]  # (dataset_id, query modality, candidate modality)


@dataclass(frozen=True)
class Instructions:
    """Prompts per key ``(dataset_id, query_modality, cand_modality)``."""

    prompts: dict[InstructionKey, tuple[str, ...]]

    def for_query(self, q: QueryRecord) -> tuple[str, ...]:
        """Prompts applicable to a query (empty tuple when the key is missing)."""
        return self.prompts.get(instruction_key(q), ())


def instruction_key(q: QueryRecord) -> InstructionKey:
    """The key of a query: its dataset, its modality and its positives' modality (by task)."""
    return (q.dataset_id, q.query_modality, TASKS[q.task_id][1])


def parse_instructions(path: Path) -> Instructions:
    """Parse the TSV; columns are read by position after checking the header."""
    lines = [line.rstrip("\r\n") for _, line in iter_text_lines(path)]
    if not lines:
        raise DataError(path, "line 1", "empty instructions file (header expected)")
    header = lines[0].split("\t")
    if tuple(h.strip() for h in header[:4]) != HEADER_PREFIX:
        raise DataError(path, "line 1", f"header must start with {' '.join(HEADER_PREFIX)}")
    prompts: dict[InstructionKey, tuple[str, ...]] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < 5 or not cells[3].strip().isdigit():
            rule = "need query_modality, cand_modality, dataset_name, integer dataset_id and >= 1 prompt"
            raise DataError(path, f"line {lineno}", rule)
        key = (int(cells[3]), cells[0].strip(), cells[1].strip())
        texts = tuple(c.strip() for c in cells[4:] if c.strip())
        if not texts:
            raise DataError(path, f"line {lineno}", "no prompt in prompt_1..prompt_4")
        prompts[key] = texts
    return Instructions(prompts)


def choose_index(qid: str, n: int, seed: int) -> int:
    """Deterministic prompt index for a query: a hash of (seed, qid), stable across runs."""
    digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def instructed_text(q: QueryRecord, instructions: Instructions, seed: int, mode: TextNorm) -> tuple[str, str | None]:
    """Return ``(instruction, text)`` of a query as encoded (see :mod:`trace_core.data.normalize`).

    An image-only query gets the prompt alone; a query without an instruction key gets its own
    text (normalised), or ``None`` when it has none.
    """
    options = instructions.for_query(q)
    if not options:
        return "", normalize(q.query_txt, mode)
    prompt = options[choose_index(q.qid, len(options), seed)]
    return prompt, instructed(prompt, q.query_txt, mode)

"""Training data: the M-BEIR-CoT file, or a z=0 file derived from the M-BEIR train split."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch.utils.data import Dataset

from trace_core.data.dataset import EMB_TOKEN, candidate_item, query_item
from trace_core.data.instructions import parse_instructions
from trace_core.data.mbeir import global_pool_file, instructions_file, load_pool, load_train_queries
from trace_core.data.normalize import TextNorm
from trace_core.io import DataError
from trace_core.types import TrainSample


def derive_z0_samples(
    data_root: Path, seed: int, max_negatives: int, train_file: str, normalize: TextNorm
) -> list[TrainSample]:
    """A z=0 training set from the train split: every target is ``<|emb|>`` alone.

    Used until the CoT stages have produced the M-BEIR-CoT file. ``train_file`` and
    ``normalize`` are ``data.train_file`` / ``data.normalize_text`` (one row per occurrence).
    Positives (the first of ``pos_cand_list``) and hard negatives come from the train pool.
    """
    pool_path = global_pool_file(data_root, "train")
    pool = {c.did: c for c in load_pool(pool_path)}
    instructions = parse_instructions(instructions_file(data_root))
    out = []
    for q in load_train_queries(data_root, train_file):
        if not q.pos_cand_list or q.pos_cand_list[0] not in pool:
            raise DataError(pool_path, f"record {q.qid}", f"first positive of training query {q.qid} not in the pool")
        item, instruction = query_item(q, instructions, seed, normalize)
        negs = tuple(
            candidate_item(pool[d], q.task_id, normalize) for d in q.neg_cand_list[:max_negatives] if d in pool
        )
        out.append(
            TrainSample(
                qid=q.qid,
                task_id=q.task_id,
                dataset_id=q.dataset_id,
                z=0,
                query=item,
                positive=candidate_item(pool[q.pos_cand_list[0]], q.task_id, normalize),
                target=EMB_TOKEN,
                instruction=instruction,
                negatives=negs,
            )
        )
    return out


def split_validation(
    samples: Sequence[TrainSample], n_val: int, seed: int
) -> tuple[list[TrainSample], list[TrainSample]]:
    """Hold out ``n_val`` distinct queries, spread evenly over tasks, deterministically.

    Only the queries are held out: their positives may also be positives of training
    queries, as candidates of M-BEIR's pools may be. A query that the upsampled training file
    repeats is held out with all its occurrences (validation gets it once, training never).
    """
    rng = random.Random(seed)
    first: dict[str, int] = {}
    for i, s in enumerate(samples):
        first.setdefault(s.qid, i)
    by_task: dict[int, list[int]] = {}
    for i in first.values():
        by_task.setdefault(samples[i].task_id, []).append(i)
    per_task = max(1, n_val // max(1, len(by_task)))
    held: set[int] = set()
    for task in sorted(by_task):
        idx = list(by_task[task])
        rng.shuffle(idx)
        held.update(idx[:per_task])
    held_qids = {samples[i].qid for i in held}
    val = [samples[i] for i in sorted(held)]
    train = [s for s in samples if s.qid not in held_qids]
    return train, val


def training_texts(samples: Sequence[TrainSample]) -> Iterator[str]:
    """Every text the model will read or write (tiny tokenizer training)."""
    for s in samples:
        for item in (s.query, s.positive, *s.negatives):
            if item.text:
                yield item.text
        yield s.target.replace(EMB_TOKEN, "")


class SampleDataset(Dataset[TrainSample]):
    """A list of training samples as a map-style dataset (collated by ``TrainCollator``)."""

    def __init__(self, samples: Sequence[TrainSample]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> TrainSample:
        return self.samples[i]

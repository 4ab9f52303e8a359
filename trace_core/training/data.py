"""Training data: the M-BEIR-CoT file, or a z=0 file derived from the M-BEIR train split."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch.utils.data import Dataset

from trace_core.data.dataset import EMB_TOKEN, candidate_item, query_item
from trace_core.data.instructions import parse_instructions
from trace_core.data.mbeir import global_pool_file, instructions_file, iter_queries, load_pool, union_train_file
from trace_core.io import DataError
from trace_core.types import TrainSample


def derive_z0_samples(data_root: Path, seed: int, max_negatives: int) -> list[TrainSample]:
    """A z=0 training set from the union train split: every target is ``<|emb|>`` alone.

    Used until the CoT stages have produced the M-BEIR-CoT file. Positives (the first of
    ``pos_cand_list``) and hard negatives come from the train candidate pool.
    """
    pool_path = global_pool_file(data_root, "train")
    pool = {c.did: c for c in load_pool(pool_path)}
    instructions = parse_instructions(instructions_file(data_root))
    train_path = union_train_file(data_root)
    out = []
    for q in iter_queries(train_path):
        if not q.pos_cand_list or q.pos_cand_list[0] not in pool:
            raise DataError(train_path, f"record {q.qid}", f"first positive not in {pool_path.name}")
        item, instruction = query_item(q, instructions, seed)
        negs = tuple(candidate_item(pool[d], q.task_id) for d in q.neg_cand_list[:max_negatives] if d in pool)
        out.append(
            TrainSample(
                qid=q.qid,
                task_id=q.task_id,
                dataset_id=q.dataset_id,
                z=0,
                query=item,
                positive=candidate_item(pool[q.pos_cand_list[0]], q.task_id),
                target=EMB_TOKEN,
                instruction=instruction,
                negatives=negs,
            )
        )
    return out


def split_validation(
    samples: Sequence[TrainSample], n_val: int, seed: int
) -> tuple[list[TrainSample], list[TrainSample]]:
    """Hold out ``n_val`` queries, spread evenly over tasks, deterministically.

    Only the queries are held out: their positives may also be positives of training
    queries, as candidates of M-BEIR's pools may be.
    """
    rng = random.Random(seed)
    by_task: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_task.setdefault(s.task_id, []).append(i)
    per_task = max(1, n_val // max(1, len(by_task)))
    held: set[int] = set()
    for task in sorted(by_task):
        idx = list(by_task[task])
        rng.shuffle(idx)
        held.update(idx[:per_task])
    val = [samples[i] for i in sorted(held)]
    train = [s for i, s in enumerate(samples) if i not in held]
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

"""DataLoader workers (``export.num_workers``) build the same inputs, so give the same vectors as inline collation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from micro import micro_tiny
from PIL import Image

from trace_core.config import ModelParams
from trace_core.model.backbone import build_backbone
from trace_core.model.inference import BatchCollator, TraceEncoder, collated, split
from trace_core.model.trace_model import HeadConfig, TraceModel
from trace_core.types import EncodeItem

TEXTS = ["a red circle left of a blue square", "make the circle green", "the entity Zorbia is a city"] * 20


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[TraceModel, object, Path, list[EncodeItem]]:
    root = tmp_path_factory.mktemp("img")
    for i in range(6):
        Image.new("RGB", (56 + 28 * (i % 3), 84), (40 * i, 30, 200 - 30 * i)).save(root / f"{i}.png")
    bb = build_backbone(ModelParams(tiny=micro_tiny(400)), TEXTS, seed=0, dtype=torch.float32)
    model = TraceModel(bb.model, bb.proc.ids, HeadConfig(1.0, 1.0, 0.05, False, False)).eval()
    items = [
        EncodeItem(
            f"9:{i}", (0, 2, 3, 4, 6, 7, 8)[i % 7], TEXTS[i % 3] if i % 4 else None, f"{i % 6}.png" if i % 3 else None
        )
        for i in range(11)
    ]
    return model, bb.proc, root, items


def test_collated_in_workers_equals_inline(setup) -> None:
    _, proc, root, items = setup
    batches = split(items, 3)
    assert [len(b) for b in batches] == [3, 3, 3, 2]
    for side in ("candidate", "query"):
        collate = BatchCollator(proc, root, side)  # type: ignore[arg-type]
        inline = list(collated(batches, collate, 0))
        workers = list(collated(batches, collate, 2))
        assert len(inline) == len(workers) == 4
        for a, b in zip(inline, workers, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), (side, k)


def test_encoder_with_workers_gives_the_same_vectors(setup) -> None:
    model, proc, root, items = setup
    inline, workers = TraceEncoder(model, proc, "m"), TraceEncoder(model, proc, "m", num_workers=2)
    np.testing.assert_array_equal(inline.encode_candidates(items, root, 3), workers.encode_candidates(items, root, 3))
    for mode in ("adaptive", "always"):  # "always": every row also goes through the pooled decoding pass
        a = inline.encode_queries(items, root, mode, 3, 4)
        b = workers.encode_queries(items, root, mode, 3, 4)
        np.testing.assert_array_equal(a.vectors, b.vectors)
        assert (a.routes, a.new_tokens, a.chains) == (b.routes, b.new_tokens, b.chains)
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        TraceEncoder(model, proc, "m", num_workers=-1)

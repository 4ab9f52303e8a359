"""Rank-sharded export: shard assignment, the rank environment, and N ranks' shards merged by rank 0.

The ranks run here one after the other in one process (no process group): each encodes the
shards :func:`assign_units` gives it, then rank 0 merges. The result must be the files a
one-process export writes; the real multi-process run is tests/integration/test_export_ranks.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from export_doubles import KeyEncoder, export_params, make_layout

from trace_core.data.mbeir import present_test_tasks
from trace_core.indexing import export
from trace_core.indexing.distribute import Ranks, assign_units, checked, current_ranks, device_for
from trace_core.io import DataError
from trace_core.paths import Paths

RUN_SPECIFIC = {"encode_seconds", "qps"}


def test_assign_units_covers_each_unit_once_and_balances_rows():
    sizes = [24, 8, 24, 8, 4096, 17, 3, 3, 3, 4096, 1]
    for world in (1, 2, 3, 5, 16):
        owner = assign_units(sizes, world)
        assert len(owner) == len(sizes) and set(owner) <= set(range(world))
        loads = [sum(s for s, o in zip(sizes, owner, strict=True) if o == r) for r in range(world)]
        assert sum(loads) == sum(sizes)
        assert max(loads) - min(loads) <= max(sizes)  # longest-first bound
        assert assign_units(sizes, world) == owner  # every rank computes the same answer
    assert assign_units(sizes, 1) == [0] * len(sizes)
    assert assign_units([5] * 6, 3) == [0, 1, 2, 0, 1, 2]  # equal shards: round robin
    assert assign_units([1, 100, 1, 1], 2) == [1, 0, 1, 1]  # the big shard alone on one rank
    assert assign_units([], 4) == []
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        assign_units([1], 0)


def test_current_ranks(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert current_ranks() == Ranks(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert current_ranks() == Ranks(3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4: must be in \\[0, WORLD_SIZE=4\\)"):
        current_ranks()
    with pytest.raises(ValueError, match="WORLD_SIZE=0: must be >= 1"):
        checked(Ranks(0, 0, 0))
    assert device_for("auto", Ranks(1, 2, 1), cuda_available=True) == "cuda:1"
    assert device_for("auto", Ranks(0, 1, 0), cuda_available=True) == "cuda"
    assert device_for("auto", Ranks(1, 2, 1), cuda_available=False) == "cpu"


def _strip(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in RUN_SPECIFIC}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def export_files(root: Path) -> dict[str, object]:
    """Every file of an export: json without timings, other files as bytes."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(root))
            out[rel] = _strip(json.loads(p.read_text())) if p.suffix == ".json" else p.read_bytes()
    return out


def _setup(tmp_path: Path, name: str):  # type: ignore[no-untyped-def]
    params = export_params()
    params = params.model_copy(update={"paths": params.paths.model_copy(update={"embeddings_dir": name})})
    return params, Paths.from_params(params, tmp_path)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_then_merge_equal_one_process(tmp_path, world):
    make_layout(tmp_path / "data")
    params, one = _setup(tmp_path, "one")
    export.run(params, one, encoder=KeyEncoder())

    params, many = _setup(tmp_path, "many")
    enc = KeyEncoder()
    plan = export.export_plan(enc, present_test_tasks(many.data_root), params, many, "adaptive")
    owned = [export.encode_rank(plan.sets(), Ranks(r, world, r)) for r in reversed(range(world))]
    assert all(n > 0 for n in owned) and sum(owned) == sum(s.n_shards for s in plan.sets())
    assert enc.calls == {"queries": 10, "candidates": 21}  # each shard encoded by exactly one rank
    export.merge(plan, enc, "adaptive", many)
    assert export_files(many.embeddings_dir) == export_files(one.embeddings_dir)


def test_killed_rank_resumes_and_merge_refuses_missing_shards(tmp_path):
    make_layout(tmp_path / "data")
    params, paths = _setup(tmp_path, "emb")
    first = KeyEncoder()
    plan = export.export_plan(first, present_test_tasks(paths.data_root), params, paths, "adaptive")
    export.encode_rank(plan.sets(), Ranks(1, 2, 1))  # rank 1 finished, rank 0 was killed
    with pytest.raises(DataError, match=r"shard-00000.json:queries mscoco_task0: shard missing or stale"):
        export.merge(plan, first, "adaptive", paths)
    rerun = KeyEncoder()
    top = export.run(params, paths, encoder=rerun)  # one process picks up rank 0's share only
    assert rerun.calls["queries"] + first.calls["queries"] == 10
    assert rerun.calls["candidates"] + first.calls["candidates"] == 21
    assert rerun.calls["candidates"] < 21 and first.calls["candidates"] > 0
    _, one = _setup(tmp_path, "one")
    export.run(params, one, encoder=KeyEncoder())
    assert export_files(paths.embeddings_dir) == export_files(one.embeddings_dir)
    assert top["model_id"] == "test-key-encoder"


def _script():  # type: ignore[no-untyped-def]
    path = Path(__file__).resolve().parents[2] / "scripts/export_equivalence.py"
    spec = importlib.util.spec_from_file_location("export_equivalence", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_equivalence_script_detects_differences(tmp_path):
    script = _script()
    assert script.export_command(Path("p.yaml"), 2)[1:7] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
    ]
    make_layout(tmp_path / "data")
    folders = {}
    for name in ("a", "b"):
        params, folders[name] = _setup(tmp_path, name)
        export.run(params, folders[name], encoder=KeyEncoder())
    a, b = folders["a"].embeddings_dir, folders["b"].embeddings_dir
    same = script.compare_exports(a, b, 1e-3)
    assert same["equal"] and same["hashes_equal"] and same["max_abs_diff"] == 0.0
    assert same["n_vectors"] == 10 + 21  # queries + local pools + the union-only candidate

    shard = b / "test/candidates/cirr_task7/shard-00000.vectors.npy"
    v = np.load(shard)
    v[0, 0] += np.float16(0.01)
    np.save(shard, v)
    diff = script.compare_exports(a, b, 1e-3)
    assert not diff["equal"] and diff["max_abs_diff"] > 1e-3 and diff["mismatches"][0].startswith("vectors")
    assert script.compare_exports(a, b, 0.1)["equal"]  # within tolerance

    ids = b / "test/queries/mscoco_task0/shard-00000.ids.npy"
    np.save(ids, np.load(ids)[::-1])
    swapped = script.compare_exports(a, b, 0.1)
    assert "test/queries/mscoco_task0/manifest.json (ids or their order)" in swapped["mismatches"]

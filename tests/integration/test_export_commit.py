"""Export as a transaction per model: kill -9 during an export with a new model, then index/evaluate refuse.

The export with the new model runs in a child process that SIGKILLs itself at a chosen moment
(while encoding, or while rank 0 writes the manifests), so the folder is exactly what a kill
leaves. ``trace index`` and ``trace evaluate`` must refuse it, naming the set and both model
ids; re-running the export resumes and commits, after which both accept it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from export_doubles import KeyEncoder, layout_params

from trace_core.evaluation import evaluate
from trace_core.indexing import build_index, export
from trace_core.indexing.commit import PENDING, load_export
from trace_core.indexing.shards import write_shard
from trace_core.io import DataError, read_json

TESTS = Path(__file__).resolve().parents[1]
OLD, NEW = KeyEncoder.model_id, "model-B"

CHILD = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from export_doubles import KeyEncoder, export_params
from trace_core.indexing import export
from trace_core.paths import Paths

class New(KeyEncoder):
    model_id = {new!r}

    def encode_candidates(self, items, image_root, batch_size):
        if {moment!r} == "encoding" and self.calls["candidates"] >= 4:  # after the first pool's first shard
            os.kill(os.getpid(), signal.SIGKILL)
        return super().encode_candidates(items, image_root, batch_size)

written = []
real = export.write_manifest

def write_manifest(directory, manifest):
    written.append(directory)
    if {moment!r} == "merge" and len(written) == 3:  # two sets committed to disk, the third not
        os.kill(os.getpid(), signal.SIGKILL)
    return real(directory, manifest)

export.write_manifest = write_manifest
params = export_params()
export.run(params, Paths.from_params(params, Path({root!r})), encoder=New())
"""


def kill_during_export(root: Path, moment: str) -> int:
    """Run an export of model-B in a child that SIGKILLs itself at ``moment``; return its exit code."""
    code = textwrap.dedent(CHILD).format(tests=str(TESTS), new=NEW, moment=moment, root=str(root))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], env=env, timeout=120, check=False).returncode


@pytest.mark.parametrize(
    ("moment", "named"),
    [
        # encoding: every set's manifest was removed first; mscoco_task0's (exported first) shards are model-B's
        (
            "encoding",
            r"query set mscoco_task0: manifest missing while manifest.json names model test-key-encoder; "
            r"its shards are from model model-B",
        ),
        # merge: mscoco_task0's queries and pool have model-B manifests, cirr_task7's none yet
        (
            "merge",
            r"query set cirr_task7: manifest missing while manifest.json names model test-key-encoder; "
            r"its shards are from model model-B",
        ),
    ],
)
def test_kill_during_export_with_new_model_is_refused(tmp_path, moment, named):
    params, paths = layout_params(tmp_path)
    export.run(params, paths, encoder=KeyEncoder())
    build_index.run(params, paths)
    evaluate.run(params, paths)

    assert kill_during_export(tmp_path, moment) == -9
    assert (paths.embeddings_dir / PENDING).exists()
    assert read_json(paths.embeddings_dir / "manifest.json")["model_id"] == OLD  # the last commit stays
    message = rf"export.pending.json:model_id: an export of model {NEW} did not finish and manifest.json still "
    message += rf"names model {OLD}; first changed: .*{named}"
    for stage in (build_index, evaluate):
        with pytest.raises(DataError, match=message):
            stage.run(params, paths)
    assert read_json(paths.index_manifest)["model_id"] == OLD  # the refused index left the old one

    resumed = KeyEncoder()
    resumed.model_id = NEW
    top = export.run(params, paths, encoder=resumed)
    assert top["model_id"] == NEW and not (paths.embeddings_dir / PENDING).exists()
    if moment == "encoding":  # model-B shards written before the kill are kept
        assert 0 < resumed.calls["candidates"] < 21
    assert {m["model_id"] for m in top["manifests"].values()} == {NEW}
    assert build_index.run(params, paths)["model_id"] == NEW
    assert evaluate.run(params, paths)["model_id"] == NEW


def test_mixed_sets_without_pending_mark_are_refused(tmp_path):
    """A set rewritten by another model after the commit (no pending mark) is named with both ids."""
    params, paths = layout_params(tmp_path)
    export.run(params, paths, encoder=KeyEncoder())
    pool = paths.embeddings_dir / "test/candidates/cirr_task7/manifest.json"
    manifest = read_json(pool)
    manifest["model_id"] = NEW
    pool.write_text(json.dumps(manifest))
    with pytest.raises(
        DataError,
        match=rf"cirr_task7/manifest.json:model_id: pool cirr_task7 holds embeddings of model {NEW} "
        rf"but manifest.json names model {OLD}",
    ):
        load_export(paths.embeddings_dir)
    manifest["model_id"] = OLD
    manifest["hash"] = "0" * 64
    pool.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="cirr_task7/manifest.json:hash: pool cirr_task7 .* rewritten after"):
        build_index.run(params, paths)


def test_shard_rewritten_under_its_manifest_is_refused(tmp_path):
    """A shard's arrays and json replaced after its pool manifest was written (checked per shard)."""
    params, paths = layout_params(tmp_path)
    export.run(params, paths, encoder=KeyEncoder())
    directory = paths.embeddings_dir / "test/candidates/mscoco_task0"
    ids = np.load(directory / "shard-00001.ids.npy").tolist()
    vectors = np.random.default_rng(0).standard_normal((len(ids), 16))
    write_shard(directory, 1, ids, vectors, {"stamp": {"model_id": NEW}})
    with pytest.raises(DataError, match=rf"shard-00001.json:sha256: shard rewritten \(by model {NEW}\)"):
        build_index.run(params, paths)
    (directory / "shard-00001.json").unlink()  # a kill between removing the json and the new arrays
    with pytest.raises(DataError, match="shard-00001.json:file: shard json missing"):
        build_index.run(params, paths)

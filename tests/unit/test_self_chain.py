"""Self-chain training: own chains come from the model's decoding, are cached per model id, and
phase 2's batch pools InfoNCE after them while L_gen stays on the gold chain."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from micro import SMALL_MINI, micro_train_params
from PIL import Image

from trace_core.config import Params, dump_params, parse_params
from trace_core.data.dataset import sample_to_dict
from trace_core.io import write_jsonl
from trace_core.model.collate import TrainCollator, encode_items
from trace_core.model.losses import info_nce_from_embeddings
from trace_core.model.trace_model import HeadConfig, TraceModel
from trace_core.paths import Paths, served_model_dir
from trace_core.training import self_chain as sc
from trace_core.training import self_train
from trace_core.types import EncodeItem, TrainSample

CAP = 6  # tokens per regenerated chain: the micro model's chains hit it (forced), which is fine here


def _params(root: Path, **self_chain: Any) -> Params:
    raw = dump_params(micro_train_params(root, tracking=False, max_steps=2, val_queries=4, val_max_new_tokens=2))
    raw["self_chain"].update({"max_new_tokens": CAP, "batch_size": 4, "max_steps": 2, **self_chain})
    return parse_params(raw)


def _gold(i: int) -> str:
    return f"the teacher reasons about query {i}\nanswer {i}<|emb|>"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Micro M-BEIR-mini, a training file whose InfoSeek/OVEN-like rows are z=1, and a saved phase-1 model."""
    from trace_core.data.mini import write_mini
    from trace_core.training.build import build_model, save_merged
    from trace_core.training.data import derive_z0_samples

    root = tmp_path_factory.mktemp("self_chain")
    params = _params(root)
    paths = Paths.from_params(params)
    write_mini(SMALL_MINI, params.base.seed, paths.data_root)
    rows = derive_z0_samples(paths.data_root, params.base.seed, 2, params.data.train_file, "uniir")
    reason = set(params.cot_generate.routing.reason_datasets)
    samples = [
        dataclasses.replace(s, z=1, target=_gold(i)) if s.dataset_id in reason else s for i, s in enumerate(rows)
    ]
    write_jsonl(paths.cot_train, (sample_to_dict(s) for s in samples))
    model, bb = build_model(params, samples, root / "tok")
    save_merged({k: v.detach().clone() for k, v in model.state_dict().items()}, params, bb, paths.model_dir)
    return root


def _queries(params: Params, paths: Paths) -> list[TrainSample]:
    from trace_core.training.data import split_validation
    from trace_core.training.train import load_samples

    samples, _ = load_samples(params, paths)
    return sc.reasoning_queries(split_validation(samples, params.train.val_queries, params.base.seed)[0])


class CountingLoader:
    """``encoder_loader`` that counts how often the encoder is loaded and decodes."""

    def __init__(self, model_dir: Path) -> None:
        self.get = self_train.encoder_loader(model_dir)
        self.loads = 0
        self.decodes = 0

    def __call__(self) -> Any:
        self.loads += 1
        enc = self.get()
        original = type(enc).encode_queries

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.decodes += 1
            return original(enc, *args, **kwargs)

        enc.encode_queries = counted
        return enc


def test_own_chains_are_the_models_greedy_decoding_not_the_teachers(project: Path) -> None:
    from trace_core.model.checkpoint import model_hash
    from trace_core.model.inference import load_encoder

    params = _params(project)
    paths = Paths.from_params(params)
    queries = _queries(params, paths)
    assert queries and all(q.z == 1 for q in queries)
    model_id = model_hash(paths.model_dir)
    chains = self_train.cached_chains(model_id, queries, paths, params, CountingLoader(paths.model_dir))
    # the file: one row per query, written for this model id with its manifest
    rows = [json.loads(line) for line in sc.chain_file(paths.self_chains_dir, model_id).read_text().splitlines()]
    assert [r["qid"] for r in rows] == [q.qid for q in queries]
    assert sc.manifest_file(paths.self_chains_dir, model_id).is_file()
    # the same tokens the export's routed decoding produces, independently of the stage
    enc = load_encoder(paths.model_dir)
    direct = enc.encode_queries([q.query for q in queries], paths.data_root, "always", CAP, batch_size=3)
    assert [r["token_ids"] for r in rows] == direct.token_ids
    assert [chains[q.qid].token_ids for q in queries] == [tuple(t) for t in direct.token_ids]
    assert all(r["text"] == enc.proc.tokenizer.decode(r["token_ids"]) for r in rows)
    # ... and never the teacher's text
    for q in queries:
        assert chains[q.qid].embed_target != q.target and chains[q.qid].text not in q.target
        assert len(chains[q.qid].token_ids) >= 1


def test_chains_are_cached_per_model_id(project: Path, tmp_path: Path) -> None:
    from trace_core.model.checkpoint import load_saved, model_hash, read_meta, write_model_dir

    params = _params(project)
    paths = Paths.from_params(params)
    queries = _queries(params, paths)
    model_id = model_hash(paths.model_dir)
    first = CountingLoader(paths.model_dir)
    chains = self_train.cached_chains(model_id, queries, paths, params, first)  # cached or decoded once
    path = sc.chain_file(paths.self_chains_dir, model_id)
    mtime = path.stat().st_mtime_ns
    again = CountingLoader(paths.model_dir)
    assert self_train.cached_chains(model_id, queries, paths, params, again) == chains
    assert again.loads == 0 and again.decodes == 0 and path.stat().st_mtime_ns == mtime  # no decoding
    # other settings for the same model: regenerated (a different cap is a different file content)
    other_cap = _params(project, max_new_tokens=CAP - 2)
    capped = CountingLoader(paths.model_dir)
    shorter = self_train.cached_chains(model_id, queries, paths, other_cap, capped)
    assert capped.decodes == 1 and max(len(c.token_ids) for c in shorter.values()) <= CAP - 2
    # a changed model: a new model id, a new file; the first model's cache is untouched
    meta = read_meta(paths.model_dir)
    bb = load_saved(paths.model_dir, params.model, meta["model_class"], torch.float32)
    with torch.no_grad():
        bb.model.lm_head.weight.add_(0.5 * torch.randn_like(bb.model.lm_head.weight))
    changed = tmp_path / "changed"
    write_model_dir(bb.model, bb.proc, meta, changed)
    new_id = model_hash(changed)
    assert new_id != model_id
    loader = CountingLoader(changed)
    self_train.cached_chains(new_id, queries, paths, params, loader)
    assert loader.decodes == 1 and sc.chain_file(paths.self_chains_dir, new_id).is_file()
    index = json.loads((paths.self_chains_dir / sc.INDEX_FILE).read_text())
    assert {model_id, new_id} <= set(index["model_ids"])
    # a truncated file (hash mismatch with its manifest) is not reused
    path.write_text(path.read_text().splitlines()[0] + "\n")
    assert sc.load_cached(paths.self_chains_dir, sc.chain_settings(model_id, queries, CAP)) is None


def test_disabled_stage_is_a_marker_and_serves_phase_one(project: Path) -> None:
    import time

    params = _params(project, enabled=False)
    paths = Paths.from_params(params)
    t0 = time.perf_counter()
    metrics = self_train.run(params, paths)
    assert time.perf_counter() - t0 < 5.0
    assert metrics == {"enabled": False}
    assert json.loads((paths.self_model_dir / self_train.MARKER).read_text())["enabled"] is False
    assert not (paths.self_model_dir / "trace_meta.json").exists()
    assert (paths.self_chains_dir / sc.INDEX_FILE).is_file()
    assert json.loads(paths.metrics_file("self_train").read_text()) == {"enabled": False}
    assert served_model_dir(params, paths) == paths.model_dir
    assert served_model_dir(_params(project, enabled=True), paths) == paths.self_model_dir


def test_phase_two_trains_from_phase_one_on_own_chains(project: Path) -> None:
    """The enabled stage end to end on the micro model (no DeepSpeed here; a few seconds)."""
    import time

    from trace_core.model.checkpoint import model_hash, read_meta

    params = _params(project, enabled=True)
    paths = Paths.from_params(params)
    t0 = time.perf_counter()
    metrics = self_train.run(params, paths)
    wall = time.perf_counter() - t0
    assert metrics["enabled"] is True and metrics["steps"] == 2
    assert metrics["phase1_model_id"] == model_hash(paths.model_dir)
    assert metrics["n_own_queries"] == metrics["n_reasoning_queries"] > 0  # own_fraction 1.0
    assert metrics["chains_n_chains"] == metrics["n_reasoning_queries"]
    assert metrics["chains_equal_to_gold_rate"] == 0.0
    meta = read_meta(paths.self_model_dir)
    assert meta["params"]["self_chain"]["enabled"] is True
    assert model_hash(paths.self_model_dir) != model_hash(paths.model_dir)  # trained further
    assert sc.chain_file(paths.self_chains_dir, metrics["phase1_model_id"]).is_file()
    assert served_model_dir(params, paths) == paths.self_model_dir
    assert wall < 120.0


def test_phase2_params_take_self_chain_length_and_rate(project: Path) -> None:
    params = _params(project, epochs=0.5, learning_rate=1e-4, max_steps=-1)
    p2 = self_train.phase2_params(params)
    assert (p2.train.epochs, p2.train.learning_rate, p2.train.max_steps) == (0.5, 1e-4, -1)
    assert p2.model_copy(update={"train": params.train}) == params  # nothing else changes


# --- the batch: L_gen on the gold chain, InfoNCE after the own chain -------------------------------------
@pytest.fixture(scope="module")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[TraceModel, Any, Path]:
    from micro import micro_tiny

    from trace_core.config import ModelParams
    from trace_core.model.backbone import build_backbone

    root = tmp_path_factory.mktemp("img")
    Image.new("RGB", (56, 56), (0, 200, 0)).save(root / "g.png")
    texts = ["a green square", "the teacher reasons about it", "my own chain goes elsewhere"] * 10
    bb = build_backbone(ModelParams(tiny=micro_tiny(300)), texts, 0, torch.float32)
    return TraceModel(bb.model, bb.proc.ids, HeadConfig(0.5, 1.0, 0.05, False, False, 0, 0.3)).eval(), bb.proc, root


def _batch_samples() -> list[TrainSample]:
    def sample(i: int, z: int, target: str, img: str | None = None) -> TrainSample:
        q = EncodeItem(f"9:{i}", 1, f"find picture {i}", img)
        neg = (EncodeItem(f"9:{200 + i}", 1, f"a square {i}", None),)
        return TrainSample(q.id, 1, 9, z, q, EncodeItem(f"9:{100 + i}", 1, f"caption {i}", img), target, negatives=neg)

    return [
        sample(1, 1, "the teacher reasons about it\na green square<|emb|>", "g.png"),
        sample(2, 0, "<|emb|>"),
        sample(3, 1, "the teacher reasons\na square<|emb|>"),
    ]


def test_collator_without_embed_targets_is_the_plain_batch(micro_model: Any) -> None:
    _, proc, root = micro_model
    samples = _batch_samples()
    batch = TrainCollator(proc, root, hard_negatives=1)(samples)
    items = [s.query for s in samples] + [s.positive for s in samples] + [s.negatives[0] for s in samples]
    sides: list[Any] = ["query"] * 3 + ["candidate"] * 6
    responses = [s.target for s in samples] + ["<|emb|>"] * 6
    plain = encode_items(proc, items, sides, responses, [True] * 3 + [False] * 6, root)
    assert set(batch) == {*plain, "n_queries"} and "query_rows" not in batch
    for key, value in plain.items():
        assert torch.equal(batch[key], value), key


def test_embed_target_moves_infonce_to_the_own_chain_and_keeps_lgen_on_gold(micro_model: Any) -> None:
    model, proc, root = micro_model
    gold = _batch_samples()
    own_text = {"9:1": "my own chain goes elsewhere<|emb|>", "9:3": "my own chain<|emb|>"}
    mixed = [dataclasses.replace(s, embed_target=own_text.get(s.qid)) for s in gold]
    collate = TrainCollator(proc, root, hard_negatives=1)
    batch = collate(mixed)
    assert batch["own_rows"] == 2 and batch["query_rows"].tolist() == [9, 1, 10]
    assert batch["input_ids"].shape[0] == 3 + 6 + 2
    assert (batch["labels"][9:] != -100).sum() == 0  # own-chain rows carry no generation loss
    with torch.no_grad():
        out = model(**dict(batch))
        plain = model(**dict(collate(gold)))
        # L_gen and the routing term: exactly the gold-only batch's
        torch.testing.assert_close(out.loss_gen, plain.loss_gen, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.loss_route, plain.loss_route, atol=1e-5, rtol=1e-5)
        # InfoNCE: the queries embedded after their own chain (z=0 row: after <|emb|>), computed apart
        responses = [own_text.get(s.qid, s.target) for s in gold]
        q_batch = encode_items(proc, [s.query for s in gold], ["query"] * 3, responses, [False] * 3, root)
        cands = [s.positive for s in gold] + [s.negatives[0] for s in gold]
        c_batch = encode_items(proc, cands, ["candidate"] * 6, ["<|emb|>"] * 6, [False] * 6, root)
        q, c = model.encode_candidates(q_batch), model.encode_candidates(c_batch)
        want, _ = info_nce_from_embeddings(q, c, model.temperature(), False, 3)
        torch.testing.assert_close(out.loss_ret, want, atol=1e-5, rtol=1e-4)
        assert abs(float(out.loss_ret - plain.loss_ret)) > 1e-6  # the own chains did change InfoNCE


# --- pure parts ---------------------------------------------------------------------------------------------
def test_reward_mask_keeps_own_chains_that_rank_the_positive_higher() -> None:
    pos = np.eye(3, dtype=np.float32)
    own = np.array([[1, 0, 0], [0, 0.6, 0.8], [0.6, 0, 0.8]], dtype=np.float32)  # scores 1.0, 0.6, 0.8
    gold = np.array([[0.8, 0.6, 0], [0, 1, 0], [0.6, 0, 0.8]], dtype=np.float32)  # scores 0.8, 1.0, 0.8
    assert sc.reward_mask(own, gold, pos).tolist() == [True, False, False]  # a tie keeps the gold chain


def test_own_selection_with_the_reward_uses_the_embedder_as_judge(project: Path) -> None:
    """A fake encoder whose own-chain embedding hits the positive for even qids only."""
    params = _params(project, reward=True)
    paths = Paths.from_params(params)
    items = [(EncodeItem(f"9:{i}", 1, f"q{i}", None), EncodeItem(f"9:{50 + i}", 1, "c", None)) for i in range(6)]
    queries = [TrainSample(q.id, 1, 9, 1, q, pos, _gold(i)) for i, (q, pos) in enumerate(items)]
    chains = {q.qid: sc.OwnChain(q.qid, f"own {q.qid}", (1, 2), "reasoned") for q in queries}

    class Judge:
        def encode_forced(self, items: Any, responses: Any, image_root: Path, batch_size: int) -> np.ndarray:
            hit = [r.startswith("own") and int(r.split(":")[1][0]) % 2 == 0 for r in responses]
            return np.array([[1.0, 0.0] if h else [0.6, 0.8] for h in hit], dtype=np.float32)

        def encode_candidates(self, items: Any, image_root: Path, batch_size: int) -> np.ndarray:
            return np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (len(items), 1))

    own, counts = self_train.own_selection(queries, chains, params, paths, lambda: Judge())
    assert set(own) == {"9:0", "9:2", "9:4"} and counts == {"n_own_chosen": 6, "n_reward_kept": 3}
    half, counts = self_train.own_selection(queries, chains, _params(project, own_fraction=0.5), paths, lambda: None)
    assert len(half) == 3 and counts == {"n_own_chosen": 3}  # no reward: the encoder is never asked


def test_choose_own_is_seeded_and_sized() -> None:
    qids = [f"9:{i}" for i in range(10)]
    assert sc.choose_own(qids, 0.3, seed=1) == sc.choose_own(list(reversed(qids)), 0.3, seed=1)
    assert len(sc.choose_own(qids, 0.3, seed=1)) == 3 and sc.choose_own(qids, 0.0, 1) == set()
    assert sc.choose_own(qids, 1.0, 1) == set(qids)


def test_reasoning_queries_and_with_own_chains() -> None:
    q = [EncodeItem(f"9:{i}", 1, f"q{i}", None) for i in range(3)]
    rows = [
        TrainSample("9:0", 1, 9, 1, q[0], q[1], "a\nb<|emb|>"),
        TrainSample("9:1", 1, 9, 0, q[1], q[0], "<|emb|>"),
        TrainSample("9:0", 1, 9, 1, q[0], q[1], "a\nb<|emb|>"),  # upsampled repeat
        TrainSample("9:2", 1, 9, 1, q[2], q[1], "c\nd<|emb|>"),
    ]
    assert [s.qid for s in sc.reasoning_queries(rows)] == ["9:0", "9:2"]
    assert [s.qid for s in sc.reasoning_queries(rows, max_queries=1)] == ["9:0"]
    own = {"9:0": sc.OwnChain("9:0", "mine", (5,), "forced")}
    out = sc.with_own_chains(rows, own)
    assert [s.embed_target for s in out] == ["mine<|emb|>", None, "mine<|emb|>", None]
    assert [s.target for s in out] == [s.target for s in rows]  # L_gen keeps the gold chains


@pytest.mark.slow
def test_phase_two_under_deepspeed_zero3(project: Path) -> None:
    """Phase 2 as the pipeline runs it: DeepSpeed ZeRO-3 (CPU accelerator), with the reward filter."""
    from trace_core.model.checkpoint import read_meta

    raw = dump_params(_params(project, enabled=True, reward=True))
    raw["train"].update(deepspeed=True, zero_stage=3)
    raw["paths"]["self_model_dir"] = str(project / "models" / "trace_self_ds")
    params = parse_params(raw)
    paths = Paths.from_params(params)
    metrics = self_train.run(params, paths)
    assert metrics["steps"] == 2 and metrics["n_reward_kept"] <= metrics["n_own_chosen"]
    assert metrics["n_own_queries"] == metrics["n_reward_kept"]
    assert read_meta(paths.self_model_dir)["params"]["self_chain"]["reward"] is True

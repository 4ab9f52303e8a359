"""Stage ``self_train``: self-chain training, a second phase after ``train`` (beyond the paper).

With ``self_chain.enabled`` false (the default) the stage only writes a marker into
``paths.self_model_dir``, the index of ``paths.self_chains_dir`` and ``metrics/self_train.json``
(seconds), and the stages after it serve the phase-1 model (:func:`trace_core.paths.served_model_dir`).

Enabled, ``run`` wires:

1. the model id of the phase-1 model (``model_hash``: sha256 of its safetensors);
2. the own chains of the distinct z=1 training queries (validation queries excluded), decoded
   greedily by the phase-1 model with the export's routed decoding, routing ``always``
   (:mod:`trace_core.training.self_chain`); cached as ``self_chains/<model_id>.jsonl``, reused
   while that file is complete and made with the same settings;
3. ``own_fraction`` of those queries (seeded) embed after their own chain, optionally only when
   the embedder prefers it (``reward``: own-chain vs gold-chain query embedding, scored
   against the positive);
4. phase 2 from the phase-1 weights: ``self_chain.epochs`` / ``learning_rate`` / ``max_steps``
   replace the train section's, everything else (DeepSpeed ZeRO-3, losses, batch, validation)
   is the train stage's (:func:`trace_core.training.train.fit`); ``L_gen`` and the routing
   term stay on the gold chains, InfoNCE is pooled after the own chain of the chosen rows.
   The model is saved to ``paths.self_model_dir`` and registered in MLflow.

Under several ranks rank 0 decodes and writes the chains; the others wait for the manifest.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trace_core.config import Params
from trace_core.data.dataset import EMB_TOKEN
from trace_core.io import write_json
from trace_core.paths import Paths
from trace_core.ranks import is_main_process, local_rank
from trace_core.training.self_chain import (
    ROUTING,
    OwnChain,
    chain_settings,
    chain_stats,
    choose_own,
    load_cached,
    own_chains,
    reasoning_queries,
    reward_mask,
    with_own_chains,
    write_chains,
    write_index,
)
from trace_core.training.train import checkpoint_dir, configure_environment, fit, load_samples, run_key
from trace_core.types import TrainSample

log = logging.getLogger(__name__)
STAGE = "self_train"
MARKER = "SELF_CHAIN.json"
#: seconds between two looks for rank 0's chain manifest (other ranks)
POLL_S = 5.0


def phase2_params(params: Params) -> Params:
    """The params phase 2 trains with: the train section with ``self_chain``'s length and learning rate."""
    sc = params.self_chain
    train = params.train.model_copy(
        update={"epochs": sc.epochs, "learning_rate": sc.learning_rate, "max_steps": sc.max_steps}
    )
    return params.model_copy(update={"train": train})


def write_disabled(paths: Paths) -> dict[str, Any]:
    """The disabled stage's outputs: a marker as the phase-2 model folder, the chain index, metrics."""
    shutil.rmtree(paths.self_model_dir, ignore_errors=True)
    write_json(paths.self_model_dir / MARKER, {"enabled": False, "served": "paths.model_dir"})
    paths.self_chains_dir.mkdir(parents=True, exist_ok=True)
    write_index(paths.self_chains_dir)
    metrics = {"enabled": False}
    write_json(paths.metrics_file(STAGE), metrics)
    log.info("self_train: self_chain.enabled is false; downstream stages serve %s", paths.model_dir)
    return metrics


def _device() -> str:
    import torch

    return f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu"


def regenerate(
    encoder: Any, queries: list[TrainSample], root: Path, image_root: Path, params: Params
) -> list[OwnChain]:
    """Decode the queries' own chains with ``encoder`` (export's routed decoding) and cache them."""
    sc = params.self_chain
    settings = chain_settings(encoder.model_id, queries, sc.max_new_tokens)
    items = [q.query for q in queries]
    enc = encoder.encode_queries(items, image_root, ROUTING, sc.max_new_tokens, sc.batch_size)
    tok = encoder.proc.tokenizer
    chains = own_chains([q.qid for q in queries], enc.token_ids, enc.routes, lambda ids: tok.decode(ids))
    write_chains(root, settings, chains)
    log.info("self_train: %d own chains of model %s -> %s", len(chains), encoder.model_id, root)
    return chains


def encoder_loader(model_dir: Path) -> Callable[[], Any]:
    """A function that loads the phase-1 encoder on first call and returns the same one afterwards."""
    loaded: list[Any] = []

    def get() -> Any:
        if not loaded:
            from trace_core.model.inference import load_encoder

            loaded.append(load_encoder(model_dir, _device()))
        return loaded[0]

    return get


def cached_chains(
    model_id: str, queries: list[TrainSample], paths: Paths, params: Params, encoder: Callable[[], Any]
) -> dict[str, OwnChain]:
    """The phase-1 model's own chains of ``queries``: from the cache, else decoded (rank 0) and cached."""
    root = paths.self_chains_dir
    settings = chain_settings(model_id, queries, params.self_chain.max_new_tokens)
    cached = load_cached(root, settings)
    if cached is not None:
        log.info("self_train: reusing %d cached chains of model %s", len(cached), model_id)
        return cached
    if not is_main_process():
        return _wait_for_chains(root, settings)
    root.mkdir(parents=True, exist_ok=True)
    return {c.qid: c for c in regenerate(encoder(), queries, root, paths.data_root, params)}


def _wait_for_chains(root: Path, settings: dict[str, Any]) -> dict[str, OwnChain]:
    while (found := load_cached(root, settings)) is None:
        log.debug("waiting for rank 0's chains of model %s", settings["model_id"])
        time.sleep(POLL_S)
    return found


def reward_kept(
    encoder: Any, queries: list[TrainSample], chains: dict[str, OwnChain], image_root: Path, batch_size: int
) -> set[str]:
    """Qids whose own chain scores the positive higher than the gold chain does (:func:`reward_mask`).

    Costs two teacher-forced query forwards (own chain, gold chain) and one candidate forward per query.
    """
    chosen = [q for q in queries if q.qid in chains]
    items = [q.query for q in chosen]
    own = encoder.encode_forced(items, [chains[q.qid].embed_target for q in chosen], image_root, batch_size)
    gold = encoder.encode_forced(items, [q.target for q in chosen], image_root, batch_size)
    pos = encoder.encode_candidates([q.positive for q in chosen], image_root, batch_size)
    keep = reward_mask(own, gold, pos)
    return {q.qid for q, k in zip(chosen, keep.tolist(), strict=True) if k}


def own_selection(
    queries: list[TrainSample], chains: dict[str, OwnChain], params: Params, paths: Paths, encoder: Callable[[], Any]
) -> tuple[dict[str, OwnChain], dict[str, Any]]:
    """The own chains phase 2 embeds after (``own_fraction``, then the reward) and their counts."""
    sc = params.self_chain
    chosen = choose_own([q.qid for q in queries if q.qid in chains], sc.own_fraction, params.base.seed)
    counts: dict[str, Any] = {"n_own_chosen": len(chosen)}
    if sc.reward and chosen:
        picked = [q for q in queries if q.qid in chosen]
        chosen = reward_kept(encoder(), picked, chains, paths.data_root, sc.batch_size)
        counts["n_reward_kept"] = len(chosen)
    return {q: chains[q] for q in sorted(chosen)}, counts


def selection_hash(data_hash: str, model_id: str, own: dict[str, OwnChain]) -> str:
    """What phase 2's data depends on beyond the training file: the phase-1 model and the own targets."""
    blob = "\n".join([data_hash, model_id, *(f"{q}\t{c.embed_target}" for q, c in sorted(own.items()))])
    return hashlib.sha256(blob.encode()).hexdigest()


def own_targets(
    params: Params, paths: Paths, samples: list[TrainSample], model_id: str
) -> tuple[dict[str, OwnChain], dict[str, Any], float]:
    """The own chains phase 2 embeds after, the counts and chain statistics, and the seconds it took.

    The z=1 queries are those of the training rows (the validation queries held out as train
    holds them out); the phase-1 encoder is loaded only when chains must be decoded or judged.
    """
    import torch

    from trace_core.training.data import split_validation

    t0 = time.perf_counter()
    train_rows, _ = split_validation(samples, params.train.val_queries, params.base.seed)
    queries = reasoning_queries(train_rows, params.self_chain.max_queries)
    encoder = encoder_loader(paths.model_dir)
    chains = cached_chains(model_id, queries, paths, params, encoder) if params.self_chain.own_fraction > 0 else {}
    own, counts = own_selection(queries, chains, params, paths, encoder)
    del encoder  # the phase-1 encoder (if loaded) is freed before phase 2 builds its model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    counts = {"n_reasoning_queries": len(queries), **counts, "n_own_queries": len(own)}
    counts.update({f"chains_{k}": v for k, v in _chain_stats(chains, queries, paths).items()})
    return own, counts, time.perf_counter() - t0


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Self-chain phase 2 (or the disabled marker); see the module docstring."""
    if not params.self_chain.enabled:
        return write_disabled(paths)
    import torch

    from trace_core import tracking
    from trace_core.model.checkpoint import model_hash
    from trace_core.training.build import deepspeed_scope

    model_id = model_hash(paths.model_dir)
    samples, data_hash = load_samples(params, paths)
    own, counts, chain_s = own_targets(params, paths, samples, model_id)
    p2 = phase2_params(params)
    log.info(
        "self_train: phase 2 on %d rows, %d of %d z=1 queries after their own chain",
        len(samples),
        len(own),
        counts["n_reasoning_queries"],
    )
    with deepspeed_scope():
        cuda = torch.cuda.is_available()
        configure_environment(p2, paths, cuda)
        key = run_key(p2, selection_hash(data_hash, model_id, own))
        parts, summary, timings = fit(
            p2,
            paths,
            with_own_chains(samples, own),
            key,
            checkpoint_dir(paths, STAGE),
            paths.self_model_dir,
            cuda,
            init_dir=paths.model_dir,
            save_params=params,
        )
        metrics = {"enabled": True, "phase1_model_id": model_id, **counts, **summary}
        timings = {**timings, "chains_wall_time_s": round(chain_s, 1)}
        if is_main_process():
            write_index(paths.self_chains_dir)
            write_json(paths.metrics_file(STAGE), metrics)
            write_json(paths.timings_file(STAGE), timings)
        scalars = {**metrics, **timings}
        tracking.log_metrics({k: v for k, v in scalars.items() if isinstance(v, (int, float))})
        metrics["registered_version"] = tracking.register_model(params, paths.self_model_dir)
    log.info(
        "self_train: %d phase-2 steps -> %s (registered version %s)",
        summary["steps"],
        paths.self_model_dir,
        metrics["registered_version"] or "-",
    )
    return metrics


def _chain_stats(chains: dict[str, OwnChain], queries: list[TrainSample], paths: Paths) -> dict[str, Any]:
    if not chains:
        return {"n_chains": 0}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(paths.model_dir))
    emb_id = int(tok.get_vocab()[EMB_TOKEN])
    gold = {q.qid: q.target for q in queries}
    return chain_stats(chains, gold, lambda t: tok(t, add_special_tokens=False)["input_ids"], emb_id)

"""Export throughput: the ``trace export`` path vs the bare model forward, on the same rows, in one run.

Rows are the candidates of the M-BEIR-mini pools that hold images (image decoding is what
the workers take off the forward's critical path), the first ``--rows`` of them. Three ways
to embed them are timed side by side, interleaved within each repeat (median of
``--repeats``):

* ``bare forward``: ``TraceModel.encode_candidates`` on batches collated beforehand (untimed),
  i.e. the model alone: the ceiling;
* ``export, num_workers=W`` for each ``--workers`` W: the shard path of ``trace export``
  (:func:`~trace_core.indexing.export.encode_rank` and ``finish_set`` over one pool set: batches
  opened, decoded and collated, forwards, L2-normalised fp16 shards and manifest written), images and collation in W
  DataLoader workers (0 = in the exporting process, as before ``export.num_workers``).

``ratio_vs_forward`` = export rows/s over bare-forward rows/s, per W. Two models are measured:

* ``trained``: the pipeline's served model (the mini profile's 1.3M-parameter tiny model: its
  forward costs about as much CPU as decoding and collating the rows);
* ``wide``: :data:`WIDE`, Qwen2-VL-2B's widths at 2 text layers and 2 vision blocks, random
  weights, same tokenizer and image processor (forward per row like one layer block of a real model).

Top level: ``ratio_vs_forward`` (trained) and ``ratio_vs_forward_wide``, each at its best W
(``best_workers``), since the right ``export.num_workers`` is the one that is fastest on the
machine. On a CPU-only machine the workers share the cores with the forward, so the ratio is
bounded by forward / (forward + collation) in CPU time; on a GPU the forward leaves the CPU
idle and workers hide the collation. The exports of every W must give identical vectors
(``same_vectors``).

    python bench/bench_export.py --params params.yaml --rows 512 --wide-rows 128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from trace_core.config import load_params
from trace_core.data.dataset import candidate_item
from trace_core.data.mbeir import load_pool, local_pool_file, present_test_tasks
from trace_core.data.normalize import TextNorm
from trace_core.indexing.distribute import Ranks, device_for
from trace_core.indexing.export import ExportSet, candidate_encode_fn, encode_rank, finish_set
from trace_core.indexing.shards import load_embeddings
from trace_core.paths import Paths, served_model_dir
from trace_core.types import EncodeItem

log = logging.getLogger("bench_export")


def image_rows(paths: Paths, n: int, mode: TextNorm = "uniir") -> list[EncodeItem]:
    """The first ``n`` candidates with an image, pool after pool (test tasks in order)."""
    items: list[EncodeItem] = []
    for task in present_test_tasks(paths.data_root):
        pool = load_pool(local_pool_file(paths.data_root, task.stem))
        items += [candidate_item(c, task.task_id, mode) for c in pool if c.img_path is not None]
        if len(items) >= n:
            break
    unique, seen = [], set()
    for it in items:  # pools of one dataset share candidates: each row once
        if it.id not in seen:
            seen.add(it.id)
            unique.append(it)
    if not unique:
        raise SystemExit(f"{paths.data_root}: no image candidates (run `trace download` first)")
    return unique[:n]


def time_forward(encoder: Any, batches: list[dict[str, Any]]) -> float:
    """Seconds of the bare forwards over pre-collated, device-resident batches."""
    t0 = time.perf_counter()
    for batch in batches:
        encoder.model.encode_candidates(batch).float().cpu()
    return time.perf_counter() - t0


def time_export(encoder: Any, items: list[EncodeItem], root: Path, bs: int, shard_size: int, out: Path) -> float:
    """Seconds of the export path over ``items`` into the empty folder ``out`` (shards, then the manifest)."""
    s = ExportSet("bench", out, items, {"bench": str(out)}, candidate_encode_fn(encoder, root, bs), shard_size)
    t0 = time.perf_counter()
    encode_rank([s], Ranks())
    finish_set(s, encoder.dim)
    return time.perf_counter() - t0


def bench(encoder: Any, items: list[EncodeItem], root: Path, args: argparse.Namespace, shard_size: int) -> dict:
    """Interleaved repeats of the bare forward and the export path for each worker count."""
    import torch

    from trace_core.model.inference import BatchCollator, split

    bs = args.batch_size
    collate = BatchCollator(encoder.proc, root, "candidate")
    batches = [encoder._to_device(collate(b)) for b in split(items, bs)]
    with torch.inference_mode():
        encoder.model.encode_candidates(batches[0])  # warm-up
    forward: list[float] = []
    exports: dict[int, list[float]] = {w: [] for w in args.workers}
    vectors: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            with torch.inference_mode():
                forward.append(time_forward(encoder, batches))
            for w in args.workers:
                encoder.num_workers = w
                out = Path(tmp) / f"w{w}-r{r}"
                with torch.inference_mode():
                    exports[w].append(time_export(encoder, items, root, bs, shard_size, out))
                vectors[w] = load_embeddings(out / "manifest.json")[1]
            log.info(
                "repeat %d: forward %.2f s, export %s", r, forward[-1], {w: round(t[-1], 2) for w, t in exports.items()}
            )
    n = len(items)
    fwd = n / statistics.median(forward)
    per = {
        str(w): {"rows_s": n / statistics.median(t), "ratio_vs_forward": n / statistics.median(t) / fwd, "seconds": t}
        for w, t in exports.items()
    }
    first = vectors[args.workers[0]]
    return {
        "bare_forward_rows_s": fwd,
        "bare_forward_seconds": forward,
        "export": per,
        "best_workers": int(max(per, key=lambda w: per[w]["ratio_vs_forward"])),
        "ratio_vs_forward": max(v["ratio_vs_forward"] for v in per.values()),
        "same_vectors": all(np.array_equal(first, v) for v in vectors.values()),
    }


#: Qwen2-VL-2B-Instruct's widths (config.json of the release) at 2 of its 28 text layers and
#: 2 of its 32 vision blocks: a model whose forward costs what a real one costs per layer.
WIDE = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_layers": 2,
    "num_heads": 12,
    "num_kv_heads": 2,
    "vision_depth": 2,
    "vision_embed_dim": 1280,
    "vision_num_heads": 16,
    "vision_mlp_ratio": 4,
}


def wide_encoder(mp: Any, proc: Any, device: str) -> Any:
    """An encoder with :data:`WIDE` widths, random weights, the trained model's tokenizer and processor."""
    from trace_core.model.backbone import build_tiny
    from trace_core.model.inference import TraceEncoder
    from trace_core.model.trace_model import HeadConfig, TraceModel

    mp = mp.model_copy(update={"tiny": mp.tiny.model_copy(update=WIDE)})
    bb = build_tiny(mp, [], seed=0, tokenizer=proc.tokenizer)
    head = HeadConfig(0.0, 1.0, 0.05, False, False)
    model = TraceModel(bb.model, bb.proc.ids, head)
    return TraceEncoder(model, proc, "wide-random", device)


def measure(encoder: Any, items: list[EncodeItem], root: Path, args: argparse.Namespace, shard_size: int) -> dict:
    """One model's block of the JSON: its size, the machine's state, the timings."""
    import torch

    return {
        "model_id": encoder.model_id,
        "parameters": sum(p.numel() for p in encoder.model.parameters()),
        "rows": len(items),
        "loadavg_1m_at_start": os.getloadavg()[0],  # other processes on the machine skew CPU timings
        "torch_threads": torch.get_num_threads(),
        **bench(encoder, items, root, args, shard_size),
    }


def main() -> None:
    """Load the model, pick the rows, run the benchmark for the trained and the wide model, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--model-dir", type=Path, default=None, help="saved model (default: the served one)")
    ap.add_argument("--rows", type=int, default=512, help="image candidates to embed (trained model)")
    ap.add_argument("--wide-rows", type=int, default=128, help="image candidates for the wide model (0: skip it)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: export.batch_size")
    ap.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: export.device)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/export_throughput.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    from trace_core.model.inference import load_encoder

    params = load_params(args.params)
    paths = Paths.from_params(params)
    args.batch_size = args.batch_size or params.export.batch_size
    device = args.device or device_for(params.export.device, Ranks(), torch.cuda.is_available())
    model_dir = args.model_dir or served_model_dir(params, paths)
    if not (model_dir / "trace_meta.json").exists():
        raise SystemExit(f"{model_dir}: no saved model (run the pipeline to `trace train`, or pass --model-dir)")
    encoder = load_encoder(model_dir, device)
    items = image_rows(paths, max(args.rows, args.wide_rows), params.data.normalize_text)
    log.info("%d image candidates, batch %d, workers %s, device %s", len(items), args.batch_size, args.workers, device)
    models = {"trained": measure(encoder, items[: args.rows], paths.data_root, args, params.export.shard_size)}
    if args.wide_rows:
        wide = wide_encoder(params.model, encoder.proc, device)
        log.info("wide model: %.0fM parameters", sum(p.numel() for p in wide.model.parameters()) / 1e6)
        models["wide"] = measure(wide, items[: args.wide_rows], paths.data_root, args, params.export.shard_size)
        models["wide"]["widths"] = WIDE
    result = {
        "device": device,
        "batch_size": args.batch_size,
        "shard_size": params.export.shard_size,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "target_ratio": 0.9,
        "ratio_vs_forward": models["trained"]["ratio_vs_forward"],
        "ratio_vs_forward_wide": models["wide"]["ratio_vs_forward"] if "wide" in models else None,
        "models": models,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, m in models.items():
        log.info("%s: ratio_vs_forward %s", name, {w: round(v["ratio_vs_forward"], 3) for w, v in m["export"].items()})


if __name__ == "__main__":
    main()

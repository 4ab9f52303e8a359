"""The stage registry: every pipeline stage declared once.

Each :class:`Stage` names its run function, the params keys it reads, the ``trace_core`` code
it runs, its DVC outputs and metrics file, the reports worth keeping in MLflow and whether its
work is I/O-bound (retried by the Prefect flows). The CLI, the MLflow adapter (through the CLI),
the Prefect flows and the ``dvc.yaml`` consistency test read this registry; no other module
lists stages.

``code`` is what DVC treats as the stage's code dependencies (``deps`` in ``dvc.yaml``):
the modules and packages of the transitive ``trace_core`` import closure of the run function,
except the MLflow adapter (``trace_core/tracking``), which records runs but never changes a
stage's outputs. A test derives the closure from the source and checks both lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trace_core.cot.build import run as cot_build_run
from trace_core.cot.curate import run as cot_curate_run
from trace_core.cot.generate import run as cot_generate_run
from trace_core.data.download import run as download_run
from trace_core.data.validate.suite import run as validate_run
from trace_core.evaluation.evaluate import run as evaluate_run
from trace_core.evaluation.zeroshot.stage import run as evaluate_zeroshot_run
from trace_core.indexing.build_index import run as index_run
from trace_core.indexing.export import run as export_run
from trace_core.paths import Paths
from trace_core.training.self_train import run as self_train_run
from trace_core.training.train import run as train_run

#: the real M-BEIR parser, its record types and the resolver of the files records name.
PARSER_CODE: tuple[str, ...] = ("trace_core/data/mbeir.py", "trace_core/data/files.py", "trace_core/types.py")
#: code every stage runs: params schema (whose routing-override check reads the dataset
#: registry of the parser), paths, file helpers.
COMMON_CODE: tuple[str, ...] = (
    "trace_core/config.py",
    "trace_core/cot/overrides.py",
    "trace_core/io.py",
    "trace_core/paths.py",
    *PARSER_CODE,
)
#: the parser plus the data helpers (instructions, dataset rows) the model stages read data with.
DATA_CODE: tuple[str, ...] = (
    *PARSER_CODE,
    "trace_core/data/dataset.py",
    "trace_core/data/instructions.py",
    "trace_core/data/normalize.py",
)
MODEL_CODE: tuple[str, ...] = ("trace_core/model",)
COT_CODE: tuple[str, ...] = ("trace_core/cot", "trace_core/data/mini/scene.py")  # the oracle reads mini payloads
EXPORT_CODE: tuple[str, ...] = (
    "trace_core/ranks.py",
    "trace_core/indexing/commit.py",
    "trace_core/indexing/distribute.py",
    "trace_core/indexing/export.py",
    "trace_core/indexing/shards.py",
    "trace_core/indexing/union.py",
)


def _no_artifacts(paths: Paths) -> list[Path]:
    return []


@dataclass(frozen=True)
class Stage:
    """One pipeline stage (see the module docstring for what reads each field)."""

    name: str
    run: Callable[..., Any]
    phase: str
    params: tuple[str, ...]
    code: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: str | None = None
    artifacts: Callable[[Paths], list[Path]] = field(default=_no_artifacts)
    io_bound: bool = False

    def __post_init__(self) -> None:
        """Code deps listed once each, in order (the groups above overlap)."""
        object.__setattr__(self, "code", tuple(dict.fromkeys(self.code)))

    @property
    def command(self) -> str:
        """The ``trace`` subcommand (``cot_generate`` -> ``cot-generate``)."""
        return self.name.replace("_", "-")

    def metrics_file(self, paths: Paths) -> Path | None:
        """This stage's DVC metrics file, or None."""
        return paths.metrics_file(self.metrics) if self.metrics else None


def _download_artifacts(paths: Paths) -> list[Path]:
    return [paths.data_root / "MANIFEST.json", paths.zeroshot_root / "MANIFEST.json"]


def _validate_artifacts(paths: Paths) -> list[Path]:
    return [paths.validation_dir]


def _curate_artifacts(paths: Paths) -> list[Path]:
    return [paths.reports_dir / "cot_curate.md", paths.reports_dir / "cot_curate_checks.json"]


def _export_artifacts(paths: Paths) -> list[Path]:
    return [paths.embeddings_manifest, paths.embeddings_dir / "routing.jsonl"]


def _index_artifacts(paths: Paths) -> list[Path]:
    return [paths.index_manifest]


def _zeroshot_artifacts(paths: Paths) -> list[Path]:
    return [paths.reports_dir / "zeroshot.md", paths.reports_dir / "zeroshot"]


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "download",
            download_run,
            "data",
            params=("base.seed", "download"),
            code=(*COMMON_CODE, "trace_core/data/download.py", "trace_core/data/mbeir.py", "trace_core/types.py")
            + ("trace_core/data/mini", "trace_core/data/zeroshot.py"),
            outs=("${paths.data_root}", "${paths.zeroshot_root}"),
            artifacts=_download_artifacts,
            io_bound=True,
        ),
        Stage(
            "validate",
            validate_run,
            "data",
            params=("validate",),
            code=(*COMMON_CODE, *PARSER_CODE, "trace_core/data/instructions.py", "trace_core/data/normalize.py")
            + ("trace_core/data/validate",),
            outs=("${paths.reports_dir}/validation/summary.json",),  # Data Docs: a view, not an output
            metrics="validation",
            artifacts=_validate_artifacts,
        ),
        Stage(
            "cot_generate",
            cot_generate_run,
            "cot",
            params=("base.seed", "data", "cot_generate"),
            code=(*COMMON_CODE, *DATA_CODE, *COT_CODE),
            outs=("${paths.cot_dir}/raw",),
            io_bound=True,
        ),
        Stage(
            "cot_curate",
            cot_curate_run,
            "cot",
            params=("cot_curate",),
            code=(*COMMON_CODE, *DATA_CODE, *COT_CODE),
            outs=(
                "${paths.cot_dir}/curated.jsonl",
                "${paths.cot_dir}/dropped.jsonl",
                "${paths.reports_dir}/cot_curate.md",
                "${paths.reports_dir}/cot_curate_checks.json",
            ),
            metrics="cot_curate",
            artifacts=_curate_artifacts,
        ),
        Stage(
            "cot_build",
            cot_build_run,
            "cot",
            params=("base.seed", "data", "cot_build"),
            code=(*COMMON_CODE, *DATA_CODE, *COT_CODE),
            outs=("${paths.cot_dir}/mbeir_cot_train.jsonl",),
            metrics="cot_build",
        ),
        Stage(
            "train",
            train_run,
            "train",
            params=("base.seed", "data", "model", "train"),
            code=(*COMMON_CODE, *DATA_CODE, *MODEL_CODE, "trace_core/plots.py", "trace_core/ranks.py")
            + ("trace_core/training",),
            outs=("${paths.model_dir}", "${paths.reports_dir}/train/curve.png"),
            metrics="train",
        ),
        Stage(
            "self_train",
            self_train_run,
            "train",
            params=("base.seed", "data", "model", "train", "self_chain"),
            code=(*COMMON_CODE, *DATA_CODE, *MODEL_CODE, "trace_core/plots.py", "trace_core/ranks.py")
            + ("trace_core/training",),
            # the chains are cached per model id across runs (persist); the folder is a marker when disabled
            outs=("${paths.cot_dir}/self_chains", "${paths.self_model_dir}"),
            metrics="self_train",
        ),
        Stage(
            "export",
            export_run,
            "index",
            # self_chain.enabled picks the served model (paths.served_model_dir)
            params=("base.seed", "data.normalize_text", "model.max_length", "self_chain.enabled", "export"),
            code=(*COMMON_CODE, *DATA_CODE, *MODEL_CODE, *EXPORT_CODE),
            outs=("${paths.embeddings_dir}",),
            artifacts=_export_artifacts,
        ),
        Stage(
            "index",
            index_run,
            "index",
            params=("index",),
            code=(*COMMON_CODE, "trace_core/indexing"),
            outs=("${paths.index_dir}/manifest.json",),  # the Milvus Lite file is service state, like a server's
            artifacts=_index_artifacts,
            io_bound=True,
        ),
        Stage(
            "evaluate",
            evaluate_run,
            "evaluate",
            params=("base.seed", "index", "evaluate"),
            code=(*COMMON_CODE, *PARSER_CODE, "trace_core/data/instructions.py", "trace_core/data/normalize.py")
            + ("trace_core/flatten.py", "trace_core/indexing", "trace_core/plots.py", "trace_core/evaluation"),
            outs=(
                "${paths.reports_dir}/mbeir.md",
                "${paths.reports_dir}/runs",
                "${paths.reports_dir}/plots",
                "${paths.reports_dir}/gallery",
            ),
            metrics="mbeir",
        ),
        Stage(
            "evaluate_zeroshot",
            evaluate_zeroshot_run,
            "evaluate",
            # queries are encoded as export encodes M-BEIR queries (routing, cap, batch, device)
            params=("export.routing", "export.max_new_tokens", "export.batch_size", "export.device")
            + ("self_chain.enabled", "evaluate_zeroshot"),
            code=(*COMMON_CODE, "trace_core/data/normalize.py", "trace_core/data/zeroshot.py")
            + (*MODEL_CODE, "trace_core/indexing/backend.py", "trace_core/evaluation/metrics.py")
            + ("trace_core/evaluation/zeroshot", "trace_core/flatten.py"),
            outs=("${paths.reports_dir}/zeroshot.md", "${paths.reports_dir}/zeroshot"),
            metrics="zeroshot",
            artifacts=_zeroshot_artifacts,
        ),
    )
}

#: phases of the Prefect pipeline, in order, each running its stages in registry order.
PHASES: tuple[str, ...] = ("data", "cot", "train", "index", "evaluate")


def phase_stages(phase: str) -> tuple[Stage, ...]:
    """The stages of one phase, in pipeline order."""
    return tuple(s for s in STAGES.values() if s.phase == phase)


def stage(name: str) -> Stage:
    """The stage called ``name`` (``cot-generate`` and ``cot_generate`` both work).

    Raises:
        KeyError: naming the unknown stage and the known ones.
    """
    key = name.replace("-", "_")
    if key not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return STAGES[key]

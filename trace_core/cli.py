"""``trace`` command line: one subcommand per pipeline stage.

Commands are plain functions; heavy libraries (torch, transformers, deepspeed, peft,
great_expectations, mlflow, pymilvus) are imported inside the stage modules, never here,
so ``trace --help`` answers at once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from trace_core.config import ParamsError, load_params
from trace_core.env import quiet_environment
from trace_core.io import DataError

app = typer.Typer(
    name="trace",
    help="TRACE: task-adaptive reasoning and compressing embeddings for multimodal retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params YAML file (default: params.yaml)")]
log = logging.getLogger("trace_core")


def _setup(params_path: Path):  # type: ignore[no-untyped-def]
    """Load params and paths once for a command; configure logging and telemetry."""
    from trace_core.paths import Paths

    quiet_environment()
    params = load_params(params_path)
    logging.basicConfig(
        level=params.base.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return params, Paths.from_params(params)


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def _tracked(params, paths, stage: str) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Run a stage inside its MLflow child run (metrics file and reports logged after it)."""
    if not params.tracking.enabled:
        yield
        return
    from trace_core.tracking import track_stage  # imports mlflow: only when tracking is on

    with track_stage(params, paths, stage):
        yield


@app.command()
def download(
    params: ParamsOpt = Path("params.yaml"),
    profile: Annotated[Optional[str], typer.Option(help="override download.profile: mini or full")] = None,
    from_dir: Annotated[
        Optional[Path], typer.Option(help="lay out an already-downloaded M-BEIR copy from this folder")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="dataset root (default: paths.data_root)")] = None,
) -> None:
    """Generate M-BEIR-mini or fetch/lay out the real M-BEIR; writes a MANIFEST last."""
    try:
        p, paths = _setup(params)
        from trace_core.data import download as stage

        with _tracked(p, paths, "download"):
            stage.run(p, paths, profile=profile, from_dir=from_dir, out=out)
    except (DataError, ParamsError, FileNotFoundError) as err:
        _fail(err)


@app.command()
def validate(
    params: ParamsOpt = Path("params.yaml"),
    data_root: Annotated[
        Optional[Path], typer.Option(help="M-BEIR root to validate (default: paths.data_root)")
    ] = None,
) -> None:
    """Great Expectations validation of M-BEIR files; exit 0 only when every check passes."""
    try:
        p, paths = _setup(params)
    except ParamsError as err:
        _fail(err)
    from trace_core.data import validate as stage

    with _tracked(p, paths, "validate"):
        ok = stage.run(p, paths, data_root=data_root)
    raise typer.Exit(code=0 if ok else 1)


@app.command("cot-generate")
def cot_generate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Route training queries and let the teacher write chains (sharded, resumable)."""
    p, paths = _setup(params)
    from trace_core.cot import generate as stage

    try:
        with _tracked(p, paths, "cot_generate"):
            stage.run(p, paths)
    except (DataError, FileNotFoundError, ValueError) as err:
        _fail(err)


@app.command("cot-curate")
def cot_curate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Rule filter then verifier over the raw chains; writes kept, dropped and a report."""
    p, paths = _setup(params)
    from trace_core.cot import curate as stage

    try:
        with _tracked(p, paths, "cot_curate"):
            stage.run(p, paths)
    except (DataError, FileNotFoundError, ValueError) as err:
        _fail(err)


@app.command("cot-filter")
def cot_filter(
    in_: Annotated[Path, typer.Option("--in", help="raw teacher outputs (JSONL)")],
    out: Annotated[Path, typer.Option(help="kept records (JSONL)")],
    dropped: Annotated[Path, typer.Option(help="dropped records with their rule (JSONL)")],
    tokenizer: Annotated[Optional[str], typer.Option(help="teacher tokenizer path for token counts")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Apply the rule filter alone to any file of teacher outputs."""
    p, _ = _setup(params)
    from trace_core.cot import curate as stage

    try:
        stage.filter_file(p.cot_curate, in_, out, dropped, tokenizer=tokenizer)
    except (DataError, FileNotFoundError) as err:
        _fail(err)


@app.command("cot-build")
def cot_build(params: ParamsOpt = Path("params.yaml")) -> None:
    """Join curated chains with the training queries into the training file."""
    p, paths = _setup(params)
    from trace_core.cot import build as stage

    try:
        with _tracked(p, paths, "cot_build"):
            stage.run(p, paths)
    except (DataError, FileNotFoundError, ValueError) as err:
        _fail(err)


@app.command()
def train(params: ParamsOpt = Path("params.yaml")) -> None:
    """Joint CE + InfoNCE training with DeepSpeed ZeRO-3; logs and registers in MLflow."""
    p, paths = _setup(params)
    from trace_core.training import train as stage

    with _tracked(p, paths, "train"):
        stage.run(p, paths)


@app.command()
def export(
    params: ParamsOpt = Path("params.yaml"),
    routing: Annotated[Optional[str], typer.Option(help="override export.routing: adaptive, never or always")] = None,
) -> None:
    """Embed test queries (routed) and local pools into resumable shards."""
    p, paths = _setup(params)
    from trace_core.indexing import export as stage

    try:
        with _tracked(p, paths, "export"):
            stage.run(p, paths, routing=routing)
    except (DataError, ConnectionError) as err:
        _fail(err)


@app.command()
def index(params: ParamsOpt = Path("params.yaml")) -> None:
    """Build Milvus (or exact NumPy) collections from the exported embeddings."""
    p, paths = _setup(params)
    from trace_core.indexing import build_index as stage

    try:
        with _tracked(p, paths, "index"):
            stage.run(p, paths)
    except (DataError, ConnectionError) as err:
        _fail(err)


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Search, write the UniIR run file and score the 16-column M-BEIR table."""
    p, paths = _setup(params)
    from trace_core.evaluation import evaluate as stage

    try:
        with _tracked(p, paths, "evaluate"):
            stage.run(p, paths)
    except (DataError, ConnectionError) as err:
        _fail(err)


@app.command()
def score(
    run: Annotated[Path, typer.Option(help="UniIR-format run file: qid Q0 did rank score run_id task_id")],
    qrels: Annotated[list[Path], typer.Option(help="qrels file(s); repeat the option")],
    k: Annotated[str, typer.Option(help="comma-separated cut-offs")] = "1,5,10",
) -> None:
    """Score any UniIR-format run file against qrels; prints JSON per qrels stem."""
    import json

    from trace_core.evaluation.metrics import score_run_files

    try:
        result = score_run_files(run, qrels, [int(x) for x in k.split(",") if x.strip()])
    except DataError as err:
        _fail(err)
    typer.echo(json.dumps(result, indent=2, sort_keys=True))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

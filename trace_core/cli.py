"""``trace`` command line: one subcommand per pipeline stage.

Commands are plain functions; each stage command calls its run function from the stage
registry (:mod:`trace_core.stages`). Heavy libraries (torch, transformers, deepspeed, peft,
great_expectations, mlflow, pymilvus) are imported inside the stage functions, never at module
top, so ``trace --help`` answers at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from trace_core.config import Params, load_params
from trace_core.env import VERBOSE_ENV, quiet_environment
from trace_core.logs import setup_logging
from trace_core.paths import Paths
from trace_core.stages import STAGES, Stage

app = typer.Typer(
    name="trace",
    help="TRACE: task-adaptive reasoning and compressing embeddings for multimodal retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params YAML file (default: params.yaml)")]
log = logging.getLogger("trace_core")


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also show third-party INFO logs and progress bars")
    ] = False,
) -> None:
    """Options of every command (``trace --verbose <command>``)."""
    if verbose:  # through the environment, so subprocesses and `dvc repro` children see it too
        os.environ[VERBOSE_ENV] = "1"


def _setup(params_path: Path) -> tuple[Params, Paths]:
    """Load params and paths once for a command; configure logging and telemetry."""
    quiet_environment()
    params = load_params(params_path)
    setup_logging(params.base.log_level)
    return params, Paths.from_params(params)


#: errors a user can fix (bad data, params, paths, an unreachable server): one line, exit 2.
USER_ERRORS = (ValueError, FileNotFoundError, ConnectionError)


def _fail(err: Exception) -> NoReturn:
    log.debug("traceback of the error below", exc_info=err)  # base.log_level: DEBUG shows it
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def _tracked(params: Params, paths: Paths, stage: Stage) -> Iterator[None]:
    """Run a stage inside its MLflow run (metrics file and reports logged after it)."""
    if not params.tracking.enabled:
        yield
        return
    from trace_core.tracking import track_stage  # imports mlflow: only when tracking is on

    with track_stage(params, stage.name, stage.params, stage.metrics_file(paths), stage.artifacts(paths)):
        yield


def _run_stage(params_path: Path, name: str, **kwargs: Any) -> Any:
    """Load params and call the stage's ``run`` (from the registry) inside its MLflow run.

    A user-fixable error (see :data:`USER_ERRORS`) is printed as one line and exits 2.
    """
    stage = STAGES[name]
    try:
        p, paths = _setup(params_path)
        with _tracked(p, paths, stage):
            return stage.run(p, paths, **kwargs)
    except USER_ERRORS as err:
        _fail(err)


@app.command()
def download(
    params: ParamsOpt = Path("params.yaml"),
    profile: Annotated[Optional[str], typer.Option(help="override download.profile: mini or full")] = None,
    from_dir: Annotated[
        Optional[Path], typer.Option(help="lay out an already-downloaded M-BEIR copy from this folder")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="dataset root (default: paths.data_root)")] = None,
    zeroshot_from_dir: Annotated[
        Optional[Path], typer.Option(help="lay out real zero-shot dataset copies from this folder (one per dataset)")
    ] = None,
) -> None:
    """Generate M-BEIR-mini (+ zero-shot-mini) or fetch/lay out the real data; writes a MANIFEST last."""
    _run_stage(params, "download", profile=profile, from_dir=from_dir, out=out, zeroshot_from_dir=zeroshot_from_dir)


@app.command()
def validate(
    params: ParamsOpt = Path("params.yaml"),
    data_root: Annotated[
        Optional[Path], typer.Option(help="M-BEIR root to validate (default: paths.data_root)")
    ] = None,
) -> None:
    """Great Expectations validation of M-BEIR files; exit 0 only when every check passes."""
    ok = _run_stage(params, "validate", data_root=data_root)
    raise typer.Exit(code=0 if ok else 1)


@app.command("cot-generate")
def cot_generate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Route training queries and let the teacher write chains (sharded, resumable)."""
    _run_stage(params, "cot_generate")


@app.command("cot-curate")
def cot_curate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Rule filter then verifier over the raw chains; writes kept, dropped and a report."""
    _run_stage(params, "cot_curate")


@app.command("cot-filter")
def cot_filter(
    in_: Annotated[Path, typer.Option("--in", help="raw teacher outputs (JSONL)")],
    out: Annotated[Path, typer.Option(help="kept records (JSONL)")],
    dropped: Annotated[Path, typer.Option(help="dropped records with their rule (JSONL)")],
    tokenizer: Annotated[Optional[str], typer.Option(help="teacher tokenizer path for token counts")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Apply the rule filter alone to any file of teacher outputs."""
    try:
        p, _ = _setup(params)
        from trace_core.cot import curate as stage

        stage.filter_file(p.cot_curate, in_, out, dropped, tokenizer=tokenizer)
    except USER_ERRORS as err:
        _fail(err)


@app.command("cot-build")
def cot_build(params: ParamsOpt = Path("params.yaml")) -> None:
    """Join curated chains with the training queries into the training file."""
    _run_stage(params, "cot_build")


@app.command()
def train(params: ParamsOpt = Path("params.yaml")) -> None:
    """Joint CE + InfoNCE training with DeepSpeed ZeRO-3; logs and registers in MLflow."""
    _run_stage(params, "train")


@app.command("self-train")
def self_train(params: ParamsOpt = Path("params.yaml")) -> None:
    """Self-chain phase 2 (self_chain.enabled): InfoNCE after the model's own chains; else a marker."""
    _run_stage(params, "self_train")


@app.command()
def export(
    params: ParamsOpt = Path("params.yaml"),
    routing: Annotated[Optional[str], typer.Option(help="override export.routing: adaptive, never or always")] = None,
) -> None:
    """Embed test queries (routed) and local pools into resumable shards."""
    _run_stage(params, "export", routing=routing)


@app.command()
def index(params: ParamsOpt = Path("params.yaml")) -> None:
    """Build Milvus (or exact NumPy) collections from the exported embeddings."""
    _run_stage(params, "index")


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Search, write the UniIR run file and score the 16-column M-BEIR table."""
    _run_stage(params, "evaluate")


@app.command("evaluate-zeroshot")
def evaluate_zeroshot(params: ParamsOpt = Path("params.yaml")) -> None:
    """The paper's zero-shot suite (13 columns, 10 unseen datasets) with the trained model."""
    _run_stage(params, "evaluate_zeroshot")


@app.command()
def score(
    run: Annotated[Path, typer.Option(help="UniIR-format run file: qid Q0 did rank score run_id task_id")],
    qrels: Annotated[list[Path], typer.Option(help="qrels file(s); repeat the option")],
    k: Annotated[str, typer.Option(help="comma-separated cut-offs")] = "1,5,10",
    metric: Annotated[str, typer.Option(help="recall (UniIR hit@k, R@k) or map (CIRCO mAP@k, MAP@k)")] = "recall",
) -> None:
    """Score any UniIR-format run file against qrels; prints JSON per qrels stem."""
    import json

    from trace_core.evaluation.metrics import score_run_files

    try:
        ks = [int(x) for x in k.split(",") if x.strip()]
        result = score_run_files(run, qrels, ks, metric)
    except USER_ERRORS as err:
        _fail(err)
    typer.echo(json.dumps(result, indent=2, sort_keys=True))


@app.command()
def search(
    text: Annotated[Optional[str], typer.Argument(help="query text (optional with --image)")] = None,
    image: Annotated[Optional[Path], typer.Option(help="query image file")] = None,
    task: Annotated[
        Optional[str], typer.Option(help="M-BEIR test task whose instruction to use, e.g. mscoco_task0")
    ] = None,
    pool: Annotated[Optional[str], typer.Option(help="pool to search (default: the task's, else union)")] = None,
    k: Annotated[int, typer.Option("--k", help="number of hits")] = 10,
    model_dir: Annotated[
        Optional[Path], typer.Option(help="saved model folder (default: the registry's champion)")
    ] = None,
    routing: Annotated[Optional[str], typer.Option(help="adaptive, never or always (default: export.routing)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Search the built index with one query; prints the route, the chain and the top-k hits."""
    import json

    try:
        p, paths = _setup(params)
        from trace_core import search as stage

        result = stage.run(p, paths, text, image, task, pool, k, model_dir, routing)
    except USER_ERRORS as err:
        _fail(err)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        typer.echo(stage.render_result(result, str(paths.data_root)))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

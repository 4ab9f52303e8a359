"""All Prefect deployments of TRACE, declared in one place.

``python -m flows.deploy serve`` serves them from this process (what ``make prefect-up``
starts in the background); ``python -m flows.deploy work-pool --pool NAME`` registers the
same deployments on a work pool instead, for workers on other machines (``prefect worker
start --pool NAME`` in a checkout of this repository).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from flows.pipeline import RunConfig, trace_pipeline
from trace_core.env import quiet_environment

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

log = logging.getLogger("flows.deploy")

#: deployment name -> (description, flow parameters)
DEPLOYMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "mini": (
        "The embedded default: params.yaml as committed (M-BEIR-mini, tiny model, CPU).",
        {"config": RunConfig().model_dump()},
    ),
    "mini-force": (
        "The embedded default, every stage re-run even if DVC finds it up to date.",
        {"config": RunConfig(force=True).model_dump()},
    ),
}


def serve() -> None:
    """Serve every deployment from this process until interrupted."""
    from prefect import serve as prefect_serve

    # to_deployment/from_source are sync-or-async in Prefect's types; called here, they are sync
    deployments = [
        cast(
            "RunnerDeployment",
            trace_pipeline.to_deployment(name=name, description=desc, parameters=params, tags=["trace"]),
        )
        for name, (desc, params) in DEPLOYMENTS.items()
    ]
    prefect_serve(*deployments, print_starting_message=True)


def to_work_pool(pool: str, source: str) -> None:
    """Register every deployment on a Prefect work pool (code pulled from ``source``)."""
    remote = cast(
        "Flow[..., Any]", trace_pipeline.from_source(source=source, entrypoint="flows/pipeline.py:trace_pipeline")
    )
    for name, (desc, params) in DEPLOYMENTS.items():
        remote.deploy(
            name=name, work_pool_name=pool, description=desc, parameters=params, tags=["trace"], print_next_steps=False
        )
        log.info("deployed trace-pipeline/%s on work pool %s", name, pool)


def main() -> None:
    """Command line: ``serve`` (default) or ``work-pool --pool NAME [--source DIR|URL]``."""
    quiet_environment()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("serve", help="serve the deployments from this process")
    wp = sub.add_parser("work-pool", help="register the deployments on a work pool")
    wp.add_argument("--pool", required=True, help="work pool name (create it with `prefect work-pool create`)")
    wp.add_argument("--source", default=str(Path(__file__).resolve().parents[1]), help="checkout dir or git URL")
    args = parser.parse_args()
    if args.cmd == "work-pool":
        to_work_pool(args.pool, args.source)
    else:
        serve()


if __name__ == "__main__":
    main()

"""``python -m trace_core.tracking start|end RUN_ID [STATUS]``: pipeline parent runs for shell pipelines."""

from __future__ import annotations

import argparse
import sys

from trace_core.config import load_params
from trace_core.env import quiet_environment
from trace_core.tracking.runs import end_pipeline, start_pipeline


def main(argv: list[str] | None = None) -> int:
    """Open a parent run (prints its id) or close one with a status (used by scripts/demo.sh)."""
    quiet_environment()
    parser = argparse.ArgumentParser(prog="python -m trace_core.tracking", description=main.__doc__)
    parser.add_argument("action", choices=["start", "end"])
    parser.add_argument("run_id", nargs="?", default="")
    parser.add_argument("status", nargs="?", default="FINISHED", choices=["FINISHED", "FAILED", "KILLED"])
    parser.add_argument("-p", "--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.action == "start":
        sys.stdout.write(start_pipeline(params, reuse=False) + "\n")
    else:
        end_pipeline(params, args.run_id, args.status)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

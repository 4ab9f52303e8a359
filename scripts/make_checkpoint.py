"""Write a toy checkpoint in the exact Hugging Face layout of Qwen2.5-VL / Qwen2-VL-Instruct (offline).

Sizes come from ``model.tiny`` of a params file; the folder then stands in for the hub
checkpoint: set ``model.name_or_path`` to it (``presets/rehearsal.yaml`` does).

    python scripts/make_checkpoint.py --family qwen2.5-vl-7b --out .trace/rehearsal/qwen2.5-vl-toy
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from trace_core.config import load_params
from trace_core.model.fixture_checkpoint import write_fixture_checkpoint


def main() -> None:
    """Parse the arguments and write the checkpoint."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="qwen2.5-vl-7b", help="a hub family of trace_core.model.backbone.FAMILIES")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint folder to write (replaced)")
    ap.add_argument("-p", "--params", type=Path, default=Path("params.yaml"), help="params file for model.tiny sizes")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_fixture_checkpoint(args.out, args.family, load_params(args.params).model.tiny, args.seed)


if __name__ == "__main__":
    main()

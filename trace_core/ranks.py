"""Process rank helpers: the one place that says which process is the main one.

Launchers (``torch.distributed.run``, ``deepspeed``) export ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
once a process group is initialised, ``torch.distributed`` is the authority. torch is imported
only when a process group may exist, so the CLI stays light.
"""

from __future__ import annotations

import os
import sys


def _group_initialised() -> bool:
    if "torch" not in sys.modules:  # nothing can have initialised a group without importing torch
        return False
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized())


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    if _group_initialised():
        import torch.distributed as dist

        return int(dist.get_rank())
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    if _group_initialised():
        import torch.distributed as dist

        return int(dist.get_world_size())
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """Rank of this process on its machine (0 when not distributed)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Whether this is global rank 0: the process that writes files, logs and MLflow runs."""
    return rank() == 0

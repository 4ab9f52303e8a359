"""``python -m trace_core``."""

from trace_core.cli import main

main()

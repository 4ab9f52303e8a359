"""M-BEIR-mini: the generated, offline benchmark in the exact M-BEIR layout.

- :mod:`~trace_core.data.mini.scene`: scenes, captions and the typed ``src_content`` payloads
  (the contract with the oracle teacher);
- :mod:`~trace_core.data.mini.tasks`: one seeded recipe per M-BEIR task;
- :mod:`~trace_core.data.mini.prompts`: the instructions TSV;
- :mod:`~trace_core.data.mini.render`: PNG rendering of scenes;
- :mod:`~trace_core.data.mini.generate`: :func:`build_mini` / :func:`write_mini`.
"""

from __future__ import annotations

from trace_core.data.mini.generate import build_mini, write_mini

__all__ = ["build_mini", "write_mini"]

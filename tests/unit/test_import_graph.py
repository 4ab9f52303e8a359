"""The trace_core import graph has no cycles, and the library does not import orchestration."""

from __future__ import annotations

from import_graph import all_modules, find_cycle, imports


def test_no_import_cycles_among_trace_core_modules() -> None:
    cycle = find_cycle(all_modules("trace_core"))
    assert cycle is None, " -> ".join(cycle or [])


def test_find_cycle_detects_a_planted_cycle(tmp_path, monkeypatch) -> None:
    import import_graph

    pkg = tmp_path / "trace_core"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from trace_core import b\n")
    (pkg / "b.py").write_text("def f():\n    from trace_core.a import x\n")
    monkeypatch.setattr(import_graph, "ROOT", tmp_path)
    assert find_cycle(all_modules("trace_core")) == ["trace_core.a", "trace_core.b", "trace_core.a"]


def test_library_never_imports_flows() -> None:
    offenders = [m for m in all_modules("trace_core") if imports(m, ("flows",))]
    assert offenders == []


def test_only_the_tracking_runs_module_opens_runs() -> None:
    """Runs are opened by tracking.runs (called from the CLI/flows); stage code never opens one."""
    from import_graph import ROOT

    for path in (ROOT / "trace_core").rglob("*.py"):
        text = path.read_text()
        if path.name in ("runs.py", "cli.py", "__main__.py") or path.parent.name == "tracking":
            continue
        for needle in ("mlflow.start_run", "stage_run(", "start_pipeline(", "track_stage("):
            assert needle not in text, f"{path.relative_to(ROOT)} opens an MLflow run ({needle})"

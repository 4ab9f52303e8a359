"""The ``trace_core`` import graph read from the source with ``ast`` (nothing imported)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_file(module: str) -> Path | None:
    """Source file of a ``trace_core``/``flows`` module or package, None if there is none."""
    base = ROOT / Path(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _targets(node: ast.AST, package: str) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative import
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
        return {base} | {f"{base}.{a.name}" for a in node.names}
    return set()


def imports(module: str, prefixes: tuple[str, ...] = ("trace_core",)) -> set[str]:
    """Modules of ``prefixes`` that ``module`` imports anywhere in its body (lazy imports included)."""
    path = module_file(module)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        for target in _targets(node, package):
            if target.split(".")[0] in prefixes and module_file(target):
                found.add(target)
    return found - {module}


def all_modules(package: str = "trace_core") -> list[str]:
    """Every module of a package (``__init__`` files as the package name)."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out.append(".".join(parts))
    return out


def closure(module: str, skip: tuple[str, ...] = ()) -> set[str]:
    """``module`` and every ``trace_core`` module it imports, transitively (not through ``skip`` packages)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m not in seen and not any(m == s or m.startswith(s + ".") for s in skip):
            seen.add(m)
            todo.extend(imports(m))
    return seen


def find_cycle(modules: list[str]) -> list[str] | None:
    """One import cycle among ``modules`` (a list that starts and ends with the same module), or None.

    A package's ``__init__`` re-exporting its own submodules is not a cycle of the code.
    """
    graph = {m: {t for t in imports(m) if not m.startswith(t + ".") and not t.startswith(m + ".")} for m in modules}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in modules:
        if m not in state and (found := visit(m)):
            return found
    return None

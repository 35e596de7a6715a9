"""The layering of docs/architecture.md holds for every module: no import runs back up a layer, embed and
evals never import each other, and the import graph (function-level imports included) has no cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "steerlab"
DOC = ROOT / "docs" / "architecture.md"


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _layer_table() -> list[tuple[str, int, str]]:
    """(module pattern, layer, group) rows of the table in docs/architecture.md."""
    rows = []
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| (\d+) \| (\w+) \| (.+?) \|", line)
        if m:
            for name in re.findall(r"`([\w.*]+)`", m.group(3)):
                rows.append((name, int(m.group(1)), m.group(2)))
    return rows


def _place(module: str, table: list[tuple[str, int, str]]) -> tuple[int, str] | None:
    rel = "steerlab" if module == "steerlab" else module.removeprefix("steerlab.")
    best: tuple[int, int, str] | None = None  # (specificity, layer, group)
    for pattern, layer, group in table:
        if pattern.endswith(".*"):
            base = pattern[:-2]
            hit = rel == base or rel.startswith(base + ".")
            spec = len(base)
        else:
            hit, spec = rel == pattern, len(pattern) + 1000
        if hit and (best is None or spec > best[0]):
            best = (spec, layer, group)
    return None if best is None else (best[1], best[2])


def _imports(module: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported steerlab module, line) for every import in the file, at any depth (functions included)."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if target == "steerlab" and alias.name == "__version__":
                    continue  # the version string, readable from any layer
                out.append((full if full in mods else target, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return [(t, n) for t, n in out if t in mods and t != module]


def test_every_module_has_a_layer() -> None:
    table = _layer_table()
    assert len(table) > 20, "the layer table in docs/architecture.md was not found"
    missing = sorted(m for m in _modules() if _place(m, table) is None)
    assert not missing, f"add these modules to the layer table in docs/architecture.md: {missing}"


def test_no_import_runs_up_a_layer() -> None:
    table, mods = _layer_table(), _modules()
    bad = []
    for module, path in sorted(mods.items()):
        here = _place(module, table)
        for target, line in _imports(module, path, mods):
            there = _place(target, table)
            if here is None or there is None:
                continue
            if there[0] > here[0] or (there[0] == here[0] and there[1] != here[1]):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module} (layer {here[0]} {here[1]}) imports "
                           f"{target} (layer {there[0]} {there[1]})")
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(bad)


def test_import_graph_has_no_cycle() -> None:
    """With every function-level import counted, no cycle: nothing is imported late to dodge one."""
    mods = _modules()
    graph = {m: sorted({t for t, _ in _imports(m, p, mods) if t != "steerlab"}) for m, p in mods.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in graph[u]:
            if state.get(v) == 1:
                cycles.append(path[path.index(v):] + [v] if v in path else [u, v])
            elif v not in state:
                visit(v, path + [v])
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_upward_and_hidden_imports(tmp_path: Path) -> None:
    """The rules bite: a function-level import from a higher layer is found, with its line."""
    table = _layer_table()
    src = tmp_path / "steerlab"
    src.mkdir()
    (src / "capture.py").write_text("def f():\n    from .evals.runner import run_task\n    return run_task\n")
    mods = {"steerlab.capture": src / "capture.py", "steerlab.evals.runner": src / "runner.py"}
    found = _imports("steerlab.capture", src / "capture.py", mods)
    assert found == [("steerlab.evals.runner", 2)]
    assert _place("steerlab.capture", table) == (3, "read") and _place("steerlab.evals.runner", table) == (8, "harness")
    assert _place("steerlab.evals.loglik", table) == (6, "evals") and _place("steerlab.embed.cp", table) == (6, "embed")

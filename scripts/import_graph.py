"""The import graph of the camexp package: files in import cycles, and imports that run against the data flow.

Every `import camexp...` / `from camexp... import` counts, at module level or inside a function (a lazy import
still ties the modules together), and so do imports under `if TYPE_CHECKING:` (a cycle through type hints is
still a cycle of meaning; `--no-typing` leaves them out). Every package and module under camexp/ must have its
place in LAYERS: a new one that is not placed fails the check. Run: `python scripts/import_graph.py` (exit 1
when a cycle, a backward import, an unplaced module or a runner import outside the CLI exists).
tests/project/test_open_core.py (test_import_graph_has_no_cycle_and_runs_with_the_data_flow) asserts the same.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "camexp"
# The data flow, upstream first: a module may import only from its own layer or layers before it.
LAYERS = [
    {
        "errors",
        "registry",
        "config",
        "accel",
        "profile",
        "distributed",
        "savefig",
        "lock",
        "io",
        "provenance",
        "stats",
        "csvsafe",
    },
    {"data"},
    {"models"},
    {"explain"},
    {"metrics"},
    {"results"},
    {"analyses"},
    {"jobs"},
    {"report", "check", "finetune", "experiment", "resume", "study", "distill", "consistency", "reliability"},
    {"runner"},
    {"cli", "__main__"},
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _typing_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def graph(typing: bool = True) -> dict[str, set[str]]:
    """module -> camexp modules it imports (a `from pkg import mod` edge points at the submodule)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if not typing and _typing_only(node, parents):
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names
                ]
            for t in targets:
                if t.startswith("camexp") and t in files and t != mod:
                    edges[mod].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def layer(mod: str) -> int:
    return next((i for i, names in enumerate(LAYERS) if _top(mod) in names), -1)


LEAVES = {"stats"}  # rooms that import no camexp module at all


def leaf_imports(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports of camexp modules from inside a leaf room (other than its own modules)."""
    return sorted((a, b) for a, bs in edges.items() for b in bs if _top(a) in LEAVES and _top(b) != _top(a))


def _top(mod: str) -> str:
    return mod.split(".")[1] if "." in mod else "__init__"


def unplaced(edges: dict[str, set[str]]) -> list[str]:
    """Modules whose top-level package or module is in no layer of LAYERS (the package __init__ is exempt)."""
    return sorted(m for m in edges if m != "camexp" and layer(m) < 0)


def runner_users(edges: dict[str, set[str]]) -> list[str]:
    """Modules that import the runner, other than the CLI's (only the command line may start a run)."""
    return sorted(a for a, bs in edges.items() if "camexp.runner" in bs and layer(a) != layer("camexp.cli"))


def backward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a later layer of the data flow into an earlier one (the package __init__ is exempt)."""
    return sorted(
        (a, b) for a, bs in edges.items() for b in bs if layer(a) >= 0 and layer(b) >= 0 and layer(b) > layer(a)
    )


def main() -> int:
    edges = graph(typing="--no-typing" not in sys.argv)
    cyc, back, loose, users = cycles(edges), backward(edges), unplaced(edges), runner_users(edges)
    leafy = leaf_imports(edges)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports")
    print(f"files in import cycles: {sum(map(len, cyc))} in {len(cyc)} cycle(s)")
    for c in cyc:
        print("  cycle:", ", ".join(c))
    print(f"imports against the data flow: {len(back)}")
    for a, b in back:
        print(f"  {a} -> {b}")
    print(f"modules in no layer of LAYERS: {loose}")
    print(f"modules importing camexp.runner besides the CLI: {users}")
    print(f"camexp imports inside leaf rooms {sorted(LEAVES)}: {leafy}")
    return 1 if cyc or back or loose or users or leafy else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The package's imports run one way (docs/ARCHITECTURE.md).

* No import cycle among mammojax's modules, counting imports inside functions
  (grimp sees them, as ``lint-imports`` does), and counting the package
  ``__init__`` that Python runs before any of its submodules.
* An import of a mammojax module inside a function (outside ``cli/``, whose
  commands load the library lazily so ``--help`` stays fast) is there for a
  reason, and a comment on its line, or right above it or above the block of
  imports it belongs to, says which: usually that the module imports JAX,
  flax or pydicom at its top.

The layer contracts themselves are ``[tool.importlinter]`` in pyproject.toml,
checked by ``lint-imports`` in scripts/test.sh.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "mammojax"


def import_graph() -> dict[str, set[str]]:
    """mammojax module -> the mammojax modules importing it runs first (in-function imports included).

    Besides grimp's direct imports: importing ``a.b.c`` from outside ``a.b``
    first runs ``a/b/__init__.py``, so that package's imports count too.
    """
    graph = grimp.build_graph("mammojax", include_external_packages=False, cache_dir=None)
    edges = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    for module, imported in edges.items():
        for target in list(imported):
            parts = target.split(".")
            for depth in range(2, len(parts)):
                package = ".".join(parts[:depth])
                if package != module and not module.startswith(package + ".") and package in edges:
                    imported.add(package)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[m0, m1, ..., m0]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(edges):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(edges[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges.get(nxt, ()))))
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _own_import(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "mammojax"
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "mammojax" for alias in node.names)
    return False


def in_function_imports(path: Path) -> list[tuple[int, bool]]:
    """``(line, commented)`` of each import of a mammojax module inside a function of ``path``."""
    source = path.read_text()
    lines = source.splitlines()
    found = []

    def commented(run: list[ast.stmt], node: ast.stmt) -> bool:
        own = any("#" in lines[i - 1] for i in range(node.lineno, node.end_lineno + 1))
        above = lines[run[0].lineno - 2].strip() if run[0].lineno > 1 else ""
        return own or above.startswith("#")

    def visit(node: ast.AST, inside: bool) -> None:
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            run: list[ast.stmt] = []  # consecutive import statements, no line between them
            for statement in block:
                is_import = isinstance(statement, (ast.Import, ast.ImportFrom))
                if is_import and run and statement.lineno == run[-1].end_lineno + 1:
                    run.append(statement)
                else:
                    run = [statement] if is_import else []
                if inside and is_import and _own_import(statement):
                    found.append((statement.lineno, commented(run, statement)))
        for child in ast.iter_child_nodes(node):
            visit(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source), False)
    return found


def test_in_function_imports_of_mammojax_modules_say_why():
    counted, uncommented = 0, []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        if relative.startswith("mammojax/cli/"):
            continue  # the CLI imports its library lazily: `mammojax --help` must not load JAX
        for line, commented in in_function_imports(path):
            counted += 1
            if not commented:
                uncommented.append(f"{relative}:{line}")
    print(f"in-function imports of mammojax modules outside cli/: {counted}")
    assert not uncommented, ("imports inside functions without a comment saying why (move them to the "
                             "top unless the module must stay light): " + ", ".join(uncommented))

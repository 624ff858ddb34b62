"""The layout keeps its shape: no import cycle in src/vrnnkit, small modules, short functions."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "src" / "vrnnkit"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60  # docstring not counted
# The hand-derived backward pass is one piece of math, checked against autograd.
LONG_FUNCTIONS_ALLOWED = {("fused.py", "backward")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _module_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The vrnnkit modules that ``path`` imports when it is imported: the import statements
    at module level (in ``if`` and ``try`` blocks too). Imports inside functions run later,
    when the function is called, and cannot form an import-time cycle; they are left out. So
    is the parent package that Python imports before a submodule: a package's ``__init__``
    importing its own submodules is not a cycle; and so are imports under ``if TYPE_CHECKING:``,
    which only type checkers run."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    nodes = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            nodes.extend(node.orelse)
        elif isinstance(node, (ast.If, ast.Try)):
            nodes.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            nodes.extend(child for handler in getattr(node, "handlers", []) for child in handler.body)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            # `from vrnnkit.cli import train` imports the module vrnnkit.cli.train.
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return {module for module in found if module in known and module != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_the_modules_of_vrnnkit():
    sources = _sources()
    graph = {name: _module_level_imports(path, name, set(sources)) for name, path in sources.items()}
    assert graph["vrnnkit.cli"] >= {"vrnnkit.cli.train", "vrnnkit.cli.common"}, "the import walk lost its way"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_modules_stay_small_and_functions_short():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1
            docstring = node.body[0] if node.body else None
            if isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant) and isinstance(docstring.value.value, str):
                length -= docstring.end_lineno - docstring.lineno + 1
            if length > MAX_FUNCTION_LINES and (path.name, node.name) not in LONG_FUNCTIONS_ALLOWED:
                too_long.append(f"{path.relative_to(PACKAGE)}: {node.name}() is {length} lines")
    assert too_long == []

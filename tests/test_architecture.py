"""The layout keeps its shape: the layers of docs/architecture.md, no import cycle in
src/vrnnkit, no reaching into another package's private names, small modules, short functions."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "src" / "vrnnkit"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60  # docstring not counted
# The hand-derived backward pass is one piece of math, checked against autograd.
LONG_FUNCTIONS_ALLOWED = {("model/fused.py", "backward")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _imported(node: ast.Import | ast.ImportFrom, package: str, known: set[str]) -> set[str]:
    """The vrnnkit modules one import statement names. `from vrnnkit.cli import train` names
    the module vrnnkit.cli.train, not the package vrnnkit.cli (a parent that Python imports
    first in any case); `from vrnnkit.cli import app` names the package."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    base = node.module or ""
    if node.level:
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
    found = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known}
    if len(found) < len(node.names):
        found.add(base)
    return {module for module in found if module in known}


def _module_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The vrnnkit modules that ``path`` imports when it is imported, or when a type checker
    reads it: the import statements at module level (in ``if`` and ``try`` blocks, and under
    ``if TYPE_CHECKING:``, too). Imports inside functions run later, when the function is
    called, and cannot form an import-time cycle; they are left out. So is the parent package
    that Python imports before a submodule: a package's ``__init__`` importing its own
    submodules is not a cycle."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    nodes = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, (ast.If, ast.Try)):
            nodes.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            nodes.extend(child for handler in getattr(node, "handlers", []) for child in handler.body)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= _imported(node, package, known)
    return {module for module in found if module != name}


def _all_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every vrnnkit module ``path`` imports anywhere, inside functions too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= _imported(node, package, known)
    return {module for module in found if module != name}


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


def _unit(module: str) -> str:
    """The package (or top-level module) of docs/architecture.md that ``module`` belongs to;
    ``vrnnkit`` itself is its ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vrnnkit"


def _layers() -> dict[str, int]:
    """The layer of each package, from the table of docs/architecture.md: rows
    ``| 3 | `model` | ... |``, several packages in one row sharing a layer."""
    layers = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if match:
            layers.update({name: int(match[1]) for name in re.findall(r"`([\w.]+)`", match[2])})
    return layers


def _aliases() -> dict[str, str]:
    """The deprecated alias modules of docs/architecture.md: rows ``| `vrnnkit.old` | `vrnnkit.new` |``."""
    aliases = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`(vrnnkit\.\w+)`\s*\|\s*`(vrnnkit\.[\w.]+)`\s*\|", line)
        if match:
            aliases[match[1]] = match[2]
    return aliases


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_the_modules_of_vrnnkit():
    sources = _sources()
    graph = {name: _module_level_imports(path, name, set(sources)) for name, path in sources.items()}
    assert graph["vrnnkit.cli"] >= {"vrnnkit.cli.train", "vrnnkit.cli.common"}, "the import walk lost its way"
    assert "vrnnkit.model.vrnn" in graph["vrnnkit.model.objectives"], "imports under TYPE_CHECKING must count"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_package_imports_only_the_layers_below_it():
    """The rule of docs/architecture.md: a package imports packages of lower layers only (its
    own modules aside), anywhere in its code, functions included; nothing imports an alias."""
    layers, aliases, sources = _layers(), _aliases(), _sources()
    assert layers["errors"] == 0 and layers["model"] > layers["blocks"], "the layer table was not read"
    wrong = []
    for name, path in sources.items():
        if name in aliases:
            continue
        unit = _unit(name)
        if unit not in layers:
            wrong.append(f"{name}: its package {unit!r} is not in the table of docs/architecture.md")
            continue
        for target in sorted(_all_imports(path, name, set(sources))):
            if target in aliases:
                wrong.append(f"{name} imports the deprecated alias {target}")
            elif _unit(target) != unit and layers.get(_unit(target), 99) >= layers[unit]:
                wrong.append(f"{name} (layer {layers[unit]}) imports {target} (layer {layers.get(_unit(target))})")
    assert wrong == []


def _private_names_defined(paths: list[Path]) -> set[str]:
    """Every underscore name that ``paths`` define: functions, classes, assigned names and attributes."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_package_reaches_into_another_packages_private_names():
    """No ``from X import _name`` and no private module (``vrnnkit.api._music``) imported from
    another package; no ``obj._name`` used in a package that does not define ``_name`` (what
    an object of another package keeps private). ``vrnnkit._version`` is where packaging reads
    the version, imported as ``__version__``."""
    sources = _sources()
    by_unit: dict[str, list[Path]] = {}
    for name, path in sources.items():
        by_unit.setdefault(_unit(name), []).append(path)
    own = {unit: _private_names_defined(paths) for unit, paths in by_unit.items()}
    wrong = []
    for name, path in sources.items():
        unit = _unit(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vrnnkit") and _unit(node.module) != unit:
                private_module = any(_is_private(part) for part in node.module.split(".")[1:]) and node.module != "vrnnkit._version"
                names = [alias.name for alias in node.names if _is_private(alias.name)]
                if private_module or names:
                    wrong.append(f"{name}: from {node.module} import {', '.join(a.name for a in node.names)}")
            elif isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in own[unit] \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                wrong.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert wrong == []


def test_modules_stay_small_and_functions_short():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(PACKAGE).as_posix()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1
            docstring = node.body[0] if node.body else None
            if isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant) and isinstance(docstring.value.value, str):
                length -= docstring.end_lineno - docstring.lineno + 1
            if length > MAX_FUNCTION_LINES and (where, node.name) not in LONG_FUNCTIONS_ALLOWED:
                too_long.append(f"{where}: {node.name}() is {length} lines")
    assert too_long == []


@pytest.mark.parametrize("old", sorted(_aliases()))
def test_a_documented_old_module_path_still_imports_and_warns(old, monkeypatch):
    new = _aliases()[old]
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=rf"{re.escape(old)} moved to {re.escape(new)}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_every_old_module_path_the_docs_import_from_is_kept():
    """A module path that README.md, docs/ or examples/ import from is a module today."""
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*.py")]
    named = {m for path in texts for m in re.findall(r"(?:from|import) (vrnnkit(?:\.\w+)*)", path.read_text(encoding="utf-8"))}
    sources = _sources()
    assert named and all(module in sources for module in named), sorted(named - set(sources))

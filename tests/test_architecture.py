"""The package's shape, checked from its source: no import cycles, no layer importing upward,
and no blocking filesystem call inside an ``async def``.

Every import counts: module level, inside functions, and under ``TYPE_CHECKING``. The layers
are the ones drawn in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "ptero_backups_async"
NAME = "ptero_backups_async"

#: The core's modules, bottom first: a module may import only modules of a lower layer.
LAYERS: dict[str, int] = {
    "_version": 0,
    "_models": 0,
    "_retry": 0,
    "_errors": 1,
    "_sansio": 2,
    "_outcome": 2,
    "_fs": 2,
    "_converter": 3,
    "_pagination": 3,
    "_transport": 3,
    "_filelock": 3,
    "_linkget": 3,
    "_journal": 3,
    "_segments": 4,
    "_panel": 4,
    "_download": 5,
    "_stream": 6,
    "_events": 5,
    "_backups": 7,
    "_client": 8,
}
#: Above the core: the test helpers, the command line (its demo runs FakePanel), the entry points.
TOP = {"testing": 9, "_cli": 10, "__init__": 11, "__main__": 12}


def modules() -> dict[str, pathlib.Path]:
    """Every module of the package, by dotted name below the package (``_cli._app``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    package = name.split(".") if is_package else name.split(".")[:-1]
    if name == "__init__":
        package = []
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [
                alias.name[len(NAME) + 1 :]
                for alias in node.names
                if alias.name.startswith(NAME + ".")
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith(NAME):
                module = node.module[len(NAME) + 1 :]
            else:
                continue
            # `from . import _fs` names a module; `from ._x import y` names module _x.
            candidates = [f"{module}.{a.name}".lstrip(".") for a in node.names]
            targets = [c for c in candidates if c in known] or [module]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found) | {"__init__"}
    return {name: imports_of(name, path, known) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def rank(module: str) -> int:
    head = module.split(".")[0]
    if head in LAYERS:
        return LAYERS[head]
    return TOP[head]


def test_every_module_has_a_layer() -> None:
    for name in modules():
        head = name.split(".")[0]
        assert head in LAYERS or head in TOP, f"{name} is in no layer: add it to LAYERS"


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_layer_imports_upward() -> None:
    upward = [
        f"{name} (layer {rank(name)}) imports {target} (layer {rank(target)})"
        for name, targets in graph().items()
        for target in targets
        if name.split(".")[0] != target.split(".")[0] and rank(target) >= rank(name)
    ]
    assert upward == []


# ------------------------------------------------------------------ blocking calls


BLOCKING_OS = {
    "chmod",
    "fsync",
    "link",
    "listdir",
    "lstat",
    "makedirs",
    "mkdir",
    "open",
    "readlink",
    "remove",
    "rename",
    "replace",
    "rmdir",
    "scandir",
    "stat",
    "symlink",
    "unlink",
    "utime",
    "walk",
}
BLOCKING_OS_PATH = {
    "exists",
    "getmtime",
    "getsize",
    "isdir",
    "isfile",
    "islink",
    "lexists",
    "realpath",
    "samefile",
}
BLOCKING_PATH_METHODS = {
    "exists",
    "glob",
    "is_dir",
    "is_file",
    "is_symlink",
    "iterdir",
    "lstat",
    "mkdir",
    "read_bytes",
    "read_text",
    "rglob",
    "rmdir",
    "stat",
    "touch",
    "unlink",
    "write_bytes",
    "write_text",
}


def _async_bodies(tree: ast.AST) -> Iterator[ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef):
            yield node


def _own_nodes(function: ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """The nodes of ``function`` outside nested functions, lambdas and classes."""
    todo: list[ast.AST] = list(function.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def blocking_calls(source: str) -> list[str]:
    """``name: call`` for each blocking filesystem call directly inside an ``async def``."""
    found = []
    for function in _async_bodies(ast.parse(source)):
        for node in _own_nodes(function):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            text = ast.unparse(func)
            if isinstance(func, ast.Name) and func.id == "open":
                found.append(f"{function.name}: {text}")
            elif isinstance(func, ast.Attribute):
                owner = ast.unparse(func.value)
                if (
                    (owner == "os" and func.attr in BLOCKING_OS)
                    or (owner == "os.path" and func.attr in BLOCKING_OS_PATH)
                    or owner == "shutil"
                    or (func.attr in BLOCKING_PATH_METHODS and owner not in ("_fs", "aiofiles.os"))
                ):
                    found.append(f"{function.name}: {text}")
    return found


def test_the_blocking_call_finder_finds_them() -> None:
    source = (
        "async def f(p):\n"
        "    os.stat(p); p.exists(); open(p); os.path.isdir(p); shutil.copy(p, p)\n"
        "    def inner():\n"
        "        os.unlink(p)\n"
        "    await _fs.exists(p)\n"
    )
    assert blocking_calls(source) == [
        "f: shutil.copy",
        "f: os.path.isdir",
        "f: open",
        "f: p.exists",
        "f: os.stat",
    ]


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_blocking_filesystem_call_in_an_async_def(name: str) -> None:
    assert blocking_calls(modules()[name].read_text()) == []

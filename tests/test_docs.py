"""The API reference covers every public name, and every public callable documents itself.

The reference pages (docs/reference/*.md) render the docstrings with mkdocstrings: a
``::: ptero_backups_async.Name`` line per public name. A name exported without such a line
would be missing from the site; a parameter left out of its docstring's ``Args:`` would be
missing from the page. Docstrings are Google style (``Args:``, ``Attributes:``, ``Raises:``,
``Returns:``). Building the site itself is ``mkdocs build --strict``, not a test.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import itertools
import pathlib
import re
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

import ptero_backups_async
import ptero_backups_async.testing

ROOT = pathlib.Path(__file__).parents[1]
REFERENCE = ROOT / "docs" / "reference"
PACKAGE = ROOT / "ptero_backups_async"
MODULES: tuple[ModuleType, ...] = (ptero_backups_async, ptero_backups_async.testing)

#: A mkdocstrings directive: ``::: dotted.path`` alone on its line.
DIRECTIVE = re.compile(r"^:::[ \t]+([\w.]+)[ \t]*$", re.MULTILINE)
#: A Google-style section header, at the docstring's own indentation.
SECTION = re.compile(r"^([A-Z][A-Za-z ]*):\s*$")
#: An entry of an ``Args:`` or ``Attributes:`` section: ``name:`` or ``name (type):``.
ENTRY = re.compile(r"^ {4}(\*{0,2}\w+)(?: \([^)]*\))?:(?: |$)")
#: Sections whose entries name parameters (attrs classes document their fields as attributes).
PARAMETER_SECTIONS = ("Args", "Attributes")


def _public_names() -> list[tuple[str, str]]:
    return [(module.__name__, name) for module in MODULES for name in module.__all__]


def _directives() -> dict[str, pathlib.Path]:
    found: dict[str, pathlib.Path] = {}
    for page in sorted(REFERENCE.glob("*.md")):
        for target in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            found[target] = page
    return found


def _resolve(dotted: str) -> object:
    """The object a directive names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise LookupError(dotted)


def _sections(doc: str) -> dict[str, list[str]]:
    """Each Google-style section of a cleaned docstring, by title, with its entry names."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in inspect.cleandoc(doc).splitlines():
        header = SECTION.match(line)
        if header:
            current = sections.setdefault(header.group(1), [])
        elif line and not line[0].isspace():
            current = None  # back to prose
        elif current is not None:
            entry = ENTRY.match(line)
            if entry:
                current.append(entry.group(1).lstrip("*"))
    return sections


def _parameters(func: Callable[..., object]) -> list[str]:
    names = list(inspect.signature(func).parameters)
    return [name for name in names if name not in ("self", "cls")]


def _documented(*docs: str | None) -> set[str]:
    names: set[str] = set()
    for doc in docs:
        sections = _sections(doc or "")
        names.update(name for title in PARAMETER_SECTIONS for name in sections.get(title, []))
    return names


def _is_ours(cls: type) -> bool:
    return cls.__module__.startswith("ptero_backups_async")


def _callables() -> Iterator[tuple[str, Callable[..., object], tuple[str | None, ...]]]:
    """Every public function and method: (qualified name, callable, docstrings to look in)."""
    for module, name in _public_names():
        obj = getattr(importlib.import_module(module), name)
        if inspect.isfunction(obj):
            yield f"{module}.{name}", obj, (obj.__doc__,)
        if not isinstance(obj, type) or not _is_ours(obj):
            continue
        if "__init__" in vars(obj) and not issubclass(obj, enum.Enum):
            # mkdocstrings shows the class docstring with the constructor's parameters.
            yield f"{module}.{name}", obj.__init__, (obj.__doc__, obj.__init__.__doc__)
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            if isinstance(member, (classmethod, staticmethod)):
                member = member.__func__
            if inspect.isfunction(member):
                yield f"{module}.{name}.{attr}", member, (member.__doc__,)


def _properties() -> Iterator[tuple[str, property]]:
    for module, name in _public_names():
        obj = getattr(importlib.import_module(module), name)
        if isinstance(obj, type) and _is_ours(obj):
            for attr, member in vars(obj).items():
                if isinstance(member, property) and not attr.startswith("_"):
                    yield f"{module}.{name}.{attr}", member


def _value_docstring(name: str) -> str | None:
    """The string literal right after the top-level assignment of ``name`` in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for statement, following in itertools.pairwise(body):
            targets: list[ast.expr] = []
            if isinstance(statement, ast.Assign):
                targets = statement.targets
            elif isinstance(statement, ast.AnnAssign):
                targets = [statement.target]
            if not any(isinstance(t, ast.Name) and t.id == name for t in targets):
                continue
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                value = following.value.value
                if isinstance(value, str) and value.strip():
                    return value
    return None


@pytest.mark.parametrize(("module", "name"), _public_names())
def test_every_public_name_is_on_a_reference_page(module: str, name: str) -> None:
    directives = _directives()
    assert f"{module}.{name}" in directives or module in directives, (
        f"{module}.{name} is public but no docs/reference/*.md page has '::: {module}.{name}'"
    )


def test_every_directive_names_an_existing_object() -> None:
    directives = _directives()
    assert directives, f"no '::: name' directive in {REFERENCE}"
    for target, page in directives.items():
        try:
            _resolve(target)
        except (LookupError, AttributeError) as exc:
            pytest.fail(f"{page.name}: '::: {target}' names nothing ({exc!r})")


@pytest.mark.parametrize(("module", "name"), _public_names())
def test_every_public_name_has_a_docstring(module: str, name: str) -> None:
    obj = getattr(importlib.import_module(module), name)
    if isinstance(obj, type) or inspect.isfunction(obj):
        doc = obj.__doc__
    else:  # a constant or a type alias: the string after its assignment
        doc = _value_docstring(name)
    assert doc is not None, f"{module}.{name} has no docstring"
    assert doc.strip(), f"{module}.{name} has an empty docstring"


def test_every_public_callable_documents_its_parameters() -> None:
    problems = []
    for qualname, func, docs in _callables():
        if not any((doc or "").strip() for doc in docs):
            problems.append(f"{qualname}: no docstring")
            continue
        parameters = _parameters(func)
        documented = _documented(*docs)
        missing = [p for p in parameters if p not in documented]
        if missing:
            problems.append(f"{qualname}: parameters not documented: {', '.join(missing)}")
        in_args = {name for doc in docs for name in _sections(doc or "").get("Args", [])}
        stale = in_args - set(parameters)
        if stale:
            problems.append(f"{qualname}: Args names no parameter: {', '.join(sorted(stale))}")
    assert not problems, "\n".join(problems)


def test_every_public_property_has_a_docstring() -> None:
    missing = [name for name, prop in _properties() if not (prop.__doc__ or "").strip()]
    assert not missing, f"properties without a docstring: {missing}"


def test_the_section_parser_reads_google_style() -> None:
    doc = """Do a thing.

    More prose.

    Args:
        first: the first.
        second (int): the second,
            on two lines.
        **kwargs: the rest.

    Raises:
        ValueError: when it must.
    """
    assert _sections(doc) == {"Args": ["first", "second", "kwargs"], "Raises": ["ValueError"]}

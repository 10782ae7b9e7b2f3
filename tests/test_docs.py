"""Every Python example of the documentation runs, so none can go stale.

Each page of ``docs/`` and the README is one test: its ``.. code-block::
python`` blocks and its ``>>>`` examples run in page order, sharing one
namespace, in a fresh temporary working directory, with Django configured from
``tests/settings.py``; ``__file__`` names ``mysite/settings.py`` in that
directory, so a settings snippet's ``BASE_DIR`` is the working directory.
The docstrings of every module of the package run as doctests, one test per
module.  A failure names the page (or module) and the line of the example.

Non-Python text is marked ``console``, ``bash``, ``ini`` or ``text`` and never
runs; an unmarked literal block (``::``) that is not a ``>>>`` example is
refused, so that no example escapes execution by accident.
"""

from __future__ import annotations

import contextlib
import dataclasses
import doctest
import importlib
import importlib.util
import io
import logging
import os
import pkgutil
import re
import textwrap
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from django.test import override_settings

import django_snapshots

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

PYTHON_LANGUAGES = frozenset({"python", "python3", "py", "py3"})
DOCTEST_LANGUAGES = frozenset({"pycon"})
DOCTEST_FLAGS = doctest.ELLIPSIS


@dataclass(frozen=True)
class Example:
    """One runnable example: *source* starts on *line* (1-based) of *page*."""

    page: str
    line: int
    source: str
    doctest: bool


@dataclass(frozen=True)
class Problem:
    page: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.page}, line {self.line}: {self.message}"


# --------------------------------------------------------------------------
# Extraction

_CODE_DIRECTIVE = re.compile(
    r"^(?P<indent>\s*)\.\.\s+(?P<name>code-block|code|sourcecode|doctest)::\s*(?P<lang>\S*)\s*$"
)
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_after(lines: list[str], start: int, parent_indent: int) -> tuple[int, list[str], int]:
    """Return (first content line index, content lines, index after the block)
    of the block indented under a line of *parent_indent*, options skipped."""
    index = start
    while (
        index < len(lines)
        and lines[index].strip().startswith(":")
        and _indent(lines[index]) > parent_indent
    ):
        index += 1  # directive options such as ``:caption:``
    content: list[str] = []
    first = None
    while index < len(lines):
        line = lines[index]
        if line.strip() and _indent(line) <= parent_indent:
            break
        if line.strip() and first is None:
            first = index
        if first is not None:
            content.append(line)
        index += 1
    while content and not content[-1].strip():
        content.pop()
    return (first if first is not None else start), content, index


def extract_rst(text: str, page: str) -> tuple[list[Example], list[Problem]]:
    """Return the runnable examples of a reStructuredText page, in order, and
    the literal blocks that are neither runnable nor marked as another language."""
    lines = text.splitlines()
    examples: list[Example] = []
    problems: list[Problem] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _CODE_DIRECTIVE.match(line)
        if directive:
            first, content, index = _block_after(lines, index + 1, len(directive["indent"]))
            language = "pycon" if directive["name"] == "doctest" else directive["lang"].lower()
            source = textwrap.dedent("\n".join(content))
            if not language:
                problems.append(Problem(page, first + 1, "a code block without a language"))
            elif language in PYTHON_LANGUAGES | DOCTEST_LANGUAGES and source.strip():
                is_doctest = language in DOCTEST_LANGUAGES or source.lstrip().startswith(">>>")
                examples.append(Example(page, first + 1, source, is_doctest))
            continue
        stripped = line.strip()
        if stripped.endswith("::") and not stripped.startswith(".."):
            first, content, end = _block_after(lines, index + 1, _indent(line))
            if content:
                source = textwrap.dedent("\n".join(content))
                if source.startswith(">>>"):
                    examples.append(Example(page, first + 1, source, True))
                else:
                    problems.append(
                        Problem(
                            page,
                            first + 1,
                            "a literal block (::) that is not a >>> example; mark it with "
                            "'.. code-block:: python' (it then runs) or console/bash/ini/text",
                        )
                    )
                index = end
                continue
        if stripped.startswith(">>>") and (index == 0 or not lines[index - 1].strip()):
            start = index
            while index < len(lines) and lines[index].strip():
                index += 1
            source = textwrap.dedent("\n".join(lines[start:index]))
            examples.append(Example(page, start + 1, source, True))
            continue
        index += 1
    return examples, problems


def extract_markdown(text: str, page: str) -> list[Example]:
    """Return the ``python`` and ``pycon`` fenced blocks of a Markdown page."""
    lines = text.splitlines()
    examples: list[Example] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        marker, language = fence["fence"], fence["lang"].lower()
        start = index + 1
        index = start
        while index < len(lines) and not lines[index].strip().startswith(marker):
            index += 1
        source = textwrap.dedent("\n".join(lines[start:index]))
        index += 1
        if language in PYTHON_LANGUAGES | DOCTEST_LANGUAGES and source.strip():
            is_doctest = language in DOCTEST_LANGUAGES or source.lstrip().startswith(">>>")
            examples.append(Example(page, start + 1, source, is_doctest))
    return examples


def page_examples(path: Path) -> tuple[list[Example], list[Problem]]:
    page = path.relative_to(ROOT).as_posix()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return extract_markdown(text, page), []
    return extract_rst(text, page)


# --------------------------------------------------------------------------
# Running


def run_examples(examples: list[Example], namespace: dict[str, Any] | None = None) -> None:
    """Run *examples* in order in one namespace; fail naming page and line."""
    namespace = {"__name__": "__docs__"} if namespace is None else namespace
    for example in examples:
        if example.doctest:
            _run_doctest(example, namespace)
        else:
            _run_code(example, namespace)


def _run_code(example: Example, namespace: dict[str, Any]) -> None:
    # Padding keeps the page's line numbers in the traceback.
    code = compile("\n" * (example.line - 1) + example.source, example.page, "exec")
    try:
        exec(code, namespace)
    except Exception as error:
        details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        message = (
            f"{example.page}, line {example.line}: the code block raised "
            f"{type(error).__name__}: {error}\n\n{details}"
        )
    else:
        return
    pytest.fail(message, pytrace=False)


def _run_doctest(example: Example, namespace: dict[str, Any]) -> None:
    test = doctest.DocTestParser().get_doctest(
        example.source, namespace, example.page, example.page, example.line - 1
    )
    test.globs = namespace  # DocTest copies its globals; later examples need these
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    runner.run(test, out=report.append, clear_globs=False)
    if runner.failures:
        pytest.fail(
            f"{example.page}, line {example.line}: {runner.failures} doctest example(s) "
            f"failed\n{''.join(report)}",
            pytrace=False,
        )


@contextlib.contextmanager
def isolated(directory: Path) -> Iterator[None]:
    """Run a page in *directory* and undo what it may change globally:
    working directory, environment, Django settings, structlog and logging."""
    cwd = os.getcwd()
    environ = dict(os.environ)
    structlog_config = structlog.get_config()
    loggers = [logging.getLogger(), *_existing_loggers()]
    logger_state = [(lg, list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers]
    os.chdir(directory)
    try:
        with override_settings():
            yield
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        structlog.configure(**structlog_config)
        for lg in _existing_loggers():
            if lg not in loggers:
                lg.handlers.clear()
                lg.propagate = True
                lg.disabled = False
                lg.setLevel(logging.NOTSET)
        for lg, handlers, level, propagate, disabled in logger_state:
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
            lg.disabled = disabled


def _existing_loggers() -> list[logging.Logger]:
    return [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]


# --------------------------------------------------------------------------
# The documentation's examples


def _pages() -> list[Path]:
    pages = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)
    if README.exists():
        pages.append(README)
    return pages


def _pages_with_examples() -> list[Any]:
    return [
        pytest.param(path, id=path.relative_to(ROOT).as_posix())
        for path in _pages()
        if page_examples(path)[0]
    ]


@pytest.mark.parametrize("path", _pages_with_examples())
def test_every_python_example_of_the_page_runs(path: Path, tmp_path: Path) -> None:
    examples, _ = page_examples(path)
    # A settings.py snippet computes BASE_DIR from __file__: make that the
    # working directory, as if the page were ``mysite/settings.py`` in it.
    namespace = {"__name__": "__docs__", "__file__": str(tmp_path / "mysite" / "settings.py")}
    with isolated(tmp_path):
        run_examples(examples, namespace)


def test_docs_mark_every_literal_block_with_its_language() -> None:
    problems = [str(p) for path in _pages() for p in page_examples(path)[1]]
    assert not problems, "\n".join(problems)


def test_the_documentation_has_runnable_examples() -> None:
    # Guards the extraction itself: a regression that finds nothing would
    # otherwise pass every page silently.
    pages = [p for p in _pages() if p.suffix == ".rst" and page_examples(p)[0]]
    assert DOCS / "index.rst" in pages
    assert len(pages) >= 2


# --------------------------------------------------------------------------
# The package's docstrings


def _modules(*, private: bool = False) -> list[str]:
    names = [django_snapshots.__name__]
    for info in pkgutil.walk_packages(django_snapshots.__path__, "django_snapshots."):
        parts = info.name.split(".")
        if parts[-1] == "__main__":
            continue  # importing it would run the command line
        if private or not any(part.startswith("_") for part in parts):
            names.append(info.name)
    return sorted(names)


def _module_path(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"cannot locate the source of {name}")
    return Path(spec.origin)


def docstring_examples(
    module: Any,
) -> tuple[list[tuple[dict[str, Any], list[Example]]], list[Problem]]:
    """Return, for every docstring of *module*, its namespace (a copy of the
    module's globals) and examples, and the unmarked literal blocks; line
    numbers are those of the module's file."""
    path = Path(module.__file__).resolve()
    page = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    groups: list[tuple[dict[str, Any], list[Example]]] = []
    problems: list[Problem] = []
    for test in doctest.DocTestFinder(exclude_empty=False).find(module, module.__name__):
        if not test.docstring:
            continue
        offset = test.lineno or 0  # the docstring's first line, 0-based
        examples, found = extract_rst(test.docstring, page)
        if examples:
            shifted = [dataclasses.replace(e, line=e.line + offset) for e in examples]
            groups.append((test.globs, shifted))
        problems.extend(dataclasses.replace(p, line=p.line + offset) for p in found)
    return groups, problems


def _modules_with_examples() -> list[str]:
    markers = (">>>", "code-block:: python")
    return [
        name
        for name in _modules(private=True)
        if any(marker in _module_path(name).read_text("utf-8") for marker in markers)
    ]


@pytest.mark.parametrize("module_name", _modules_with_examples())
def test_every_docstring_example_of_the_module_runs(module_name: str, tmp_path: Path) -> None:
    groups, _ = docstring_examples(importlib.import_module(module_name))
    assert groups, f"{module_name} mentions an example, but none was found in a docstring"
    with isolated(tmp_path):
        for namespace, examples in groups:
            run_examples(examples, namespace)


def test_docstrings_mark_every_literal_block_with_its_language() -> None:
    problems = [
        str(problem)
        for name in _modules(private=True)
        for problem in docstring_examples(importlib.import_module(name))[1]
    ]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# The API reference


_AUTO_DIRECTIVE = re.compile(
    r"^\s*\.\.\s+(?:py:)?(?P<kind>automodule|autoclass|autofunction|autoexception|autodata"
    r"|module|currentmodule|data|class|function|exception)::\s*(?P<name>\S+)\s*$"
)


def _documented_objects() -> dict[int, str]:
    documented: dict[int, str] = {}
    for path in sorted((DOCS / "reference").glob("*.rst")):
        lines = path.read_text("utf-8").splitlines()
        current = ""
        for index, line in enumerate(lines):
            match = _AUTO_DIRECTIVE.match(line)
            if not match:
                continue
            kind, name = match["kind"], match["name"]
            if kind in {"module", "currentmodule"}:
                current = name
                continue
            dotted = name if kind == "automodule" or "." in name else f"{current}.{name}"
            obj = _resolve(dotted)
            documented[id(obj)] = dotted
            options = []
            for option in lines[index + 1 :]:
                if not option.strip().startswith(":"):
                    break
                options.append(option.strip())
            if kind == "automodule" and ":members:" in options:
                for member in getattr(obj, "__all__", ()):
                    documented[id(getattr(obj, member))] = f"{dotted}.{member}"
    return documented


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_the_reference_documents_every_public_name() -> None:
    documented = _documented_objects()
    missing = []
    for module_name in _modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            if id(getattr(module, name)) not in documented:
                missing.append(f"{module_name}.{name}")
    assert not missing, "not in docs/reference: " + ", ".join(missing)


# --------------------------------------------------------------------------
# The machinery above, on pages written for the purpose

_PAGE = """\
Title
=====

.. code-block:: python
   :caption: setup

   greeting = "hello"

Text.

>>> greeting.upper()
'HELLO'

.. code-block:: console

   $ python -c "raise SystemExit(1)"
   >>> this_is_not_run

.. note::

   .. code-block:: python

      shout = greeting.upper() + "!"

Shown as an example::

   >>> shout
   'HELLO!'
"""


def test_extraction_finds_python_blocks_and_doctests_in_page_order() -> None:
    examples, problems = extract_rst(_PAGE, "page.rst")
    assert [(e.line, e.doctest) for e in examples] == [
        (7, False),
        (11, True),
        (23, False),
        (27, True),
    ]
    assert examples[2].source == 'shout = greeting.upper() + "!"'
    assert problems == []


def test_extraction_skips_console_blocks_even_when_they_contain_prompts() -> None:
    examples, _ = extract_rst(_PAGE, "page.rst")
    assert not any("this_is_not_run" in e.source for e in examples)


def test_examples_of_one_page_share_a_namespace() -> None:
    namespace: dict[str, Any] = {}
    run_examples(extract_rst(_PAGE, "page.rst")[0], namespace)
    assert namespace["shout"] == "HELLO!"


def test_names_defined_in_a_doctest_reach_the_following_examples() -> None:
    page = "T\n=\n\n>>> answer = 42\n\n.. code-block:: python\n\n   assert answer == 42\n"
    namespace: dict[str, Any] = {}
    run_examples(extract_rst(page, "docs/names.rst")[0], namespace)
    assert namespace["answer"] == 42


def test_an_unmarked_literal_block_is_reported_with_its_line() -> None:
    page = "Title\n=====\n\nA tree::\n\n   snapshots/\n     db.dump\n\n.. code-block::\n\n   x\n"
    examples, problems = extract_rst(page, "docs/tree.rst")
    assert examples == []
    assert [str(p).split(":")[0] for p in problems] == [
        "docs/tree.rst, line 6",
        "docs/tree.rst, line 11",
    ]


def test_a_failing_code_block_names_its_page_and_line() -> None:
    page = "T\n=\n\n.. code-block:: python\n\n   x = 1\n   y = x / 0\n"
    with pytest.raises(pytest.fail.Exception) as failure:
        run_examples(extract_rst(page, "docs/broken.rst")[0])
    message = str(failure.value)
    assert message.startswith("docs/broken.rst, line 6: the code block raised ZeroDivisionError")
    assert 'File "docs/broken.rst", line 7' in message


def test_a_failing_doctest_names_its_page_and_line() -> None:
    page = "T\n=\n\nFirst.\n\n>>> 1 + 1\n2\n>>> 2 + 2\n5\n"
    with pytest.raises(pytest.fail.Exception) as failure:
        run_examples(extract_rst(page, "docs/wrong.rst")[0])
    message = str(failure.value)
    assert message.startswith("docs/wrong.rst, line 6: 1 doctest example(s) failed")
    assert 'File "docs/wrong.rst", line 8' in message
    assert "Expected:\n    5\nGot:\n    4" in message


def test_markdown_fences_of_python_run_and_others_do_not() -> None:
    text = "# T\n\n```console\n$ ls\n```\n\n```python\nx = 1\n```\n\n```pycon\n>>> x\n1\n```\n"
    examples = extract_markdown(text, "README.md")
    assert [(e.line, e.doctest, e.source) for e in examples] == [
        (8, False, "x = 1"),
        (12, True, ">>> x\n1"),
    ]
    run_examples(examples)


def test_a_page_runs_in_an_empty_directory_and_leaves_no_trace(tmp_path: Path) -> None:
    from django.conf import settings

    page = (
        "T\n=\n\n.. code-block:: python\n\n"
        "   import os, logging, structlog\n"
        "   from django.conf import settings\n"
        "   assert os.listdir('.') == []\n"
        "   open('artifact.dump', 'wb').close()\n"
        "   os.environ['SNAPSHOTS_DOCS_PROBE'] = '1'\n"
        "   settings.SNAPSHOTS_DOCS_PROBE = 1\n"
        "   structlog.configure(processors=[])\n"
        "   logging.getLogger('docs.probe').disabled = True\n"
        "   logging.getLogger().addHandler(logging.NullHandler())\n"
    )
    root_handlers = list(logging.getLogger().handlers)
    processors = structlog.get_config()["processors"]
    cwd = os.getcwd()
    logging.getLogger("docs.probe")
    with isolated(tmp_path):
        run_examples(extract_rst(page, "docs/probe.rst")[0])
    assert (tmp_path / "artifact.dump").exists()
    assert os.getcwd() == cwd
    assert "SNAPSHOTS_DOCS_PROBE" not in os.environ
    assert not hasattr(settings, "SNAPSHOTS_DOCS_PROBE")
    assert structlog.get_config()["processors"] == processors
    assert logging.getLogger("docs.probe").disabled is False
    assert logging.getLogger().handlers == root_handlers


def test_doctest_output_is_compared_exactly_apart_from_ellipses() -> None:
    good = Example("docs/e.rst", 1, ">>> print('a long line')\na ... line", True)
    run_examples([good])
    bad = Example("docs/e.rst", 1, ">>> print('a  b')\na b", True)
    with pytest.raises(pytest.fail.Exception):
        run_examples([bad])


def test_the_reference_check_sees_names_documented_by_automodule() -> None:
    documented = _documented_objects()
    from django_snapshots.exceptions import SnapshotError
    from django_snapshots.storage.keys import validate_key

    assert id(SnapshotError) in documented
    assert id(validate_key) in documented
    assert id(io.BytesIO) not in documented


def _load_module(path: Path, source: str) -> Any:
    path.write_text(source, "utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_MODULE = '''\
"""A module.

Its settings::

    DOUBLE = 2
"""

FACTOR = 2


def double(value):
    """Return twice *value*.

    .. code-block:: python

       assert double(FACTOR) == 4

    >>> double(2)
    5
    """
    return value * FACTOR
'''


def test_docstring_examples_run_in_the_module_namespace_with_file_lines(tmp_path: Path) -> None:
    groups, problems = docstring_examples(_load_module(tmp_path / "sample.py", _MODULE))
    [(namespace, examples)] = groups
    assert namespace["FACTOR"] == 2
    assert [(e.line, e.doctest) for e in examples] == [(16, False), (18, True)]
    assert [str(p).split(":")[0] for p in problems] == [f"{tmp_path / 'sample.py'}, line 5"]
    with pytest.raises(pytest.fail.Exception) as failure:
        run_examples(examples, namespace)
    assert f'File "{tmp_path / "sample.py"}", line 18' in str(failure.value)

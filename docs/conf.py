"""Sphinx configuration for the django-snapshots documentation."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from importlib.metadata import version as distribution_version
from pathlib import Path
from typing import Any

import django
from django.conf import settings
from docutils import nodes
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# autodoc imports modules that read Django settings; give them a minimal,
# self-contained configuration instead of depending on a project.
if not settings.configured:
    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_snapshots",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
    )
    django.setup()

project = "django-snapshots"
author = "django-snapshots contributors"
copyright = "django-snapshots contributors"
release = distribution_version("django-snapshots")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
root_doc = "index"
nitpicky = True
# The type variable of a decorator's signature: a method in, the same method out.
nitpick_ignore = [
    ("py:class", "django_snapshots.storage.wrappers.base._Method"),
    # obstore's store types: the package has no documentation inventory here.
    ("py:class", "ObjectStore"),
]

# Shell, ini and text snippets are marked as such; an unmarked ``::`` block
# must not be mistaken for Python, which the test suite executes.
highlight_language = "text"

autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
autoclass_content = "both"

html_theme = "furo"
html_title = f"django-snapshots {release}"
html_static_path: list[str] = []


# No intersphinx inventories are reachable when the docs are built offline, so
# references are resolved here: a name the library re-exports (for instance
# ``django_snapshots.SnapshotStorage`` or the defining module's
# ``django_snapshots.storage.protocols.SnapshotStorage``) links to the page
# where the object is documented, and a reference to an object of Python or of
# another library renders as plain code.  A reference to one of the library's
# own objects that is documented nowhere still fails the build.

_PY_ROLES = {"class", "exc", "func", "meth", "obj", "data", "attr", "mod", "const"}


def _import_dotted(name: str) -> tuple[bool, Any]:
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        except Exception:
            return False, None
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False, None
        return True, obj
    return False, None


_documented: dict[int, str] = {}


def _forget_documented(app: Any, env: Any) -> None:
    # Called once every page has been read: the next lookup rebuilds the map.
    _documented.clear()


def _documented_by_identity(env: Any) -> dict[int, str]:
    if not _documented:
        for fullname in env.get_domain("py").objects:
            found, obj = _import_dotted(fullname)
            if found and obj is not None:
                _documented.setdefault(id(obj), fullname)
    return _documented


def _resolve_missing(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") == "std" and node.get("reftype") == "envvar":
        # The library documents no environment variable of its own: the
        # references are to the system's (TMPDIR) or rclone's, shown as is.
        return contnode
    if node.get("refdomain") != "py" or node.get("reftype") not in _PY_ROLES:
        return None
    target = node["reftarget"]
    if "." in target and target.split(".")[0] != "django_snapshots":
        # Python's or another library's object: nothing to link to offline.
        return contnode
    candidates = [target]
    module, cls = node.get("py:module"), node.get("py:class")
    if module and "." not in target:
        if cls:
            candidates.append(f"{module}.{cls}.{target}")
        candidates.append(f"{module}.{target}")
        # A short name in a signature is a name of the module that defines
        # the documented class, which may differ from the one it is shown in.
        found, owner_class = _import_dotted(f"{module}.{cls}") if cls else (False, None)
        defining = getattr(owner_class, "__module__", None) if found else None
        if isinstance(defining, str) and defining != module:
            candidates.append(f"{defining}.{target}")
    for candidate in candidates:
        found, obj = _import_dotted(candidate)
        if not found:
            continue
        # Classes, functions and modules know where they come from; a plain
        # value (a constant) belongs to the module it was looked up in.
        owner = getattr(obj, "__module__", None) or getattr(obj, "__name__", None)
        if not isinstance(owner, str):
            owner = candidate
        ours = owner.split(".")[0] == "django_snapshots"
        if not ours:
            return contnode
        documented = _documented_by_identity(env).get(id(obj))
        if documented is None:
            return None
        return env.get_domain("py").resolve_xref(
            env, node["refdoc"], app.builder, "obj", documented, node, contnode
        )
    return None


def _hide_private_bases(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    # Show a class's public ancestry only: a private base is an implementation
    # detail, so it is replaced by its own bases.
    index = 0
    while index < len(bases):
        base = bases[index]
        if getattr(base, "__name__", "").startswith("_"):
            bases[index : index + 1] = [b for b in base.__bases__ if b is not object]
        else:
            index += 1


_new_overloads: dict[tuple[str, str], list[inspect.Signature]] = {}


def _wrapper_signature(
    app: Any, what: str, name: str, obj: Any, options: Any, args: str | None, retann: str
) -> tuple[str, str] | None:
    # A wrapper's __new__ overloads exist for type checkers (they map the
    # storage's tier to the wrapper's); shown as signatures they would list
    # every option twice with "..." defaults.  Show the one call users write,
    # with its real defaults, instead.
    from django_snapshots.storage.wrappers.base import StorageWrapper

    if what not in {"class", "exception"} or not isinstance(obj, type):
        return None
    if getattr(obj, "_is_protocol", False):
        return "", ""  # a protocol is implemented, never instantiated
    if not issubclass(obj, StorageWrapper) or obj is StorageWrapper:
        return None
    from sphinx.pycode import ModuleAnalyzer

    overloads: list[inspect.Signature] = []
    for cls in obj.__mro__:
        if not cls.__module__.startswith("django_snapshots."):
            continue
        analyzer = ModuleAnalyzer.for_module(cls.__module__)
        analyzer.analyze()
        qualname = f"{cls.__qualname__}.__new__"
        if qualname in analyzer.overloads:
            _new_overloads[cls.__module__, qualname] = analyzer.overloads.pop(qualname)
        overloads = overloads or _new_overloads.get((cls.__module__, qualname), [])
    signature = inspect.signature(obj.__init__)
    parameters = list(signature.parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters) and overloads:
        parameters = list(overloads[0].parameters.values())[1:]
    plain = [p.replace(annotation=inspect.Parameter.empty) for p in parameters]
    return str(signature.replace(parameters=plain, return_annotation=inspect.Signature.empty)), ""


class CommandHelp(SphinxDirective):
    """``.. snapshots-help:: [COMMAND]``: the ``--help`` text of the command
    line, produced by the command line itself while the docs are built, so
    the reference cannot drift from the program."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        command = [sys.executable, "-m", "django_snapshots", *self.arguments, "--help"]
        environ = {**os.environ, "COLUMNS": "88", "NO_COLOR": "1", "PYTHON_COLORS": "0"}
        environ.pop("DJANGO_SETTINGS_MODULE", None)
        result = subprocess.run(
            command, capture_output=True, text=True, env=environ, cwd=ROOT, check=False
        )
        if result.returncode != 0:
            raise self.error(f"{' '.join(command[1:])} failed: {result.stderr.strip()}")
        block = nodes.literal_block(result.stdout, result.stdout)
        block["language"] = "text"
        return [block]


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("snapshots-help", CommandHelp)
    app.connect("autodoc-process-signature", _wrapper_signature)
    app.connect("env-check-consistency", _forget_documented)
    app.connect("missing-reference", _resolve_missing)
    app.connect("autodoc-process-bases", _hide_private_bases)
    return {"parallel_read_safe": True}

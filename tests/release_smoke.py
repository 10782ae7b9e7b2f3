"""Build the release, check it, and smoke-test the wheel in a fresh virtual environment.

``tox -e release`` runs this script.  It

1. builds the sdist with ``python -m build``, and the wheel from the sdist;
2. runs ``twine check --strict`` on both;
3. checks what each archive contains: the wheel ships the package and
   ``py.typed`` and nothing else, the sdist also carries the docs, the tests,
   the changelog and ``tox.ini``, and neither carries build or cache debris;
4. creates a new virtual environment, installs the wheel into it (its
   dependencies come from the package index) and runs the smoke test below
   there, from an empty directory, so the source tree cannot stand in for the
   installed package;
5. installs pytest next to it and runs the conformance kit of
   ``django_snapshots.testing`` on an installed stack;
6. runs the command line installed with the wheel: ``--help``, ``check`` and
   ``demo`` in an empty directory.

``python tests/release_smoke.py --outdir dist`` keeps the archives in ``dist``.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SDIST_REQUIRED = (
    "pyproject.toml",
    "README.md",
    "CHANGELOG.md",
    "tox.ini",
    "MANIFEST.in",
    "django_snapshots/__init__.py",
    "django_snapshots/py.typed",
    "docs/conf.py",
    "docs/index.rst",
    "tests/__init__.py",
    "tests/settings.py",
    "tests/conftest.py",
    "tests/test_docs.py",
    "tests/typing/check_tiers.py",
    "tests/release_smoke.py",
)
WHEEL_REQUIRED = (
    "django_snapshots/__init__.py",
    "django_snapshots/py.typed",
    "django_snapshots/storage/__init__.py",
    "django_snapshots/storage/wrappers/__init__.py",
    "django_snapshots/management/commands/snapshots.py",
)
DEBRIS = ("__pycache__", ".pyc", ".venv/", "docs/_build", ".tox/", ".mypy_cache", ".pytest_cache")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, help="keep the built archives in this directory")
    options = parser.parse_args(argv)
    version = _pyproject_version()
    with tempfile.TemporaryDirectory(prefix="snapshots-release-") as scratch:
        outdir = (options.outdir or Path(scratch) / "dist").resolve()
        for old in glob.glob(str(outdir / "django_snapshots-*")):
            os.remove(old)
        # Without --sdist/--wheel, build makes the wheel from the sdist, which
        # proves the sdist complete enough to rebuild the release.
        _run(sys.executable, "-m", "build", "--outdir", outdir, ROOT)
        sdist = _one(outdir, f"django_snapshots-{version}.tar.gz")
        wheel = _one(outdir, f"django_snapshots-{version}-py3-none-any.whl")
        _run(sys.executable, "-m", "twine", "check", "--strict", sdist, wheel)
        _check_sdist(sdist, version)
        _check_wheel(wheel)
        _smoke_test_in_fresh_venv(wheel, version, Path(scratch))
    print(f"release {version}: sdist and wheel built, checked and smoke-tested")
    return 0


def _pyproject_version() -> str:
    # The one place the version is written; everything else reads the metadata.
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    match = re.search(r'^version\s*=\s*"([^"]+)"', project, re.MULTILINE)
    if not match:
        raise SystemExit("no version in the [project] table of pyproject.toml")
    return match.group(1)


def _run(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    command = [str(a) for a in args]
    print("$", " ".join(command), flush=True)
    result = subprocess.run(
        command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    if result.returncode != 0:
        print(result.stdout)
        raise SystemExit(f"failed with exit code {result.returncode}: {' '.join(command)}")
    return result.stdout


def _one(outdir: Path, name: str) -> Path:
    path = outdir / name
    if not path.is_file():
        found = sorted(p.name for p in outdir.iterdir())
        raise SystemExit(f"expected {name} in {outdir}, found {found}")
    return path


def _check_sdist(sdist: Path, version: str) -> None:
    top = f"django_snapshots-{version}/"
    with tarfile.open(sdist) as archive:
        names = {n[len(top) :] for n in archive.getnames() if n.startswith(top)}
    _require(sdist, names, SDIST_REQUIRED)
    if not any(n.startswith("docs/") and n.endswith(".rst") and "/" in n[5:] for n in names):
        raise SystemExit(f"{sdist.name}: the docs' section pages are missing")


def _check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    _require(wheel, names, WHEEL_REQUIRED)
    strays = sorted(
        n for n in names if not n.startswith(("django_snapshots/", "django_snapshots-"))
    )
    if strays:
        raise SystemExit(f"{wheel.name} ships files outside the package: {strays}")


def _require(archive: Path, names: set[str], required: tuple[str, ...]) -> None:
    missing = [name for name in required if name not in names]
    if missing:
        raise SystemExit(f"{archive.name} lacks {missing}")
    debris = sorted(n for n in names if any(d in n for d in DEBRIS))
    if debris:
        raise SystemExit(f"{archive.name} carries build or cache debris: {debris[:10]}")


def _smoke_test_in_fresh_venv(wheel: Path, version: str, scratch: Path) -> None:
    environment = scratch / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(environment)
    bindir = environment / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    _run(python, "-m", "pip", "install", "--quiet", wheel)
    empty = scratch / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO_"))}
    # -I: neither the current directory nor PYTHONPATH may shadow the installed
    # package, and the script's own directory is not put on sys.path.
    print(_run(python, "-I", Path(__file__), "--smoke", version, cwd=empty, env=env))
    # The testing kit is for the project's own test suite, where pytest is.
    _run(python, "-m", "pip", "install", "--quiet", "pytest")
    (empty / "test_installed_kit.py").write_text(_KIT_TEST, "utf-8")
    _run(python, "-I", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=empty, env=env)
    (empty / "test_installed_kit.py").unlink()
    console = bindir / "django-snapshots"
    _run(console, "--help", cwd=empty, env=env)
    print(_run(console, "check", cwd=empty, env=env))
    _run(python, "-I", "-m", "django_snapshots", "demo", cwd=empty, env=env)
    print("the wheel's command line works")


_KIT_TEST = """\
import pytest

from django_snapshots.storage import LocalFileSystemBackend, Logging, MemoryBackend
from django_snapshots.testing import Chaos, StorageConformance, assert_intercepts_every_method


class TestInstalledLocalStack(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path):
        return Logging(LocalFileSystemBackend(tmp_path))


def test_wrappers_intercept_every_method():
    assert_intercepts_every_method(Chaos(MemoryBackend(), failure_rate=0.0))
"""


def smoke(version: str) -> None:
    """The checks run inside the fresh virtual environment."""
    import hashlib
    import importlib.metadata
    import io

    import django
    from django.conf import settings

    import django_snapshots
    from django_snapshots import (
        AdvancedSnapshotStorage,
        SnapshotIntegrityError,
        SnapshotStorage,
        SnapshotStorageCapabilityError,
        requires_advanced_storage,
    )
    from django_snapshots.storage import (
        Checksum,
        DjangoStorageBackend,
        LocalFileSystemBackend,
        Logging,
        MemoryBackend,
        Prefix,
        Retry,
    )
    from django_snapshots.storage.wrappers.base import missing_intercepts

    package = Path(django_snapshots.__file__).resolve().parent
    if not package.is_relative_to(Path(sys.prefix).resolve()):
        raise AssertionError(f"imported {package}, not the installed wheel under {sys.prefix}")
    if not (package / "py.typed").is_file():
        raise AssertionError("py.typed is not installed")
    installed = importlib.metadata.version("django-snapshots")
    if installed != version:
        raise AssertionError(f"installed version {installed} != pyproject version {version}")

    settings.configure(INSTALLED_APPS=["django_snapshots"], USE_TZ=True)
    django.setup()

    with tempfile.TemporaryDirectory() as location:
        stack = Logging(Retry(Checksum(Prefix(LocalFileSystemBackend(location), "tenant-a"))))
        if not isinstance(stack, AdvancedSnapshotStorage):
            raise AssertionError(f"{stack!r} lost the advanced tier")
        if missing_intercepts(stack):
            raise AssertionError(f"{stack!r} does not intercept {missing_intercepts(stack)}")
        payload = os.urandom(3 * 1024 * 1024 + 17)
        stack.write("db/2026-11-26.dump", io.BytesIO(payload))
        with stack.read("db/2026-11-26.dump") as stream:
            digest = hashlib.sha256()
            while chunk := stream.read(64 * 1024):
                digest.update(chunk)
        if digest.hexdigest() != hashlib.sha256(payload).hexdigest():
            raise AssertionError("the round trip changed the bytes")
        if stack.list("db/") != ["db/2026-11-26.dump"]:
            raise AssertionError(f"unexpected listing {stack.list('db/')}")
        streamed = b"".join(stack.stream_read("db/2026-11-26.dump"))
        if streamed != payload:
            raise AssertionError("stream_read changed the bytes")
        stored = Path(location, "tenant-a", "db", "2026-11-26.dump")
        with open(stored, "r+b") as file:
            file.seek(1000)
            byte = file.read(1)
            file.seek(1000)
            file.write(bytes([byte[0] ^ 0xFF]))
        try:
            b"".join(stack.stream_read("db/2026-11-26.dump"))
        except SnapshotIntegrityError:
            pass
        else:
            raise AssertionError("a flipped byte was not detected")
        stack.delete("db/2026-11-26.dump")
        if stack.exists("db/2026-11-26.dump"):
            raise AssertionError("delete left the object behind")

    from django.core.files.storage import InMemoryStorage

    basic = Logging(Checksum(DjangoStorageBackend(InMemoryStorage())))
    if not isinstance(basic, SnapshotStorage) or isinstance(basic, AdvancedSnapshotStorage):
        raise AssertionError(f"{basic!r} should be of the basic tier only")
    try:
        requires_advanced_storage(basic, "archive")
    except SnapshotStorageCapabilityError:
        pass
    else:
        raise AssertionError("a basic-tier stack passed the advanced guard")
    memory = Retry(MemoryBackend())
    memory.write("x", io.BytesIO(b"x"))
    if memory.read("x").read() != b"x":
        raise AssertionError("MemoryBackend round trip failed")
    print(f"django-snapshots {installed} from {package}: import, tiers and round trip OK")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--smoke":
        smoke(sys.argv[2])
        sys.exit(0)
    sys.exit(main())

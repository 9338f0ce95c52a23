"""`tools` works when installed as a wheel and run from any folder: nothing is found through the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import paths
from tools import processes


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and installed (without dependencies: the venv has them) into a folder of its own."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building leaves build/ and *.egg-info beside the sources
    shutil.copytree(paths.PROJECT_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "results", "__pycache__", ".cache", ".*_cache", "charts", "tests"))
    built = processes.run("pip wheel", [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                                        "--no-build-isolation", "-w", root / "dist", source], timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((root / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"tools/loadtest/locustfile.py", "tools/loadtest/corpus.txt", "tools/bench/fastapi_service.py"} <= names
    site = root / "site"
    done = processes.run("pip install", [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site,
                                         wheel], timeout=300)
    assert done.returncode == 0, done.stderr
    return site


def _tools(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m tools ARGS` with the installed copy first on the path, from `cwd` (never the checkout)."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return processes.run("tools", [sys.executable, "-m", "tools", *args], env=env, cwd=cwd, timeout=120)


def test_the_installed_package_is_the_one_that_runs(installed: Path, tmp_path: Path):
    done = processes.run("python", [sys.executable, "-c", "import tools; print(tools.__file__)"],
                         env={**os.environ, "PYTHONPATH": str(installed)}, cwd=tmp_path, timeout=60)
    assert Path(done.stdout.strip()).is_relative_to(installed), done.stdout + done.stderr


def test_version_and_validate_work_from_a_foreign_folder(installed: Path, tmp_path: Path):
    version = _tools(installed, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("tools "), version.stderr
    missing = _tools(installed, tmp_path, "validate")
    assert missing.returncode == 2 and "model_repository" in missing.stderr, "the default is ./model_repository"
    shutil.copytree(paths.REPOSITORY, tmp_path / "model_repository",
                    ignore=shutil.ignore_patterns("__pycache__"))
    clean = _tools(installed, tmp_path, "validate")
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_package_data_is_found_inside_the_installed_package(installed: Path, tmp_path: Path):
    probe = ("from tools.loadtest import corpus, runner\n"
             "print(runner.LOCUSTFILE.resolve())\nprint(corpus.DEFAULT_CORPUS.resolve())\n"
             "print(len(corpus.load(corpus.DEFAULT_CORPUS)))\n")
    done = processes.run("python", [sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(installed)},
                         cwd=tmp_path, timeout=60)
    locustfile, corpus_file, count = done.stdout.split()
    assert Path(locustfile).is_relative_to(installed) and Path(corpus_file).is_relative_to(installed), done.stderr
    assert int(count) >= 1000

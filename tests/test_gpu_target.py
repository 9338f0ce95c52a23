"""The GPU target of `tools serve`: what it checks before starting anything, and what it changes in the command.

No GPU and no NVIDIA driver exist here, so Triton is never started on a GPU. The host's driver is stood in for by
tiny `nvidia-smi` scripts (one that lists a GPU the way the real one does, one that fails the way it does when the
driver is not loaded); everything else is real: the nvidia-pytriton wheel's tritonserver, ldd, the `tools` CLI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.support import paths
from tools import processes
from tools.serving import runtime

CLI_TIMEOUT_S = 120.0
LISTS_A_GPU = "echo 'GPU 0: NVIDIA L4 (UUID: GPU-5f2c1f0e-0000-0000-0000-000000000000)'"
NO_DRIVER = ("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.' >&2\n"
             "exit 9")


def fake_nvidia_smi(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return folder


def wheel_binary() -> Path:
    binary = runtime.find_tritonserver()
    assert runtime.is_wheel_binary(binary)
    return binary


def test_the_wheel_binary_is_a_cuda_build_and_a_listed_gpu_is_enough(tmp_path: Path):
    """The wheel's tritonserver links the CUDA runtime: with a driver that lists a GPU, nothing is missing."""
    assert runtime.gpu_problem(wheel_binary(), str(fake_nvidia_smi(tmp_path / "gpu", LISTS_A_GPU))) is None


def test_a_host_without_driver_or_gpu_is_named(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    assert runtime.gpu_problem(wheel_binary(), str(tmp_path / "empty")) == \
        "this host has no NVIDIA driver (nvidia-smi is not on PATH)"
    failing = str(fake_nvidia_smi(tmp_path / "failing", NO_DRIVER))
    assert runtime.gpu_problem(wheel_binary(), failing) == \
        "nvidia-smi -L lists no GPU (NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.)"


def test_a_cpu_only_binary_is_named_even_with_a_gpu(tmp_path: Path):
    cpu_only = Path(sys.executable).resolve()  # a real ELF binary that links no CUDA runtime
    problem = runtime.gpu_problem(cpu_only, str(fake_nvidia_smi(tmp_path / "gpu", LISTS_A_GPU)))
    assert problem.startswith(f"{cpu_only} links no CUDA runtime (a CPU-only build): pass --tritonserver")


def test_serve_target_gpu_refuses_in_one_line_before_starting_anything(echo_repository: Path, tmp_path: Path):
    env = {**os.environ, "PATH": f"{fake_nvidia_smi(tmp_path / 'bin', NO_DRIVER)}{os.pathsep}{os.environ['PATH']}"}
    result = processes.run("tools serve", [sys.executable, "-m", "tools", "serve", str(echo_repository),
                                           "--target", "gpu", "--exit-after-smoke"],
                           env=env, cwd=paths.PROJECT_ROOT, timeout=CLI_TIMEOUT_S)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    # One line and nothing before it: the host was checked before the repository (which prints a warning count for
    # this one) and before any server could start.
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --target gpu needs a GPU build of tritonserver on a host with an NVIDIA GPU: ")
    assert "nvidia-smi -L lists no GPU (NVIDIA-SMI has failed" in lines[0]
    assert "use --target cpu" in lines[0]


def test_a_gpu_target_turns_on_gpu_metrics():
    def flag(gpu: bool) -> list[str]:
        opts = runtime.ServerOptions(gpu=gpu)
        return [a for a in runtime.build_command(Path("tritonserver"), opts, None, "k", "p_")
                if a.startswith("--allow-gpu-metrics=")]

    assert flag(False) == ["--allow-gpu-metrics=false"]
    assert flag(True) == ["--allow-gpu-metrics=true"]

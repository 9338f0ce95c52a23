"""Prepare and run a real tritonserver: the binary from the nvidia-pytriton wheel, or the user's own.

The wheel ships the server and the Python backend but no stub in the backend folder; we lay out a
backend folder of our own with the stub for the running interpreter, give the stub the libraries and
the `python3` it needs, and start the server on loopback with explicit model control.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tools import settings
from tools.errors import ProcessError, ServingError
from tools.processes import Child, free_port, require_free_port, run, spawn

READY_TIMEOUT_S = settings.SERVER_READY_TIMEOUT_S
# Triton waits this long on SIGTERM for in-flight requests *and* open client connections (an idle keep-alive
# connection alone holds its default 30 s): long enough for a request, short enough for Ctrl-C.
EXIT_TIMEOUT_S = 5
# Each Python-backend stub starts with this much shared memory for tensors (Triton's default: 1 MiB, grown in
# 1 MiB steps). 16 MiB gave +3 % embed throughput at 16 users (median of 7 interleaved 20 s runs: 120.7 vs 117.2/s,
# ahead in 6 of 7 pairs). The chart passes the same flag.
PYTHON_SHM_DEFAULT_BYTES = 16 * 1024 * 1024
STOP_TIMEOUT_S = EXIT_TIMEOUT_S + 15.0
SHM_DIR = Path("/dev/shm")
# Where `tools serve` leaves a generated model-control secret, for the commands that call the control API.
CONTROL_KEY_FILE = settings.CACHE_DIR / "control-key"
GRPC_RESTRICTED_HEADER_PREFIX = "triton-grpc-protocol-"
# gRPC statuses that mean the server never answered a call (a deadline passed, the connection went), not a refusal.
_NO_ANSWER_STATUSES = {"StatusCode.DEADLINE_EXCEEDED", "StatusCode.UNAVAILABLE"}


class NoAnswerError(ServingError):
    """The server did not answer a repository call: it neither did the job nor refused it."""


def saved_control_key(given: str | None = None) -> str | None:
    """The key given, else the one `tools serve` left for this user, else None (a server without a key)."""
    if given:
        return given
    return CONTROL_KEY_FILE.read_text().strip() if CONTROL_KEY_FILE.is_file() else None


class TritonNotFoundError(ServingError):
    pass


class ServerStartError(ServingError):
    """The server exited or never became ready; carries what Triton said."""

    def __init__(self, message: str, model_errors: dict[str, str] | None = None, log_tail: str = ""):
        super().__init__(message)
        self.model_errors = model_errors or {}
        self.log_tail = log_tail


def _pytriton_dir() -> Path | None:
    try:
        import pytriton
    except ImportError:
        return None
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def find_tritonserver(explicit: str | os.PathLike | None = None) -> Path:
    """The binary to run: an explicit path, $TRITONSERVER, the pytriton wheel's, or PATH's."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    elif os.environ.get(settings.TRITONSERVER_ENV):
        candidates.append(Path(os.environ[settings.TRITONSERVER_ENV]))
    else:
        wheel = _pytriton_dir()
        if wheel is not None:
            candidates.append(wheel / "bin" / "tritonserver")
        on_path = shutil.which("tritonserver")
        if on_path:
            candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    tried = ", ".join(str(p) for p in candidates) or "nothing to try"
    raise TritonNotFoundError(
        f"no tritonserver binary found (tried: {tried}); install nvidia-pytriton or pass --tritonserver "
        f"/ set ${settings.TRITONSERVER_ENV}"
    )


# A tritonserver built with TRITON_ENABLE_GPU links the CUDA runtime (the server and its core library); a CPU-only
# build links none. The pytriton wheel's binary is such a GPU build (it links libcudart 12.6 and DCGM).
_CUDA_RUNTIME = re.compile(r"^\s*libcudart\S*\.so", re.MULTILINE)
GPU_CHECK_TIMEOUT_S = 30.0
GPU_BUILD_HINT = ("e.g. /opt/tritonserver/bin/tritonserver of the nvcr.io/nvidia/tritonserver:24.10-py3 image, "
                  "or the nvidia-pytriton wheel's")


def gpu_problem(binary: Path, search_path: str | None = None) -> str | None:
    """Why `binary` cannot serve KIND_GPU instances on this host (None: it can): it must be a CUDA build of
    tritonserver, and the host must have an NVIDIA driver whose `nvidia-smi -L` lists a GPU (looked up on
    `search_path`, default $PATH)."""
    problems = []
    linked = run("ldd", ["ldd", binary], timeout=GPU_CHECK_TIMEOUT_S)
    if linked.returncode != 0 or not _CUDA_RUNTIME.search(linked.stdout):
        problems.append(f"{binary} links no CUDA runtime (a CPU-only build): pass --tritonserver with a GPU build "
                        f"({GPU_BUILD_HINT})")
    smi = shutil.which("nvidia-smi", path=search_path)
    if smi is None:
        problems.append("this host has no NVIDIA driver (nvidia-smi is not on PATH)")
    else:
        listed = run("nvidia-smi", [smi, "-L"], timeout=GPU_CHECK_TIMEOUT_S)
        if listed.returncode != 0 or not re.search(r"^GPU \d+:", listed.stdout, re.MULTILINE):
            said = " ".join((listed.stderr or listed.stdout).split()) or f"exit code {listed.returncode}"
            problems.append(f"nvidia-smi -L lists no GPU ({said})")
    return "; ".join(problems) or None


def require_gpu(binary: Path) -> None:
    """Refuse, in one line, to serve a GPU target where the binary or the host cannot run CUDA."""
    problem = gpu_problem(binary)
    if problem:
        raise ServingError(f"--target gpu needs a GPU build of tritonserver on a host with an NVIDIA GPU: {problem}; "
                           "use --target cpu (with KIND_CPU instance groups) here")


def is_wheel_binary(binary: Path) -> bool:
    wheel = _pytriton_dir()
    return wheel is not None and binary.resolve() == (wheel / "bin" / "tritonserver").resolve()


def prepare_backends(cache_dir: Path = settings.CACHE_DIR) -> Path:
    """A backend folder whose `python/` holds the wheel's backend plus the stub for this interpreter."""
    wheel = _pytriton_dir()
    if wheel is None:
        raise TritonNotFoundError("nvidia-pytriton is not installed: cannot lay out its Python backend")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonNotFoundError(f"the pytriton wheel has no Python-backend stub for Python {version}")
    target = cache_dir / f"backends-py{version}"
    python_dir = target / "python"
    sources = [*sorted((wheel / "backends" / "python").glob("*.*")), stub]
    if not all((python_dir / s.name).is_file() for s in sources):
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix="backends-", dir=cache_dir))
            (staging / "python").mkdir()
            for source in sources:
                shutil.copy2(source, staging / "python" / source.name)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)  # atomic: a concurrent reader sees all files or none
        except OSError as exc:
            raise ServingError(_unwritable_cache(cache_dir, exc)) from None
    return target


def _unwritable_cache(cache_dir: Path, exc: OSError) -> str:
    return f"cannot write under {cache_dir} ({exc.strerror}); point $TRITON_TOOLKIT_CACHE at a writable folder"


def stub_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the Python-backend stub: its bundled libraries, libpython, this venv's python3."""
    env = dict(os.environ if base is None else base)
    libs = []
    wheel = _pytriton_dir()
    if wheel is not None:
        libs.append(str(wheel.parent.parent / "nvidia_pytriton.libs"))
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        libs.append(libdir)
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    # The stub finds its interpreter's prefix through `python3` on PATH: put this venv first.
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


@dataclass
class ServerOptions:
    """Everything that shapes one tritonserver process."""

    repository: Path = settings.MODEL_REPOSITORY
    host: str = settings.DEFAULT_HOST
    http_port: int = settings.DEFAULT_HTTP_PORT
    grpc_port: int = settings.DEFAULT_GRPC_PORT
    metrics_port: int = settings.DEFAULT_METRICS_PORT
    tritonserver: Path | None = None
    models: list[str] = field(default_factory=lambda: ["*"])
    control_key: str | None = None  # None: a new secret per server
    log_verbose: int = 0
    exit_timeout: int = EXIT_TIMEOUT_S
    extra_args: list[str] = field(default_factory=list)
    gpu: bool = False  # a GPU target (see require_gpu): Triton reports its GPU metrics too

    @classmethod
    def on_free_ports(cls, **kwargs) -> ServerOptions:
        """Options with three free loopback ports: what tests and throwaway servers use."""
        host = kwargs.pop("host", settings.DEFAULT_HOST)
        return cls(host=host, http_port=free_port(host), grpc_port=free_port(host),
                   metrics_port=free_port(host), **kwargs)


def build_command(binary: Path, opts: ServerOptions, backend_dir: Path | None, control_key: str,
                  shm_prefix: str) -> list[str]:
    """The tritonserver argv: explicit control, strict readiness, metrics with latency summaries and histograms."""
    restricted = f"model-repository:{settings.CONTROL_KEY_HEADER}={control_key}"
    cmd = [
        str(binary),
        f"--model-repository={opts.repository}",
        "--model-control-mode=explicit",
        *[f"--load-model={m}" for m in opts.models],
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--http-address={opts.host}", f"--http-port={opts.http_port}",
        f"--grpc-address={opts.host}", f"--grpc-port={opts.grpc_port}",
        f"--metrics-address={opts.host}", f"--metrics-port={opts.metrics_port}",
        "--allow-metrics=true", "--allow-cpu-metrics=true", f"--allow-gpu-metrics={str(opts.gpu).lower()}",
        "--metrics-config=summary_latencies=true",
        # Time to first response of decoupled (streaming) models: 2.51 reports it only as a histogram.
        "--metrics-config=histogram_latencies=true",
        # The model-control API is never open: it needs the secret header on both protocols.
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        f"--backend-config=python,shm-default-byte-size={PYTHON_SHM_DEFAULT_BYTES}",
        f"--log-verbose={opts.log_verbose}",
        f"--exit-timeout-secs={opts.exit_timeout}",
    ]
    if backend_dir is not None:
        cmd.append(f"--backend-directory={backend_dir}")
    return cmd + list(opts.extra_args)


_LOAD_FAILURE = re.compile(r"failed to load '(?P<model>[^']+)'(?: version (?P<version>\d+))?: (?P<msg>.*)")


def parse_load_errors(log: str) -> dict[str, str]:
    """Model name -> Triton's own load-failure message, from the server log."""
    errors: dict[str, str] = {}
    for match in _LOAD_FAILURE.finditer(log):
        # Triton quotes the Python backend's error with literal \n escapes and a stack after "At:": keep the error,
        # on one line.
        message = match["msg"].replace("\\n", "\n").split("\nAt:", 1)[0]
        message = " ".join(message.split()).rstrip('"').strip()
        errors.setdefault(match["model"], message)
    return errors


class TritonServer:
    """One tritonserver process; use as a context manager so it always stops and cleans up."""

    def __init__(self, opts: ServerOptions):
        self.opts = opts
        self.control_key = opts.control_key or secrets.token_urlsafe(24)
        self.shm_prefix = f"triton_toolkit_{os.getpid()}_{secrets.token_hex(4)}_"
        self.child: Child | None = None
        self.log_path: Path | None = None

    # -- addresses -------------------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.opts.host in ("0.0.0.0", "::") else self.opts.host

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.opts.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.opts.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.opts.metrics_port}/metrics"

    @property
    def control_headers(self) -> dict[str, str]:
        return {settings.CONTROL_KEY_HEADER: self.control_key}

    @property
    def grpc_control_headers(self) -> dict[str, str]:
        """Triton expects a restricted gRPC protocol's header under this prefix (as its refusal says)."""
        return {GRPC_RESTRICTED_HEADER_PREFIX + settings.CONTROL_KEY_HEADER: self.control_key}

    def write_control_key(self, path: Path = CONTROL_KEY_FILE) -> Path:
        """Leave the model-control secret where only this user can read it (never on the console or in logs)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise ServingError(_unwritable_cache(path.parent, exc)) from None
        with os.fdopen(fd, "w") as key_file:
            key_file.write(self.control_key)
        return path

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def process(self) -> subprocess.Popen | None:
        return self.child.process if self.child else None

    def start(self, timeout: float = READY_TIMEOUT_S) -> TritonServer:
        repository = Path(self.opts.repository)
        if not repository.is_dir():
            raise ServerStartError(f"model repository {repository} is not a directory")
        for purpose, port in (("http", self.opts.http_port), ("grpc", self.opts.grpc_port),
                              ("metrics", self.opts.metrics_port)):
            require_free_port(self.opts.host, port, f"--{purpose}-port")
        binary = find_tritonserver(self.opts.tritonserver)
        backend_dir = prepare_backends() if is_wheel_binary(binary) else None
        cmd = build_command(binary, self.opts, backend_dir, self.control_key, self.shm_prefix)
        fd, log_name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_name)
        self.child = spawn("tritonserver", cmd, log=self.log_path, env=stub_environment())
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def client(self, timeout: float = 2.0) -> httpclient.InferenceServerClient:
        """An HTTP client of this server; pass `control_headers` to its repository calls."""
        return httpclient.InferenceServerClient(self.http_url, connection_timeout=timeout, network_timeout=timeout)

    def is_ready(self) -> bool:
        try:
            with contextlib.closing(self.client()) as connection:
                return connection.is_server_ready()
        except (InferenceServerException, OSError):
            return False

    def repository_index(self) -> list[dict]:
        """Triton's view of every model: name, version, state, reason."""
        with contextlib.closing(self.client()) as connection:
            return connection.get_model_repository_index(headers=self.control_headers)

    def load_model(self, name: str, config: str | None = None, timeout: float = READY_TIMEOUT_S) -> None:
        """Load (or reload, optionally with a JSON config override) one model; ServingError with Triton's refusal.

        Over gRPC: tritonclient's HTTP client percent-encodes the name in the URL and Triton 2.51 does not decode it,
        so a model folder named with a space or `%` would be "not found" over HTTP.
        """
        try:
            with contextlib.closing(grpcclient.InferenceServerClient(self.grpc_url)) as connection:
                connection.load_model(name, headers=self.grpc_control_headers, config=config, client_timeout=timeout)
        except InferenceServerException as exc:
            if exc.status() in _NO_ANSWER_STATUSES:
                raise NoAnswerError(f"no answer from the server within {timeout:.0f} s while loading {name} "
                                    f"({exc.message()})") from None
            raise ServingError(exc.message() or str(exc)) from None
        except OSError as exc:
            raise NoAnswerError(f"no answer from the server while loading {name} ({exc})") from None

    def _metrics_listening(self) -> bool:
        """Triton opens its metrics port a little after it reports ready over HTTP."""
        try:
            with socket.create_connection((self._client_host, self.opts.metrics_port), timeout=1):
                return True
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> None:
        """Until the server is ready and its metrics endpoint listens; ServerStartError with Triton's reasons."""
        try:
            self.child.wait_until(lambda: self.is_ready() and self._metrics_listening(), timeout,
                                  "server readiness")
        except ProcessError:
            log = self.log_text()
            errors = parse_load_errors(log)
            if not self.child.running():
                detail = "; ".join(f"{m}: {e}" for m, e in errors.items()) or \
                    f"{_tail(log, 1)} (log: {self.log_path})"
                raise ServerStartError(
                    f"tritonserver exited with code {self.child.returncode} while loading: {detail}",
                    errors, _tail(log)) from None
            waiting = ""
            with contextlib.suppress(Exception):
                waiting = ", ".join(f"{m['name']} ({m.get('state', '?')})" for m in self.repository_index()
                                    if m.get("state") != "READY")
            raise ServerStartError(
                f"tritonserver was not ready after {timeout:.0f} s"
                + (f"; still waiting for: {waiting}" if waiting else ""), errors, _tail(log)) from None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server's process group (its stubs too), wait for every stub, remove its shm regions."""
        if self.child is not None:
            stubs = []
            with contextlib.suppress(psutil.Error):
                stubs = psutil.Process(self.child.pid).children(recursive=True)
            self.child.stop(timeout)
            psutil.wait_procs(stubs, timeout=5)
        for region in SHM_DIR.glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()

    def __enter__(self) -> TritonServer:
        return self.start() if self.child is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_server(opts: ServerOptions | None = None, timeout: float = READY_TIMEOUT_S) -> Iterator[TritonServer]:
    """Start a server (free loopback ports unless told), yield it ready, always stop it."""
    server = TritonServer(opts or ServerOptions.on_free_ports())
    server.start(timeout)
    try:
        yield server
    finally:
        server.stop()

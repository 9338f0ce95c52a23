"""The in-memory repository: what it reads, the order it loads in, and the validated atomic write-back."""

from __future__ import annotations

import pytest

from tests.validation.corpus import MODEL_PY, base_spec
from tools.repository import field_positions, load_repository
from tools.validation import ConfigRejectedError, write_config


@pytest.fixture
def repo(tmp_path):
    spec = base_spec("")
    spec.files["double/2/model.py"] = MODEL_PY
    spec.files["double/03/model.py"] = MODEL_PY
    spec.files["double/config.pbtxt"] = "# tools-validate: ignore W504\n" + spec.files["double/config.pbtxt"]
    spec.write(tmp_path)
    return load_repository(tmp_path)


def test_reads_models_versions_and_graph(repo):
    double = repo.models["double"]
    assert sorted(repo.models) == ["add", "double", "pipe"]
    assert sorted(double.versions) == [1, 2] and double.ignored_dirs == ["03"]
    assert "model.py" in double.versions[2].files
    assert double.served_versions() == [2]
    assert repo.composing_models("pipe") == ["double"]
    order = repo.load_order()
    assert order.index("double") < order.index("pipe")
    assert repo.models["pipe"].is_ensemble and not double.is_ensemble


def test_write_config_validates_then_replaces_atomically(repo):
    path = repo.models["double"].config_file.path
    before = path.read_text()
    config = repo.models["double"].config
    config.instance_group[0].count = 3
    write_config(repo, "double", config)
    again = load_repository(repo.root)
    assert again.models["double"].config.instance_group[0].count == 3
    # only the changed value's text changes: the silencing comment and the layout survive
    assert path.read_text() == before.replace("count: 2", "count: 3")
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".config-")] == []


def test_write_config_refuses_an_invalid_config_and_leaves_the_file(repo):
    path = repo.models["double"].config_file.path
    before = path.read_text()
    config = repo.models["double"].config
    config.max_batch_size = -4
    with pytest.raises(ConfigRejectedError) as raised:
        write_config(repo, "double", config)
    assert "E308" in {f.code for f in raised.value.findings}
    assert path.read_text() == before


def test_write_config_refuses_a_change_that_breaks_an_ensemble(repo):
    config = repo.models["double"].config
    config.max_batch_size = 4  # the ensemble `pipe` allows 8
    with pytest.raises(ConfigRejectedError) as raised:
        write_config(repo, "double", config)
    assert [(f.code, f.model) for f in raised.value.findings] == [("E417", "pipe"), ("E417", "pipe")]


def test_field_positions_follow_every_list_spelling():
    text = ('name: "m"\ninput [\n  { name: "a" dims: [ 1 ] },\n  {\n    name: "b"\n  }\n]\n'
            "output { name: \"y\" }\noutput {\n  name: \"z\"\n}\ndynamic_batching <\n  preferred_batch_size: 2\n>\n")
    positions = field_positions(text)
    assert positions[("input", 0)][0] == 3
    assert positions[("input", 1, "name")][0] == 5
    assert positions[("output", 1, "name")][0] == 10
    assert positions[("dynamic_batching", 0, "preferred_batch_size")][0] == 13


def test_version_folder_names_are_read_as_triton_reads_them():
    """std::stoll semantics: leading digits count, a leading zero or a skipped folder does not."""
    from tools.validation.layout import read_as_version

    assert [read_as_version(n) for n in ("3_old", "+4", "-1", "07", "0", "latest", "warmup", "configs")] == \
        [3, 4, -1, None, 0, None, None, None]


def test_version_policy_selection_follows_triton(repo):
    from tools.validation.layout import triton_versions

    double = repo.models["double"]
    config = double.config
    config.version_policy.latest.num_versions = 0
    assert triton_versions(double, config) == []
    config.version_policy.latest.num_versions = 5
    assert triton_versions(double, config) == [1, 2]
    assert triton_versions(double, config, extra=7) == [1, 2, 7]

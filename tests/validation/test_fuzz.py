"""Property tests: whatever the configs hold, validation ends with 0 or 1 and never raises."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from tests.validation.corpus import ADD, DOUBLE, PIPE, base_spec
from tools.repository import ModelConfig, text_format
from tools.validation.run import EXIT_CLEAN, EXIT_FINDINGS, OutputFormat, run_validation

TEXTS = [DOUBLE.replace("@", ""), ADD.replace("@", ""), PIPE.replace("@", "")]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_on(root: Path, target: str, content: str | bytes) -> int:
    if root.exists():
        shutil.rmtree(root)
    base_spec("").write(root)
    path = root / target / "config.pbtxt"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    console = Console(file=io.StringIO())
    code = run_validation(root, OutputFormat.JSON, console=console)
    assert code in (EXIT_CLEAN, EXIT_FINDINGS)
    return code


@st.composite
def edited_text(draw):
    """A valid config with a few random character edits: deletions, insertions, duplicated slices."""
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "duplicate"]))
        if kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)):]
        elif kind == "insert":
            text = text[:at] + draw(st.text(alphabet='{}[]:,"-0123456789 \n_abcdefgTYPE', max_size=6)) + text[at:]
        else:
            text = text[:at] + text[max(0, at - 20):at] + text[at:]
    return text


@st.composite
def mutated_config(draw):
    """A valid config with random values in the fields the rules read: sizes, dims, kinds, names, maps."""
    config = text_format.Parse(draw(st.sampled_from(TEXTS)), ModelConfig())
    ints = st.integers(-3, 20)
    config.max_batch_size = draw(ints)
    for tensor in (*config.input, *config.output):
        if draw(st.booleans()):
            tensor.ClearField("dims")
            tensor.dims.extend(draw(st.lists(ints, max_size=3)))
        tensor.data_type = draw(st.integers(0, 14))
        tensor.name = draw(st.sampled_from([tensor.name, "", "IN", "OUT", "mid"]))
        if draw(st.booleans()):
            tensor.reshape.shape.extend(draw(st.lists(ints, max_size=3)))
    if draw(st.booleans()):
        config.dynamic_batching.preferred_batch_size.extend(draw(st.lists(ints, max_size=3)))
        config.dynamic_batching.priority_levels = draw(st.integers(0, 3))
    for step in config.ensemble_scheduling.step:
        step.model_name = draw(st.sampled_from(["double", "add", "pipe", "ghost", ""]))
        step.model_version = draw(st.integers(-2, 3))
        if draw(st.booleans()):
            step.input_map[draw(st.sampled_from(["IN", "A", "X"]))] = draw(st.sampled_from(["ENS_IN", "mid", "z"]))
    for group in config.instance_group:
        group.kind = draw(st.integers(0, 3))
        group.count = draw(ints)
    return text_format.MessageToString(config)


@FUZZ
@given(text=edited_text(), target=st.sampled_from(["double", "add", "pipe"]))
def test_edited_text_never_raises(tmp_path, text, target):
    run_on(tmp_path / "repo", target, text)


@FUZZ
@given(text=mutated_config(), target=st.sampled_from(["double", "pipe"]))
def test_mutated_fields_never_raise(tmp_path, text, target):
    run_on(tmp_path / "repo", target, text)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_binary_garbage_is_an_error_not_a_crash(tmp_path, data):
    assert run_on(tmp_path / "repo", "double", data) == EXIT_FINDINGS

"""The validation corpus: tiny repositories built from one base plus one mutation per case.

Every case names the codes `tools validate` must report for it (exactly) and what the real Triton does
with it: REJECTS (refuses the target model, and says so), LOADS (clean or warnings only), STRICTER (we
report an error, Triton loads it anyway: deliberate), NO_ANSWER (Triton never answers the load request:
neither a refusal nor a load), or OFFLINE (cannot be tried on this machine's server, which has only the
Python backend and no GPU). All models of a case carry the case's prefix, so all cases can
share one repository and one server.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata
from pathlib import Path

from google.protobuf import text_format

from tools.repository import ModelConfig, model_config_pb2

DataType = model_config_pb2.DataType

MODEL_PY = """\
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, self.inputs[0]).as_numpy()
            tensors = [pb_utils.Tensor(name, (data * 2).astype(np.float32)) for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
"""

# "@" stands for the case prefix in model names.
DOUBLE = """\
name: "@double"
backend: "python"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 2 } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
"""
ADD = """\
name: "@add"
backend: "python"
max_batch_size: 8
input [ { name: "A" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "B" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "SUM" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 2 } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
"""
PIPE = """\
name: "@pipe"
platform: "ensemble"
max_batch_size: 8
input [ { name: "ENS_IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "ENS_OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "@double" model_version: -1
      input_map { key: "IN" value: "ENS_IN" } output_map { key: "OUT" value: "mid" } },
    { model_name: "@double" model_version: -1
      input_map { key: "IN" value: "mid" } output_map { key: "OUT" value: "ENS_OUT" } }
  ]
}
"""


class Triton(StrEnum):
    REJECTS = "rejects"
    LOADS = "loads"
    STRICTER = "stricter"
    NO_ANSWER = "no answer"
    OFFLINE = "offline"


@dataclass
class Spec:
    """A repository under construction: relative path -> file content, plus symlinks."""

    prefix: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)

    def name(self, base: str) -> str:
        return self.prefix + base

    def add_python_model(self, base: str, config_text: str, versions: tuple[int, ...] = (1,)) -> None:
        self.files[f"{self.name(base)}/config.pbtxt"] = config_text.replace("@", self.prefix)
        for version in versions:
            self.files[f"{self.name(base)}/{version}/model.py"] = MODEL_PY

    def add_ensemble(self, base: str, config_text: str) -> None:
        self.files[f"{self.name(base)}/config.pbtxt"] = config_text.replace("@", self.prefix)
        self.files[f"{self.name(base)}/1/.keep"] = ""

    def config_path(self, base: str) -> str:
        return f"{self.name(base)}/config.pbtxt"

    def edit(self, base: str, change: Callable[[ModelConfig], object]) -> None:
        config = text_format.Parse(self.files[self.config_path(base)], ModelConfig())
        change(config)
        self.files[self.config_path(base)] = text_format.MessageToString(config)

    def remove(self, relative: str) -> None:
        for key in [k for k in self.files if k == relative or k.startswith(relative + "/")]:
            del self.files[key]

    def write(self, root: Path) -> None:
        for relative, content in self.files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        for relative, target in self.symlinks.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, path)


def base_spec(prefix: str) -> Spec:
    spec = Spec(prefix)
    spec.add_python_model("double", DOUBLE)
    spec.add_python_model("add", ADD)
    spec.add_ensemble("pipe", PIPE)
    return spec


def write_broken_repository(root: Path) -> Path:
    """The base repository with an error in an ensemble step (E404: step 1 calls "ghost") and a warning (W501)."""
    spec = base_spec("")
    spec.edit("pipe", lambda c: setattr(c.ensemble_scheduling.step[1], "model_name", "ghost"))
    spec.edit("double", lambda c: c.dynamic_batching.ClearField("max_queue_delay_microseconds"))
    spec.write(root)
    return root


@dataclass(frozen=True)
class Case:
    id: str
    codes: frozenset[str]
    triton: Triton
    target: str  # the model (without prefix) whose load the differential test tries
    mutate: Callable[[Spec], None]

    def build(self, prefix: str) -> Spec:
        spec = base_spec(prefix)
        self.mutate(spec)
        return spec


CASES: list[Case] = []


def case(id: str, codes: str, triton: Triton, target: str = "double") -> Callable:
    """Register a mutation as a corpus case; `codes` is space-separated."""
    def register(mutate: Callable[[Spec], None]) -> Callable[[Spec], None]:
        CASES.append(Case(id, frozenset(codes.split()), triton, target, mutate))
        return mutate
    return register


def step(config: ModelConfig, index: int):
    return config.ensemble_scheduling.step[index]


def rename_key(mapping, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def add_step(config: ModelConfig, spec: Spec, model: str, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    new = config.ensemble_scheduling.step.add(model_name=spec.name(model), model_version=-1)
    new.input_map.update(inputs)
    new.output_map.update(outputs)


def add_warmup(spec: Spec, key: str, data_type: str, source: str) -> None:
    spec.files[spec.config_path("double")] += (
        f'model_warmup [ {{ name: "w" batch_size: 1 inputs {{ key: "{key}" value: '
        f'{{ data_type: {data_type} dims: [ 4 ] {source} }} }} }} ]\n')


# -- valid shapes -----------------------------------------------------------------------------------
@case("valid_base", "", Triton.LOADS, "pipe")
def _(spec): pass


@case("valid_nested_ensemble", "", Triton.LOADS, "outer")
def _(spec):
    spec.add_ensemble("outer", PIPE.replace('"@pipe"', '"@outer"').replace('"@double"', '"@pipe"')
                      .replace('"IN"', '"ENS_IN"').replace('"OUT"', '"ENS_OUT"'))


@case("valid_pinned_versions", "", Triton.LOADS)
def _(spec):
    spec.add_python_model("double", DOUBLE + "version_policy { specific { versions: [ 1, 2 ] } }\n", versions=(1, 2))


@case("valid_non_batching", "", Triton.LOADS, "pipe")
def _(spec):
    spec.edit("double", lambda c: (setattr(c, "max_batch_size", 0), c.ClearField("dynamic_batching")))
    spec.edit("pipe", lambda c: setattr(c, "max_batch_size", 0))


@case("valid_optional_input", "", Triton.LOADS, "pipe")
def _(spec):
    spec.edit("double", lambda c: c.input.add(name="EXTRA", data_type=c.input[0].data_type, dims=[-1], optional=True))


@case("valid_factory_model_py", "", Triton.LOADS)
def _(spec):
    spec.files[f"{spec.name('double')}/1/helper.py"] = MODEL_PY
    spec.files[f"{spec.name('double')}/1/model.py"] = (
        "import sys\nfrom pathlib import Path\n\nsys.path.insert(0, str(Path(__file__).parent))\n"
        "import helper  # noqa: E402\n\nTritonPythonModel = helper.TritonPythonModel\n")


@case("valid_reshape", "", Triton.LOADS)
def _(spec):
    spec.edit("double", lambda c: (c.input[0].ClearField("dims"), c.input[0].dims.extend([4]),
                                   c.input[0].reshape.shape.extend([2, 2])))


@case("valid_config_variant", "", Triton.LOADS)
def _(spec):
    spec.files[f"{spec.name('double')}/configs/small.pbtxt"] = DOUBLE.replace("@", spec.prefix)


@case("valid_warmup", "", Triton.LOADS)
def _(spec):
    add_warmup(spec, "IN", "TYPE_FP32", "zero_data: true")


# -- 1xx syntax -------------------------------------------------------------------------------------
@case("syntax_error", "E103", Triton.REJECTS)
def _(spec):
    spec.files[spec.config_path("double")] += 'max_batch_size: "eight"\n'


@case("unknown_field", "E103", Triton.REJECTS)
def _(spec):
    spec.files[spec.config_path("double")] += "max_batch: 4\n"


@case("binary_config", "E102", Triton.REJECTS)
def _(spec):
    spec.files[spec.config_path("double")] = b"\x00\x01\x02binary\xff"


@case("not_utf8_config", "E102", Triton.REJECTS)
def _(spec):
    spec.files[spec.config_path("double")] = b'name: "caf\xe9"\n'


@case("missing_config", "W101", Triton.LOADS)  # Triton guesses the Python backend from model.py
def _(spec):
    del spec.files[spec.config_path("double")]


@case("config_symlink_loop", "E102 E218", Triton.REJECTS)
def _(spec):
    del spec.files[spec.config_path("double")]
    spec.symlinks[spec.config_path("double")] = "config.pbtxt"


@case("auto_complete_onnx", "W105", Triton.OFFLINE, "onnx")  # no ONNX Runtime backend on this server
def _(spec):
    spec.files[f"{spec.name('onnx')}/1/model.onnx"] = b"not really onnx"


# -- 2xx layout -------------------------------------------------------------------------------------
@case("name_mismatch", "E201", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: setattr(c, "name", "somebody_else"))


@case("non_numeric_version", "W202", Triton.LOADS)
def _(spec):
    spec.files[f"{spec.name('double')}/latest/model.py"] = MODEL_PY


@case("zero_prefixed_version", "W203", Triton.LOADS)
def _(spec):
    spec.files[f"{spec.name('double')}/02/model.py"] = MODEL_PY


@case("no_version_folder", "E204", Triton.REJECTS)
def _(spec):
    spec.remove(f"{spec.name('double')}/1")


@case("specific_version_missing", "E205", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: c.version_policy.specific.versions.append(3))


@case("no_backend", "W206", Triton.LOADS)  # Triton guesses the backend from model.py
def _(spec):
    spec.edit("double", lambda c: c.ClearField("backend"))


@case("unknown_platform", "E207", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: (c.ClearField("backend"), setattr(c, "platform", "tensorflow_lite")))


@case("unknown_backend", "W208", Triton.REJECTS)  # a custom backend that is not installed here
def _(spec):
    spec.edit("double", lambda c: setattr(c, "backend", "pythn"))


@case("backend_platform_mismatch", "W209", Triton.LOADS)  # Triton 2.51 goes by `backend` alone
def _(spec):
    spec.edit("double", lambda c: setattr(c, "platform", "onnxruntime_onnx"))


# Triton 2.51 never answers the load request for this one (seen: no answer in 120 s).
@case("missing_model_py", "E210", Triton.NO_ANSWER)
def _(spec):
    del spec.files[f"{spec.name('double')}/1/model.py"]
    spec.files[f"{spec.name('double')}/1/other.py"] = MODEL_PY


@case("model_py_syntax_error", "E211", Triton.REJECTS)
def _(spec):
    spec.files[f"{spec.name('double')}/1/model.py"] = "def broken(:\n    pass\n"


@case("model_py_without_class", "E212", Triton.REJECTS)
def _(spec):
    spec.files[f"{spec.name('double')}/1/model.py"] = "import numpy\n"


@case("model_py_without_execute", "E212", Triton.STRICTER)
def _(spec):
    spec.files[f"{spec.name('double')}/1/model.py"] = "class TritonPythonModel:\n    def initialize(self, args):\n" \
                                                      "        pass\n"


@case("broken_config_variant", "E103", Triton.STRICTER)  # Triton only reads a variant when asked to
def _(spec):
    spec.files[f"{spec.name('double')}/configs/small.pbtxt"] = "max_batch_size: [\n"


# -- 2xx layout: parity with Triton's repository scan, version policy, backend resolution, Python backend --
@case("no_config_no_model_file", "E213", Triton.REJECTS)
def _(spec):
    del spec.files[spec.config_path("double")]
    spec.files[f"{spec.name('double')}/1/helper.py"] = spec.files.pop(f"{spec.name('double')}/1/model.py")


@case("no_backend_first_folder_without_model_py", "E213", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: c.ClearField("backend"))
    spec.files[f"{spec.name('double')}/0/helper.py"] = MODEL_PY  # "0" sorts first: Triton looks only there
    spec.files[f"{spec.name('double')}/config.pbtxt"] += "version_policy { specific { versions: [ 1 ] } }\n"


@case("typed_backend_with_other_platform", "E214", Triton.REJECTS)
def _(spec):
    spec.files[f"{spec.name('double')}/1/model.onnx"] = b"not really onnx"
    spec.edit("double", lambda c: (setattr(c, "backend", "onnxruntime"), setattr(c, "platform", "tensorrt_plan")))


@case("unknown_platform_with_backend", "W209", Triton.LOADS)  # Triton goes by `backend`
def _(spec):
    spec.edit("double", lambda c: setattr(c, "platform", "tensorflow_lite"))


@case("latest_zero_versions", "E205", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.version_policy.latest, "num_versions", 0))


@case("specific_version_partly_missing", "W215", Triton.LOADS)
def _(spec):
    spec.edit("double", lambda c: c.version_policy.specific.versions.extend([1, 3]))


@case("label_file_missing", "E216", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.output[0], "label_filename", "labels.txt"))


@case("label_file_present", "", Triton.LOADS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.output[0], "label_filename", "labels.txt"))
    spec.files[f"{spec.name('double')}/labels.txt"] = "zero\none\n"


@case("hidden_folder_at_root", "E217", Triton.REJECTS, ".hidden")
def _(spec):
    spec.files[f".{spec.name('hidden')}/notes.txt"] = "what an editor or a notebook leaves behind\n"


@case("dangling_link_in_model_folder", "E218", Triton.REJECTS)
def _(spec):
    spec.symlinks[f"{spec.name('double')}/old"] = "nowhere"


@case("dangling_link_at_root", "E218", Triton.REJECTS, "gone")
def _(spec):
    spec.symlinks[spec.name("gone")] = "nowhere"


@case("model_py_imports_missing_module", "E219", Triton.REJECTS)
def _(spec):
    spec.files[f"{spec.name('double')}/1/model.py"] = "import no_such_module_anywhere\n" + MODEL_PY


@case("model_py_imports_sibling_module", "", Triton.LOADS)
def _(spec):
    spec.files[f"{spec.name('double')}/1/helper.py"] = "import numpy\n\nFACTOR = 2\n"
    spec.files[f"{spec.name('double')}/1/model.py"] = "import helper  # noqa: F401\n" + MODEL_PY


@case("sibling_module_imports_missing_module", "E219", Triton.REJECTS)
def _(spec):
    spec.files[f"{spec.name('double')}/1/helper.py"] = "import no_such_module_anywhere\n"
    spec.files[f"{spec.name('double')}/1/model.py"] = "import helper  # noqa: F401\n" + MODEL_PY


@case("execution_env_missing", "E220", Triton.REJECTS)
def _(spec):
    spec.files[spec.config_path("double")] += (
        'parameters { key: "EXECUTION_ENV_PATH" value: { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }\n')


@case("requirements_met", "", Triton.LOADS)
def _(spec):
    pin = f"numpy=={metadata.version('numpy')}"
    spec.files[f"{spec.name('double')}/requirements.txt"] = f"# the stub's own numpy\n{pin}\n"


@case("requirements_not_pinned", "W227", Triton.LOADS)
def _(spec):
    spec.files[f"{spec.name('double')}/requirements.txt"] = "numpy>=1.26\n"


@case("requirements_not_installed", "W228", Triton.LOADS)
def _(spec):
    spec.files[f"{spec.name('double')}/requirements.txt"] = "no-such-package-anywhere==1.0\n"


@case("execution_env_without_activate", "E220 W202", Triton.REJECTS)
def _(spec):
    spec.files[f"{spec.name('double')}/env/bin/python3.txt"] = ""
    spec.files[spec.config_path("double")] += (
        'parameters { key: "EXECUTION_ENV_PATH" value: { string_value: "$$TRITON_MODEL_DIRECTORY/env" } }\n')


@case("batch_strategy_missing", "E221", Triton.REJECTS)
def _(spec):
    spec.files[spec.config_path("double")] += (
        'parameters { key: "TRITON_BATCH_STRATEGY_PATH" value: { string_value: "/nonexistent/libbatch.so" } }\n')


@case("version_folder_with_suffix", "E222", Triton.NO_ANSWER)  # the latest is "3", loaded from 3/: no model.py
def _(spec):
    spec.files[f"{spec.name('double')}/3_old/model.py"] = MODEL_PY


@case("version_folder_with_suffix_not_served", "W202", Triton.LOADS)  # read as version 1, the same as 1/
def _(spec):
    spec.files[f"{spec.name('double')}/1_old/model.py"] = MODEL_PY


@case("empty_tensor_name", "E303", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: c.output.add(data_type=c.output[0].data_type, dims=[-1]))


# -- 3xx semantics ----------------------------------------------------------------------------------
@case("no_inputs", "W301 E406", Triton.STRICTER)
def _(spec):
    spec.edit("double", lambda c: c.ClearField("input"))


@case("no_outputs", "W302 E407", Triton.STRICTER)
def _(spec):
    spec.edit("double", lambda c: c.ClearField("output"))


@case("duplicate_input", "W303", Triton.LOADS)  # Triton 2.51 loads it; which IN gets the data?
def _(spec):
    spec.edit("double", lambda c: c.input.add().CopyFrom(c.input[0]))


@case("missing_data_type", "E304", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: c.output[0].ClearField("data_type"))


@case("missing_dims", "E305", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: c.output[0].ClearField("dims"))


@case("zero_dimension", "E306", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: c.input[0].dims.__setitem__(0, 0))


@case("reshape_element_count", "E307", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: (c.input[0].dims.__setitem__(0, 4), c.input[0].reshape.shape.extend([3])))


@case("negative_max_batch_size", "E308", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: setattr(c, "max_batch_size", -1))


@case("dynamic_batching_without_batching", "W309 W503", Triton.LOADS)
def _(spec):
    spec.edit("double", lambda c: setattr(c, "max_batch_size", 0))


@case("preferred_batch_size_too_big", "E310", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: c.dynamic_batching.preferred_batch_size.append(16))


@case("default_priority_out_of_range", "E311", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.dynamic_batching, "priority_levels", 2))


@case("preserve_ordering_with_delay", "E311", Triton.REJECTS)
def _(spec):
    def change(c):
        c.dynamic_batching.preserve_ordering = True
        c.dynamic_batching.default_queue_policy.timeout_action = c.dynamic_batching.default_queue_policy.DELAY
        c.dynamic_batching.default_queue_policy.default_timeout_microseconds = 1000
    spec.edit("double", change)


@case("gpu_instances_on_cpu_target", "E313", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.instance_group[0], "kind", c.instance_group[0].KIND_GPU))


@case("cpu_instances_with_gpus", "E312", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: c.instance_group[0].gpus.append(0))


@case("warmup_unknown_input", "E314 W330", Triton.REJECTS)
def _(spec):
    add_warmup(spec, "NOPE", "TYPE_FP32", "zero_data: true")


@case("warmup_wrong_type", "E314", Triton.REJECTS)
def _(spec):
    add_warmup(spec, "IN", "TYPE_INT32", "zero_data: true")


@case("warmup_file_missing", "E314", Triton.REJECTS)
def _(spec):
    add_warmup(spec, "IN", "TYPE_FP32", 'input_data_file: "nowhere.bin"')


SEQUENCE = """sequence_batching {
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "%s" control [ { kind: %s %s } ] }
  ]
}
"""


@case("sequence_control_twice", "E315", Triton.REJECTS)
def _(spec):
    text = spec.files[spec.config_path("double")].replace("dynamic_batching { max_queue_delay_microseconds: 100 }", "")
    spec.files[spec.config_path("double")] = text + SEQUENCE % ("BEGIN", "CONTROL_SEQUENCE_START",
                                                               "int32_false_true: [ 0, 1 ]")


@case("sequence_corrid_type", "E315", Triton.REJECTS)
def _(spec):
    text = spec.files[spec.config_path("double")].replace("dynamic_batching { max_queue_delay_microseconds: 100 }", "")
    spec.files[spec.config_path("double")] = text + SEQUENCE % ("CORRID", "CONTROL_SEQUENCE_CORRID",
                                                               "data_type: TYPE_FP32")


@case("decoupled_with_response_cache", "E316", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: (setattr(c.model_transaction_policy, "decoupled", True),
                                   setattr(c.response_cache, "enable", True)))


# -- 4xx ensembles ----------------------------------------------------------------------------------
@case("ensemble_without_scheduling", "E401", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: c.ClearField("ensemble_scheduling"))


@case("scheduling_on_non_ensemble", "E401", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: setattr(c, "platform", "onnxruntime_onnx"))


@case("ensemble_instance_group", "E402", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: c.instance_group.add(count=1))


@case("ensemble_warmup", "E402", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: c.model_warmup.add(name="w", batch_size=1))


@case("ensemble_with_backend", "E419", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: setattr(c, "backend", "python"))


@case("ensemble_without_steps", "E403", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: (c.ensemble_scheduling.ClearField("step"), c.ensemble_scheduling.SetInParent()))


@case("step_model_missing", "E404", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: setattr(step(c, 0), "model_name", "ghost"))


@case("step_version_missing", "E405", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: setattr(step(c, 1), "model_version", 2))


@case("step_version_omitted", "E405", Triton.REJECTS, "pipe")  # omitted means version 0, not the latest
def _(spec):
    spec.edit("pipe", lambda c: step(c, 0).ClearField("model_version"))


@case("input_map_unknown_input", "E406 E408", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: rename_key(step(c, 0).input_map, "IN", "NOPE"))


@case("output_map_unknown_output", "E407", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: rename_key(step(c, 1).output_map, "OUT", "NOPE"))


@case("required_input_unmapped", "E408", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("double", lambda c: c.input.add(name="SCALE", data_type=c.input[0].data_type, dims=[1]))


@case("ensemble_input_unused", "E409", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: c.input.add(name="SPARE", data_type=c.input[0].data_type, dims=[-1]))


@case("ensemble_output_not_produced", "E410", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: c.output.add(name="SPARE", data_type=c.output[0].data_type, dims=[-1]))


@case("tensor_produced_twice", "E411", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: add_step(c, spec, "double", {"IN": "mid"}, {"OUT": "ENS_OUT"}))


@case("intermediate_unused", "E412", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: add_step(c, spec, "double", {"IN": "mid"}, {"OUT": "dangling"}))


@case("tensor_never_produced", "E412 E413", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: step(c, 1).input_map.__setitem__("IN", "nowhere"))


@case("step_cycle", "E414", Triton.REJECTS, "pipe")
def _(spec):
    def change(c):
        step(c, 0).input_map["IN"] = "b"
        step(c, 0).output_map["OUT"] = "a"
        step(c, 1).input_map["IN"] = "a"
        step(c, 1).output_map["OUT"] = "b"
        add_step(c, spec, "double", {"IN": "ENS_IN"}, {"OUT": "ENS_OUT"})
    spec.edit("pipe", change)


@case("nested_ensemble_cycle", "E414", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: setattr(step(c, 1), "model_name", spec.name("pipe")))


@case("data_type_mismatch", "E415", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: setattr(c.output[0], "data_type", DataType.TYPE_INT32))


@case("shape_mismatch", "E416", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: (c.output[0].ClearField("dims"), c.output[0].dims.extend([2, 2])))


@case("ensemble_batch_too_big", "E417", Triton.REJECTS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: setattr(c, "max_batch_size", 16))


@case("decoupled_branches_joined", "E418", Triton.REJECTS, "pipe")
def _(spec):
    spec.add_python_model("stream", DOUBLE.replace('"@double"', '"@stream"')
                          + "model_transaction_policy { decoupled: true }\n")

    def change(c):
        c.ensemble_scheduling.ClearField("step")
        add_step(c, spec, "stream", {"IN": "ENS_IN"}, {"OUT": "a"})
        add_step(c, spec, "double", {"IN": "ENS_IN"}, {"OUT": "b"})
        add_step(c, spec, "add", {"A": "a", "B": "b"}, {"SUM": "ENS_OUT"})
    spec.edit("pipe", change)


@case("decoupled_branch_through_nested_ensemble", "E418", Triton.REJECTS, "outer")
def _(spec):
    spec.add_python_model("stream", DOUBLE.replace('"@double"', '"@stream"')
                          + "model_transaction_policy { decoupled: true }\n")
    spec.edit("pipe", lambda c: setattr(step(c, 0), "model_name", spec.name("stream")))
    spec.add_ensemble("outer", PIPE.replace('"@pipe"', '"@outer"'))

    def change(c):
        c.ensemble_scheduling.ClearField("step")
        add_step(c, spec, "pipe", {"ENS_IN": "ENS_IN"}, {"ENS_OUT": "a"})
        add_step(c, spec, "double", {"IN": "ENS_IN"}, {"OUT": "b"})
        add_step(c, spec, "add", {"A": "a", "B": "b"}, {"SUM": "ENS_OUT"})
    spec.edit("outer", change)


# -- 3xx/4xx parity with Triton's own model-config checks ------------------------------------------
def append(spec: Spec, base: str, text: str) -> None:
    """Append config text to a model's config (for fields easier to write than to build)."""
    spec.files[spec.config_path(base)] += text.replace("@", spec.prefix) + "\n"


def use_sequence_batching(spec: Spec, text: str) -> None:
    """Swap double's dynamic batcher for a sequence batcher (the two are exclusive)."""
    path = spec.config_path("double")
    spec.files[path] = spec.files[path].replace("dynamic_batching { max_queue_delay_microseconds: 100 }", text)


WARMUP_SAMPLE = 'model_warmup [ { name: "w" batch_size: 1 inputs { key: "IN" value: { data_type: TYPE_FP32 %s } } } ]'
STATE = ('sequence_batching { state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_FP32 '
         'dims: [ 2 ] %s } ] }')


@case("warmup_shape_mismatch", "E317", Triton.REJECTS)
def _(spec):
    append(spec, "double", WARMUP_SAMPLE % "dims: [ 2, 2 ] zero_data: true")


@case("warmup_without_data", "E318", Triton.REJECTS)
def _(spec):
    append(spec, "double", WARMUP_SAMPLE % "dims: [ 4 ]")


@case("warmup_file_too_small", "E319", Triton.REJECTS)
def _(spec):
    append(spec, "double", WARMUP_SAMPLE % 'dims: [ 4 ] input_data_file: "in.bin"')
    spec.files[f"{spec.name('double')}/warmup/in.bin"] = bytes(8)


@case("valid_warmup_file", "", Triton.LOADS)
def _(spec):
    append(spec, "double", WARMUP_SAMPLE % 'dims: [ 4 ] input_data_file: "in.bin"')
    spec.files[f"{spec.name('double')}/warmup/in.bin"] = bytes(16)


@case("batch_input_two_sources", "E320", Triton.REJECTS)
def _(spec):
    append(spec, "double", 'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_INT32 '
                           'source_input: [ "IN", "IN" ] } ]')


@case("batch_input_wrong_type", "E320", Triton.REJECTS)
def _(spec):
    append(spec, "double", 'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_INT64 '
                           'source_input: "IN" } ]')


@case("batch_input_unknown_source", "E320", Triton.REJECTS)
def _(spec):
    append(spec, "double", 'batch_input [ { kind: BATCH_ITEM_SHAPE target_name: "N" data_type: TYPE_INT32 '
                           'source_input: "NOPE" } ]')


@case("batch_output_unknown_target", "E321", Triton.REJECTS)
def _(spec):
    append(spec, "double", 'batch_output [ { kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: "NOPE" '
                           'source_input: "IN" } ]')


@case("batch_output_without_source", "E321", Triton.REJECTS)
def _(spec):
    append(spec, "double", 'batch_output [ { kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: "OUT" } ]')


@case("shape_tensor_outside_tensorrt", "E322", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.input[0], "is_shape_tensor", True))


@case("non_linear_io_outside_tensorrt", "E322", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.output[0], "is_non_linear_format_io", True))


@case("image_format_without_three_dims", "E323", Triton.REJECTS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.input[0], "format", c.input[0].FORMAT_NHWC))


@case("sequence_with_response_cache", "E325", Triton.REJECTS)
def _(spec):
    use_sequence_batching(spec, "sequence_batching { }\nresponse_cache { enable: true }")


@case("batch_strategy_with_sequence_batcher", "E221", Triton.REJECTS)
def _(spec):
    use_sequence_batching(spec, "sequence_batching { }")
    append(spec, "double", 'parameters { key: "TRITON_BATCH_STRATEGY_PATH" value: { string_value: "/nowhere/b.so" } }')


@case("negative_instance_count", "W327 W502", Triton.LOADS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.instance_group[0], "count", -1))


@case("valid_string_correlation_id", "", Triton.LOADS)
def _(spec):
    use_sequence_batching(spec, 'sequence_batching { control_input [ { name: "CORRID" control [ '
                                '{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] } ] }')


@case("correlation_id_with_values", "E315", Triton.REJECTS)
def _(spec):
    use_sequence_batching(spec, 'sequence_batching { control_input [ { name: "CORRID" control [ '
                                '{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_INT64 int32_false_true: [ 0, 1 ] } '
                                '] } ] }')


@case("initial_state_dims_mismatch", "E328", Triton.REJECTS)
def _(spec):
    use_sequence_batching(spec, STATE % 'initial_state { name: "s" data_type: TYPE_FP32 dims: [ 3 ] zero_data: true }')


@case("initial_state_without_data", "E328", Triton.REJECTS)
def _(spec):
    use_sequence_batching(spec, STATE % 'initial_state { name: "s" data_type: TYPE_FP32 dims: [ 2 ] }')


@case("valid_initial_state", "", Triton.LOADS)
def _(spec):
    use_sequence_batching(spec, STATE % 'initial_state { name: "s" data_type: TYPE_FP32 dims: [ 2 ] zero_data: true }')


@case("growable_state_without_single_buffer", "W329", Triton.LOADS)
def _(spec):
    use_sequence_batching(spec, STATE % "use_growable_memory: true")


@case("warmup_feeds_extra_tensor", "W330", Triton.LOADS)
def _(spec):
    append(spec, "double", 'model_warmup [ { name: "w" batch_size: 1 inputs [ '
                           '{ key: "IN" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }, '
                           '{ key: "NOPE" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } ] } ]')


@case("valid_warmup_empty_dimension", "", Triton.LOADS)
def _(spec):
    append(spec, "double", WARMUP_SAMPLE % "dims: [ 0 ] zero_data: true")


# Triton 2.51 refuses this ("failed to run warmup sample 'w': batch size 16 ..., max allowed is 8") but in about
# half the tries seen it never answers the load request, so it stays offline.
@case("warmup_batch_over_max", "E314", Triton.OFFLINE)
def _(spec):
    append(spec, "double", WARMUP_SAMPLE.replace("batch_size: 1", "batch_size: 16") % "dims: [ 4 ] zero_data: true")


@case("repository_agent_not_installed", "W331", Triton.REJECTS)  # no repository agent is installed here
def _(spec):
    append(spec, "double", 'model_repository_agents { agents [ { name: "decrypt" } ] }')


@case("step_writes_ensemble_input", "W420", Triton.LOADS, "pipe")
def _(spec):
    spec.edit("pipe", lambda c: add_step(c, spec, "double", {"IN": "mid"}, {"OUT": "ENS_IN"}))


# -- 5xx beyond Triton ------------------------------------------------------------------------------
@case("no_queue_delay", "W501", Triton.LOADS)
def _(spec):
    spec.edit("double", lambda c: c.dynamic_batching.ClearField("max_queue_delay_microseconds"))


@case("single_python_instance", "W502", Triton.LOADS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.instance_group[0], "count", 1))


@case("non_batching_step_in_batching_ensemble", "W503", Triton.LOADS, "pipe")
def _(spec):
    spec.edit("double", lambda c: (setattr(c, "max_batch_size", 0), c.ClearField("dynamic_batching")))


@case("unpinned_versions", "W504", Triton.LOADS)
def _(spec):
    spec.files[f"{spec.name('double')}/2/model.py"] = MODEL_PY


@case("batching_without_batcher", "W505", Triton.LOADS)
def _(spec):
    spec.edit("double", lambda c: c.ClearField("dynamic_batching"))


@case("timeout_override_without_default", "W506", Triton.LOADS)
def _(spec):
    spec.edit("double", lambda c: setattr(c.dynamic_batching.default_queue_policy, "allow_timeout_override", True))


@case("queue_policy_on_a_model_that_does_not_batch", "W503", Triton.LOADS)  # the policy needs the batcher's field
def _(spec):
    def edit(config):
        config.max_batch_size = 0
        config.dynamic_batching.default_queue_policy.max_queue_size = 4
    spec.edit("double", edit)


@case("warning_silenced_in_config", "", Triton.LOADS)
def _(spec):
    spec.edit("double", lambda c: c.dynamic_batching.ClearField("max_queue_delay_microseconds"))
    spec.files[spec.config_path("double")] = "# tools-validate: ignore W501\n" + spec.files[spec.config_path("double")]



# -- found by differential fuzzing against the real Triton -------------------------------------------
@case("version_folder_beyond_int64", "E223 W504", Triton.NO_ANSWER)  # Triton aborts reading the folder name
def _(spec):
    spec.files[f"{spec.name('double')}/99999999999999999999/model.py"] = MODEL_PY


@case("model_py_with_bom", "", Triton.LOADS)  # Python's import honours a UTF-8 BOM
def _(spec):
    spec.files[f"{spec.name('double')}/1/model.py"] = "\ufeff" + MODEL_PY


@case("not_utf8_in_comment", "", Triton.LOADS)  # Triton's parser skips comments, whatever their bytes
def _(spec):
    spec.files[spec.config_path("double")] = b"# caf\xe9\n" + spec.files[spec.config_path("double")].encode()


@case("invalid_escape_in_string", "E103", Triton.REJECTS)  # Python's text_format lets `\q` through
def _(spec):
    append(spec, "double", 'parameters { key: "pattern" value: { string_value: "a\\qb" } }')


@case("priority_queue_policy_without_levels", "", Triton.LOADS)  # ignored while priority_levels is 0
def _(spec):
    spec.edit("double", lambda c: c.dynamic_batching.priority_queue_policy[3].CopyFrom(
        model_config_pb2.ModelQueuePolicy(max_queue_size=4)))


@case("auto_instances_with_gpus_on_cpu", "E312", Triton.REJECTS)  # KIND_AUTO is KIND_CPU without GPUs
def _(spec):
    spec.edit("double", lambda c: (setattr(c.instance_group[0], "kind", c.instance_group[0].KIND_AUTO),
                                   c.instance_group[0].gpus.append(0)))


@case("step_version_below_latest", "E405", Triton.REJECTS, "pipe")  # only -1 means the latest
def _(spec):
    spec.edit("pipe", lambda c: setattr(step(c, 0), "model_version", -2))


@case("field_newer_than_the_server", "E103", Triton.REJECTS)  # model_metrics came after Triton 2.51
def _(spec):
    append(spec, "double", 'model_metrics { metric_control [ { metric_identifier { family: "nv_inference_count" } '
                           'histogram_options { buckets: [ 1, 10 ] } } ] }')


@case("force_cpu_only_not_yes_or_no", "E224", Triton.REJECTS)
def _(spec):
    append(spec, "double", 'parameters { key: "FORCE_CPU_ONLY_INPUT_TENSORS" value: { string_value: "true" } }')


@case("backend_name_in_capitals", "E225", Triton.REJECTS)  # backends are found by their exact name
def _(spec):
    spec.edit("double", lambda c: setattr(c, "backend", "Python"))


@case("runtime_model_py_on_python_backend", "E226", Triton.REJECTS)  # runtime model.py means a Python-based backend
def _(spec):
    spec.edit("double", lambda c: setattr(c, "runtime", "model.py"))


@case("number_with_plus_sign", "E103", Triton.REJECTS)  # Python's text_format takes "+8"; Triton's parser does not
def _(spec):
    spec.files[spec.config_path("double")] = spec.files[spec.config_path("double")].replace(
        "max_batch_size: 8", "max_batch_size: +8")


def prefix_of(index: int) -> str:
    return f"c{index:02d}_"


def model_name(prefix: str, target: str) -> str:
    """A case's model name: the prefix goes after the dot of a hidden target (".hidden" -> ".c07_hidden")."""
    hidden = "." if target.startswith(".") else ""
    return hidden + prefix + target.removeprefix(".")


def build_corpus(root: Path) -> dict[str, tuple[Case, str]]:
    """Write every case into one repository; case id -> (case, its model-name prefix)."""
    built = {}
    for index, item in enumerate(CASES):
        prefix = prefix_of(index)
        item.build(prefix).write(root)
        built[item.id] = (item, prefix)
    return built

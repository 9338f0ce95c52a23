"""What a validation finding is, and the catalogue of stable codes (one source of truth per code)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    code: str
    title: str
    # True when Triton itself refuses to load a model with this problem (the differential test keeps this
    # honest); False for problems Triton accepts, which users may silence.
    triton_rejects: bool

    @property
    def severity(self) -> Severity:
        return Severity.ERROR if self.code.startswith("E") else Severity.WARNING


_RULES = [
    # 1xx: reading and syntax
    Rule("E101", "model folder has no config.pbtxt and its backend cannot auto-complete one", False),
    Rule("E102", "file cannot be read as text", True),
    Rule("E103", "config is not valid protobuf text for ModelConfig", True),
    Rule("E104", "repository cannot be read", True),
    Rule("W105", "config.pbtxt missing; relying on the backend's auto-complete", False),
    # 2xx: repository layout
    Rule("E201", "config name differs from the model folder name", True),
    Rule("W202", "non-numeric folder inside a model is ignored by Triton", False),
    Rule("W203", "zero-prefixed version folder is ignored by Triton", False),
    Rule("E204", "model has no version folder", True),
    Rule("E205", "version policy selects no version that exists on disk", True),
    Rule("E206", "neither backend nor platform is set", False),
    Rule("E207", "unknown platform", True),
    Rule("W208", "backend is not one Triton ships; it must be installed as a custom backend", False),
    Rule("E209", "backend and platform disagree", False),
    Rule("E210", "a served version lacks the file its backend loads", True),
    Rule("E211", "Python model file does not compile", True),
    Rule("E212", "Python model file does not define TritonPythonModel with execute", True),
    # 3xx: model semantics
    Rule("E301", "model declares no inputs and cannot auto-complete them", False),
    Rule("E302", "model declares no outputs and cannot auto-complete them", False),
    Rule("E303", "tensor name is empty or used twice", False),
    Rule("E304", "tensor has no valid data_type", True),
    Rule("E305", "tensor has no dims", True),
    Rule("E306", "dimension is neither >= 1 nor -1", True),
    Rule("E307", "reshape does not keep the element count", True),
    Rule("E308", "max_batch_size is negative", True),
    Rule("E309", "dynamic batching on a model that does not batch", False),
    Rule("E310", "preferred batch size is not in 1..max_batch_size", True),
    Rule("E311", "queue policy is incoherent", True),
    Rule("E312", "instance group is invalid", True),
    Rule("E313", "KIND_GPU instance group on a CPU-only target", True),
    Rule("E314", "model_warmup does not match the model's inputs", True),
    Rule("E315", "sequence batching controls are invalid", True),
    Rule("E316", "decoupled transaction policy used where it cannot work", True),
    # 4xx: ensembles
    Rule("E401", "platform 'ensemble' and ensemble_scheduling must come together", True),
    Rule("E402", "ensemble sets instance_group, optimization or model_warmup", True),
    Rule("E403", "ensemble step list or step is incomplete", True),
    Rule("E404", "ensemble step calls a model that is not in the repository", True),
    Rule("E405", "ensemble step asks for a version that is not served", True),
    Rule("E406", "input_map key is not an input of the composing model", True),
    Rule("E407", "output_map key is not an output of the composing model", True),
    Rule("E408", "required input of the composing model is not mapped", True),
    Rule("E409", "ensemble input is not consumed by any step", True),
    Rule("E410", "ensemble output is not produced by any step", True),
    Rule("E411", "ensemble tensor is produced more than once", True),
    Rule("E412", "intermediate ensemble tensor is never used", True),
    Rule("E413", "ensemble tensor is consumed but nothing produces it", True),
    Rule("E414", "ensemble steps or nested ensembles form a cycle", True),
    Rule("E415", "data types disagree along an ensemble tensor", True),
    Rule("E416", "shapes disagree along an ensemble tensor", True),
    Rule("E417", "ensemble max_batch_size exceeds a composing model's", True),
    Rule("E418", "ensemble step mixes outputs of different decoupled branches", True),
    # 5xx: beyond Triton (loads, but hurts in production)
    Rule("W501", "dynamic batching without a queue delay", False),
    Rule("W502", "Python model with a single instance on a multi-core target", False),
    Rule("W503", "ensemble batches but a composing model does not", False),
    Rule("W504", "several versions on disk but the version policy is not pinned", False),
    Rule("W505", "model accepts batches but no batcher forms them", False),
    # 9xx: the real server
    Rule("E901", "Triton refused to load the model", True),
    Rule("E902", "Triton could not be started to check the repository", False),
]
RULES: dict[str, Rule] = {rule.code: rule for rule in _RULES}


@dataclass(frozen=True)
class Step:
    """An ensemble step, as users count them (0-based, as in Triton's messages) and the model it calls."""

    index: int
    model: str


@dataclass(frozen=True)
class Finding:
    """One problem: a stable code, where it is, and one sentence saying what is wrong and how to fix it."""

    code: str
    message: str
    model: str | None = None
    file: Path | None = None
    line: int | None = None
    column: int | None = None
    step: Step | None = None

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    @property
    def severity(self) -> Severity:
        return self.rule.severity

    @property
    def location(self) -> str:
        if self.file is None:
            return ""
        return ":".join(str(part) for part in (self.file, self.line, self.column) if part is not None)


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)

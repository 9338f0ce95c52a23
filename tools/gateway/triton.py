"""The gateway's calls to Triton over gRPC (asyncio): one bidirectional stream per generation request, the embedding
ensemble per embedding request, and Triton's refusals turned into OpenAI's HTTP statuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tools import settings
from tools.gateway.catalogue import Model
from tools.gateway.schema import APIError
from tools.serving import client

# Triton's gRPC statuses as OpenAI's HTTP ones; anything else is the server's fault.
STATUSES = {"StatusCode.INVALID_ARGUMENT": 400, "StatusCode.NOT_FOUND": 404, "StatusCode.UNAVAILABLE": 503}
# Over a gRPC stream Triton 2.51 sends an error's message without its status (ModelStreamInferResponse carries only
# `error_message`): a refusal there is the request's fault (the model's INVALID_ARG, an input Triton rejects)
# unless its words say the server could not take it.
UNABLE = (*client.QUEUE_REFUSALS, "is not healthy", "is not ready")
UNKNOWN_MODEL = "Request for unknown model"  # e.g. unloaded since the catalogue was read


@dataclass(frozen=True)
class Piece:
    """New text from the model; the last piece of a request also carries its finish reason and token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def refusal(exc: Exception, url: str) -> APIError:
    """The APIError for what a Triton call failed with."""
    if isinstance(exc, InferenceServerException):
        status = exc.status()
        if status is not None:
            code = STATUSES.get(str(status), 500)
        elif UNKNOWN_MODEL in exc.message():
            code = 404
        else:
            code = 503 if any(words in exc.message() for words in UNABLE) else 400
        return APIError(code, exc.message())
    if isinstance(exc, grpc.aio.AioRpcError):
        code = STATUSES.get(str(exc.code()), 500)
        return APIError(code, f"Triton at {url}: {exc.details()}" if code == 503 else exc.details())
    if isinstance(exc, client.EmbeddingError):
        return APIError(STATUSES.get(str(exc.status), 503 if exc.status is None else 500), str(exc))
    raise exc


def _scalar(result, name: str):
    value = result.as_numpy(name)
    return None if value is None else value.reshape(-1)[0]


def _text(value) -> str:
    return "" if value is None else value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


async def generate(connection, url: str, model: Model, parameters: dict, stream: bool, prompt: str | None = None,
                   messages: list[dict] | None = None) -> AsyncIterator[Piece]:
    """The model's pieces as Triton streams them. Closing this iterator early (a client went away) cancels the
    Triton request, so the model stops generating."""
    name, value = ("messages", json.dumps(messages)) if messages is not None else (settings.GENERATE_INPUT, prompt)
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value.encode("utf-8")], dtype=np.object_))

    async def one_request():
        yield {"model_name": model.name, "inputs": [tensor], "parameters": {**parameters, "stream": stream},
               "enable_empty_final_response": True}

    responses = connection.stream_infer(one_request())
    try:
        async for result, error in responses:
            if error is not None:
                raise refusal(error, url)
            final = result.get_response().parameters["triton_final_response"].bool_param
            text = _text(_scalar(result, settings.GENERATE_OUTPUT))
            if final:
                yield Piece(text, _text(_scalar(result, "finish_reason")) or "stop",
                            int(_scalar(result, "prompt_tokens") or 0), int(_scalar(result, "completion_tokens") or 0))
                return
            if text:
                yield Piece(text)
        raise APIError(502, f"{model.name} ended its stream without a final response")
    except (InferenceServerException, grpc.aio.AioRpcError) as exc:
        raise refusal(exc, url) from None
    finally:
        responses.cancel()


async def embed(connection, url: str, model: Model, texts: list[str]) -> tuple[np.ndarray, int]:
    """Embeddings of `texts` and their token count (the ensemble's tokenizer counts them, concurrently)."""

    async def count() -> int:
        if model.counter is None:
            return 0
        inputs = [client.text_input(connection, texts)]
        outputs = [grpcclient.InferRequestedOutput(settings.TOKEN_MASK)]
        result = await connection.infer(model.counter, inputs, outputs=outputs)
        return int(result.as_numpy(settings.TOKEN_MASK).sum())

    try:
        embeddings, tokens = await asyncio.gather(client.embed_async(connection, texts, model.name), count())
    except (client.EmbeddingError, InferenceServerException) as exc:
        raise refusal(exc, url) from None
    return embeddings, tokens

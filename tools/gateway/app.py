"""The OpenAI-compatible HTTP API over one Triton server: /v1/models, /v1/completions, /v1/chat/completions (with
server-sent events when `stream` is set) and /v1/embeddings, answering errors in OpenAI's error JSON."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from tritonclient.utils import InferenceServerException

from tools.gateway import catalogue, schema, triton
from tools.gateway.catalogue import Kind, Model
from tools.gateway.schema import APIError, ChatRequest, CompletionRequest, EmbeddingRequest
from tools.serving import client


@dataclass
class Backend:
    """The Triton server behind the gateway: its gRPC address, the control-key headers its repository index needs,
    and (once started) the connection and the models it can serve."""

    url: str
    headers: dict[str, str] | None = None
    connection: object = None
    models: dict[str, Model] = field(default_factory=dict)

    async def refresh(self) -> dict[str, Model]:
        try:
            self.models = await catalogue.discover(self.connection, self.headers)
        except InferenceServerException as exc:
            raise triton.refusal(exc, self.url) from None
        return self.models

    async def model(self, name: str, kind: Kind) -> Model:
        """The named model of that kind; a name not seen yet refreshes the catalogue once (it may have just loaded)."""
        model = self.models.get(name) or (await self.refresh()).get(name)
        if model is None or model.kind is not kind:
            servable = sorted(m.name for m in self.models.values() if m.kind is kind)
            raise APIError(404, f"the model {name!r} does not exist or is not a ready {kind} model "
                                f"(ready {kind} models: {', '.join(servable) or 'none'})",
                           param="model", code="model_not_found")
        return model


def create_app(backend: Backend, on_startup_error: Callable[[Exception], None] | None = None) -> FastAPI:
    """The FastAPI app; it connects to Triton and reads the catalogue at startup (a failure there goes to
    `on_startup_error`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        backend.connection = client.connect(client.Protocol.GRPC, backend.url, aio=True)
        try:
            await backend.refresh()
        except APIError as exc:  # reported, not raised: uvicorn would print a traceback; the starter stops the server
            if on_startup_error is not None:
                on_startup_error(exc)
        yield
        await backend.connection.close()

    app = FastAPI(title="OpenAI-compatible gateway to Triton", lifespan=lifespan)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        error = APIError(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where or None)
        return JSONResponse(error.body(), status_code=400)

    @app.get("/v1/models")
    async def list_models() -> dict:
        created = schema.now()
        models = await backend.refresh()
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "triton"}
                                           for name in sorted(models)]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        model = await backend.model(body.model, Kind.GENERATION)
        pieces = triton.generate(backend.connection, backend.url, model, body.parameters(), body.stream,
                                 prompt=body.text())
        return await _answer(body, pieces, "cmpl", "text_completion", _completion_choice)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        model = await backend.model(body.model, Kind.GENERATION)
        if not model.chat:
            raise APIError(400, f"{model.name} takes no chat messages (no `messages` input)", param="messages")
        pieces = triton.generate(backend.connection, backend.url, model, body.parameters(), body.stream,
                                 messages=[message.plain() for message in body.messages])
        return await _answer(body, pieces, "chatcmpl", "chat.completion", _chat_choice)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict:
        model = await backend.model(body.model, Kind.EMBEDDING)
        vectors, tokens = await triton.embed(backend.connection, backend.url, model, body.texts())
        encode = (lambda row: base64.b64encode(row.astype("<f4").tobytes()).decode()) \
            if body.encoding_format == "base64" else (lambda row: row.tolist())
        data = [{"object": "embedding", "index": i, "embedding": encode(row)} for i, row in enumerate(vectors)]
        return {"object": "list", "model": model.name, "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return app


def _completion_choice(text: str | None, reason: str | None, first: bool, whole: bool) -> dict:
    return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": schema.finish_reason(reason)}


def _chat_choice(text: str | None, reason: str | None, first: bool, whole: bool) -> dict:
    if whole:
        return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": schema.finish_reason(reason)}
    delta = {"role": "assistant", "content": text or ""} if first else {} if text is None else {"content": text}
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": schema.finish_reason(reason)}


async def _answer(body, pieces: AsyncIterator[triton.Piece], prefix: str, kind: str, choice: Callable):
    """One JSON answer, or server-sent events in OpenAI's chunk format; a refusal before the first piece is a plain
    error answer with its status, one after it an `error` event (the HTTP status is gone by then)."""
    header = {"id": schema.new_id(prefix), "created": schema.now(), "model": body.model}
    if not body.stream:
        text, last = "", None
        async for piece in pieces:
            text, last = text + piece.text, piece
        return {**header, "object": kind, "choices": [choice(text, last.finish_reason, True, True)],
                "usage": schema.usage(last.prompt_tokens, last.completion_tokens)}
    first = await anext(pieces)  # refusals surface here, before any byte is sent
    chunk = {**header, "object": f"{kind}.chunk" if kind == "chat.completion" else kind}

    def event(payload: dict) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    async def events() -> AsyncIterator[str]:
        try:
            if kind == "chat.completion":  # OpenAI's first chat chunk carries the role
                yield event({**chunk, "choices": [choice(None, None, True, False)]})
            piece = first
            while True:
                if piece.text:
                    yield event({**chunk, "choices": [choice(piece.text, None, False, False)]})
                if piece.finish_reason is not None:
                    yield event({**chunk, "choices": [choice(None, piece.finish_reason, False, False)]})
                    if body.include_usage:
                        yield event({**chunk, "choices": [],
                                     "usage": schema.usage(piece.prompt_tokens, piece.completion_tokens)})
                    break
                piece = await anext(pieces)
        except APIError as exc:
            yield event(exc.body())
        finally:
            await pieces.aclose()  # a client that went away cancels the Triton request here
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


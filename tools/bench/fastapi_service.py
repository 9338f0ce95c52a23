"""Benchmark case 3, what a user would write instead of Triton: a FastAPI microservice that wraps the same
pipeline and embeds one text per request (`tools bench` starts it on loopback)."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from tools import settings
from tools.bench.pipeline import EmbeddingPipeline


class EmbedRequest(BaseModel):
    text: str


def create_app(threads: int, repository: Path = settings.MODEL_REPOSITORY) -> FastAPI:
    pipeline = EmbeddingPipeline(threads, repository)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/embed")
    def embed(request: EmbedRequest) -> dict[str, list[float]]:
        return {"embedding": pipeline([request.text])[0].tolist()}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=settings.DEFAULT_HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads.")
    parser.add_argument("--repository", type=Path, default=settings.MODEL_REPOSITORY,
                        help="Model repository whose model logic to serve.")
    options = parser.parse_args()
    uvicorn.run(create_app(options.threads, options.repository), host=options.host, port=options.port,
                log_level="warning")

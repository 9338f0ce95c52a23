"""Embed texts on a running server and present the answer: shape, leading values, cosine similarity matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from tools import settings
from tools.serving import client

# What `tools serve` sends once the server is ready: a paraphrase pair and an unrelated sentence.
SMOKE_TEXTS = ("A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today.")
LEADING_VALUES = 4


@dataclass(frozen=True)
class InferResult:
    """One embedding request and its answer."""

    protocol: client.Protocol
    url: str
    model: str
    texts: tuple[str, ...]
    embeddings: np.ndarray

    @property
    def similarity(self) -> np.ndarray:
        return client.cosine_similarity(self.embeddings)

    def as_json(self) -> dict:
        return {
            "model": self.model, "protocol": str(self.protocol), "url": self.url, "texts": list(self.texts),
            "shape": list(self.embeddings.shape),
            "embeddings": self.embeddings.round(6).tolist(),
            "similarity": self.similarity.round(6).tolist(),
        }


def run(texts: Sequence[str], protocol: client.Protocol, url: str | None = None,
        model: str = settings.EMBED_MODEL, version: str = "") -> InferResult:
    url = url or client.default_url(protocol)
    embeddings = client.embed_texts(texts, protocol, url, model, version)
    return InferResult(protocol, url, model, tuple(texts), embeddings)


def render(result: InferResult, console: Console) -> None:
    """Human output: the shape, each text with its first values, then the similarity matrix."""
    console.print(f"[bold]{result.model}[/] over {result.protocol} at {result.url}: "
                  f"embeddings {tuple(result.embeddings.shape)} {result.embeddings.dtype}", highlight=False)
    for index, (text, row) in enumerate(zip(result.texts, result.embeddings, strict=True)):
        leading = ", ".join(f"{v:+.4f}" for v in row[:LEADING_VALUES])
        console.print(f"  [{index}] [{leading}, ...]  {_short(text)}", highlight=False, markup=False)
    table = Table(title="cosine similarity", title_justify="left", show_edge=False)
    table.add_column("")
    for index in range(len(result.texts)):
        table.add_column(str(index), justify="right")
    for index, row in enumerate(result.similarity):
        table.add_row(str(index), *(f"{value:.3f}" for value in row))
    console.print(table)


def smoke(http_url: str, grpc_url: str, console: Console) -> list[InferResult]:
    """Embed SMOKE_TEXTS over both protocols, print both, and insist they agree."""
    results = [run(SMOKE_TEXTS, client.Protocol.HTTP, http_url), run(SMOKE_TEXTS, client.Protocol.GRPC, grpc_url)]
    for result in results:
        render(result, console)
    gap = float(np.abs(results[0].embeddings - results[1].embeddings).max())
    if gap > 1e-5:
        raise client.EmbeddingError(f"HTTP and gRPC answers differ by {gap:.2e}")
    return results


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."

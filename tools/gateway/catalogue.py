"""Which of a Triton server's ready models the gateway can serve, told from their metadata and configuration (never
from their names): generation models are decoupled and take `text_input` to `text_output`; embedding models take the
embedding ensemble's text input to its embedding output."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from tools import settings


class Kind(enum.StrEnum):
    GENERATION = "generation"
    EMBEDDING = "embedding"


@dataclass(frozen=True)
class Model:
    """A servable model; `counter` is the model whose attention mask counts an embedding request's tokens."""

    name: str
    kind: Kind
    chat: bool = False  # takes `messages` (rendered with the model's own chat template)
    counter: str | None = None


def _tensors(metadata: dict, key: str) -> dict[str, str]:
    return {tensor["name"]: tensor["datatype"] for tensor in metadata.get(key, [])}


def classify(metadata: dict, config: dict) -> Kind | None:
    """The kind of model these (tritonclient JSON) metadata and config describe, or None when the gateway cannot
    serve it."""
    inputs, outputs = _tensors(metadata, "inputs"), _tensors(metadata, "outputs")
    decoupled = config.get("model_transaction_policy", {}).get("decoupled", False)
    if decoupled and inputs.get(settings.GENERATE_INPUT) == "BYTES" \
            and outputs.get(settings.GENERATE_OUTPUT) == "BYTES":
        return Kind.GENERATION
    if not decoupled and inputs.get(settings.EMBED_INPUT) == "BYTES" and outputs.get(settings.EMBED_OUTPUT) == "FP32":
        return Kind.EMBEDDING
    return None


def token_counter(config: dict) -> str | None:
    """The ensemble step that reads the text and answers an attention mask (the tokenizer): its mask counts tokens."""
    for step in config.get("ensemble_scheduling", {}).get("step", []):
        if settings.EMBED_INPUT in step.get("input_map", {}).values() \
                and settings.TOKEN_MASK in step.get("output_map", {}):
            return step["model_name"]
    return None


async def discover(client, headers: dict[str, str] | None) -> dict[str, Model]:
    """Name -> servable model, for every ready model in the repository index (`headers` carry the control key the
    index needs when the server restricts its repository API)."""
    index = await client.get_model_repository_index(headers=headers, as_json=True)
    names = sorted({entry["name"] for entry in index.get("models", []) if entry.get("state") == "READY"})

    async def describe(name: str) -> Model | None:
        metadata, config = await asyncio.gather(client.get_model_metadata(name, as_json=True),
                                                client.get_model_config(name, as_json=True))
        config = config.get("config", {})
        kind = classify(metadata, config)
        if kind is None:
            return None
        chat = "messages" in _tensors(metadata, "inputs")
        return Model(name, kind, chat=chat, counter=token_counter(config) if kind is Kind.EMBEDDING else None)

    described = await asyncio.gather(*(describe(name) for name in names))
    return {model.name: model for model in described if model is not None}

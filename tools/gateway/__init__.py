"""An OpenAI-compatible HTTP front over Triton's gRPC endpoint: chat and text completions (streamed as
server-sent events) from decoupled generation models, embeddings from the embedding ensemble, for OpenAI's clients."""

from tools.gateway.server import Gateway, GatewayOptions

__all__ = ["Gateway", "GatewayOptions"]

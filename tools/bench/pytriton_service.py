"""Benchmark case 4: PyTriton binding the same pipeline as one Python callable with its @batch decorator.

PyTriton starts its own tritonserver; every endpoint is bound to loopback on the ports given
(`tools bench` picks free ones: the default metrics port may be taken).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from tools import settings
from tools.bench.pipeline import EmbeddingPipeline

MODEL_NAME = "embed_pytriton"
MAX_BATCH_SIZE = 64
MAX_QUEUE_DELAY_US = 1000


def serve(http_port: int, grpc_port: int, metrics_port: int, threads: int,
          repository: Path = settings.MODEL_REPOSITORY) -> None:
    pipeline = EmbeddingPipeline(threads, repository)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        texts = [raw.decode("utf-8") for raw in inputs[settings.EMBED_INPUT].reshape(-1)]
        return {settings.EMBED_OUTPUT: pipeline(texts)}

    host = settings.DEFAULT_HOST
    config = TritonConfig(http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port,
                          metrics_address=host, metrics_port=metrics_port, exit_on_error=True)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME, infer_func=infer,
            inputs=[Tensor(name=settings.EMBED_INPUT, dtype=bytes, shape=(1,))],
            outputs=[Tensor(name=settings.EMBED_OUTPUT, dtype=np.float32, shape=(settings.EMBEDDING_DIM,))],
            config=ModelConfig(max_batch_size=MAX_BATCH_SIZE,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=MAX_QUEUE_DELAY_US)),
            strict=True)
        triton.serve()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads.")
    parser.add_argument("--repository", type=Path, default=settings.MODEL_REPOSITORY,
                        help="Model repository whose model logic to serve.")
    options = parser.parse_args()
    serve(options.http_port, options.grpc_port, options.metrics_port, options.threads, options.repository)

"""What the OpenAI-compatible gateway adds to a short completion: the median latency of the same request sent
directly over Triton's gRPC stream (tritonclient asyncio, as the gateway itself sends it) and through the gateway
with OpenAI's Python client, one request at a time, interleaved (the machine may be shared), on a real tritonserver.

Two models: the shipped `generate` (SmolLM2 through llama-cpp-python, greedy, a few tokens) and, to see the
gateway's own cost without a language model's compute, the tests' tiny decoupled model that answers at once.

Run from the checkout: .venv/bin/python -m loadtests.bench_gateway [--rounds 40] [--max-tokens 4]
(needs the generate model's dependencies: pip install --no-deps -r model_repository/generate/requirements.txt)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import openai
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio

from tests.support import paths
from tests.support.generation_model import write_generation_model
from tools import processes, settings
from tools.gateway import Gateway, GatewayOptions
from tools.serving import runtime

TINY = "generate_tiny"
PROMPT = "Once upon a time"


async def direct(connection: grpcaio.InferenceServerClient, model: str, max_tokens: int) -> float:
    """Seconds for one non-streamed completion over Triton's gRPC stream (a connection kept open, as the gateway's)."""
    started = time.perf_counter()
    tensor = grpcclient.InferInput(settings.GENERATE_INPUT, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([PROMPT.encode()], dtype=np.object_))

    async def one():
        yield {"model_name": model, "inputs": [tensor], "enable_empty_final_response": True,
               "parameters": {"max_tokens": max_tokens, "temperature": 0.0, "stream": False}}

    responses = connection.stream_infer(one())
    async for result, error in responses:
        assert error is None, error
        if result.get_response().parameters["triton_final_response"].bool_param:
            break
    responses.cancel()
    return time.perf_counter() - started


async def _connect(url: str) -> grpcaio.InferenceServerClient:
    return grpcaio.InferenceServerClient(url)


def through_gateway(api: openai.OpenAI, model: str, max_tokens: int) -> float:
    started = time.perf_counter()
    api.completions.create(model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=4)
    args = parser.parse_args()
    root = paths.REPOSITORY
    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch) / "repository"
        shutil.copytree(root / settings.GENERATE_MODEL, repository / settings.GENERATE_MODEL)
        write_generation_model(repository, TINY, token_delay_s=0.0)
        with runtime.running_server(runtime.ServerOptions.on_free_ports(repository=repository)) as server, \
                Gateway(GatewayOptions(server.grpc_url, port=processes.free_port(),
                                       control_key=server.control_key)) as gateway:
            loop = asyncio.new_event_loop()
            connection = loop.run_until_complete(_connect(server.grpc_url))
            api = openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0)
            print(f"{args.rounds} interleaved rounds, one request at a time, prompt {PROMPT!r}, "
                  f"max_tokens {args.max_tokens}, temperature 0")
            for model in (settings.GENERATE_MODEL, TINY):
                times: dict[str, list[float]] = {"direct gRPC": [], "gateway (openai client)": []}
                for _ in range(3):  # warm both paths
                    loop.run_until_complete(direct(connection, model, args.max_tokens))
                    through_gateway(api, model, args.max_tokens)
                for _ in range(args.rounds):
                    times["direct gRPC"].append(loop.run_until_complete(direct(connection, model, args.max_tokens)))
                    times["gateway (openai client)"].append(through_gateway(api, model, args.max_tokens))
                medians = {path: statistics.median(values) * 1000 for path, values in times.items()}
                direct_ms, gateway_ms = medians.values()
                # Rounds are pairs taken back to back: the median of their differences resists load that drifts.
                paired = statistics.median(g - d for d, g in zip(*times.values(), strict=True)) * 1000
                print(f"{model:>14}: " + "  ".join(f"{path} p50 {ms:.1f} ms" for path, ms in medians.items())
                      + f"  -> +{gateway_ms - direct_ms:.1f} ms ({gateway_ms / direct_ms:.2f}x); "
                        f"median paired difference +{paired:.1f} ms")
            loop.run_until_complete(connection.close())
            loop.close()


if __name__ == "__main__":
    main()

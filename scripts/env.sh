#!/usr/bin/env bash
# Installs or builds what Veil's tests need on a fresh machine. Idempotent:
# each step checks first and does nothing when its part is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# Rust components used by `make lint`.
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
fi

# PostgreSQL server (Debian package) for the store test suite.
if [ -x "$here/env-postgres.sh" ] || [ -f "$here/env-postgres.sh" ]; then
  bash "$here/env-postgres.sh"
fi

# iptables and ethtool (Debian packages) for the network-namespace tests (DPI simulator).
bash "$here/env-net.sh"

# ansible-core (PyPI) and OpenTofu (built from its Go module) for the task driver tests.
bash "$here/env-tools.sh"

# kube-apiserver, kube-controller-manager, kubectl and etcd (built from their Go modules) for the
# Kubernetes-mode tests and `make cluster`.
bash "$here/env-kube.sh"

# helm (built from its Go module) for the chart tests: `helm lint`, `helm template`.
bash "$here/env-helm.sh"

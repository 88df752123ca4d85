#!/usr/bin/env bash
# Builds the real `helm` the chart tests run (`helm lint`, `helm template`)
# from its Go module helm.sh/helm/v4 at the release pinned below. Cached under
# ${VEIL_CACHE:-$HOME/.cache/veil}/helm-$HELM_VERSION/ and linked into
# $VEIL_CACHE/bin. Idempotent: nothing is built when that version is there.
#
# Change the release by editing HELM_VERSION (any version
# `go list -m -versions helm.sh/helm/v4` shows whose go.mod the installed Go
# accepts), then `make env`; the old build stays in the cache until removed
# by hand.
set -euo pipefail

# Helm v4.3.1 needs Go >= 1.26 (its go.mod). Its module has no `replace`
# directives, so `go install module@version` builds it as released.
HELM_VERSION="v4.3.1"

VEIL_CACHE="${VEIL_CACHE:-$HOME/.cache/veil}"
BIN="$VEIL_CACHE/bin"
mkdir -p "$BIN"

log() { printf 'env-helm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

dest="$VEIL_CACHE/helm-$HELM_VERSION"

build() {
    command -v go >/dev/null || die "Go is needed to build helm; install Go >= 1.26"
    log "building helm $HELM_VERSION from its Go module (a few minutes the first time)"
    local started=$SECONDS
    mkdir -p "$dest"
    local gobin="$dest/.gobin"
    rm -rf "$gobin"
    # The same version variables Helm's own Makefile sets for a tagged
    # release, so `helm version` reports the release, not "v4.3".
    local ldflags="-s -w"
    ldflags+=" -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
    ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
    GOBIN="$gobin" CGO_ENABLED=0 GOFLAGS=-trimpath \
        go install -ldflags "$ldflags" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
    mv "$gobin/helm" "$dest/helm"
    rmdir "$gobin"
    log "helm built in $((SECONDS - started)) s"
}

if [[ ! -x "$dest/helm" ]]; then
    build
fi
ln -sfn "$dest/helm" "$BIN/helm"

echo "helm in $BIN (put it on PATH): $("$BIN/helm" version --short 2>/dev/null || true)"

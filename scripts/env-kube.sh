#!/usr/bin/env bash
# Builds the real Kubernetes parts the tests run: kube-apiserver,
# kube-controller-manager (its garbage collector acts on ownerReferences) and
# kubectl from the Go module k8s.io/kubernetes, and etcd from
# go.etcd.io/etcd/server/v3 at the version that Kubernetes release itself
# requires. Versions are pinned in scripts/kube/go.mod (written by
# scripts/kube/pin.sh, with go.sum); the binaries are cached under
# ${VEIL_CACHE:-$HOME/.cache/veil}, keyed by both versions, and linked into
# $VEIL_CACHE/bin. Idempotent: only binaries missing from the cache are built,
# so nothing is built when the pinned versions are already there.
#
# Change the release with `bash scripts/kube/pin.sh vX.Y.Z`, then `make env`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module_dir="$here/kube"

VEIL_CACHE="${VEIL_CACHE:-$HOME/.cache/veil}"
BIN="$VEIL_CACHE/bin"
mkdir -p "$BIN"

log() { printf 'env-kube: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The version a module is required at in scripts/kube/go.mod.
pinned() {
    local version
    version="$(awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$module_dir/go.mod")"
    [[ -n "$version" ]] || die "$1 is not required in $module_dir/go.mod; run scripts/kube/pin.sh"
    printf '%s' "$version"
}

KUBE_VERSION="$(pinned k8s.io/kubernetes)"
ETCD_VERSION="$(pinned go.etcd.io/etcd/server/v3)"
dest="$VEIL_CACHE/kubernetes-$KUBE_VERSION-etcd-$ETCD_VERSION"

# The binaries, by the Go package each is built from.
declare -A packages=(
    [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
    [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
    [kubectl]=k8s.io/kubernetes/cmd/kubectl
    [etcd]=go.etcd.io/etcd/server/v3
)
binaries=(kube-apiserver kube-controller-manager kubectl etcd)

# Builds the binaries named as arguments into $dest, leaving the others there.
build() {
    command -v go >/dev/null || die "Go is needed to build kube-apiserver; install Go >= $(sed -n 's/^go //p' "$module_dir/go.mod")"
    log "building $* (kubernetes $KUBE_VERSION, etcd $ETCD_VERSION) from their Go modules (takes minutes the first time)"
    local started=$SECONDS
    local work
    work="$(mktemp -d "$VEIL_CACHE/.kubernetes-build.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: `work` is local
    trap "rm -rf '$work'" EXIT
    # What `kubectl version` and the API server's /version report; Kubernetes'
    # own build sets the same variables (hack/lib/version.sh).
    local major="${KUBE_VERSION#v}"
    major="${major%%.*}"
    local minor="${KUBE_VERSION#v*.}"
    minor="${minor%%.*}"
    local ldflags="-s -w"
    local package
    for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $package.gitVersion=$KUBE_VERSION -X $package.gitMajor=$major"
        ldflags+=" -X $package.gitMinor=$minor -X $package.gitTreeState=clean"
    done
    local binary
    local targets=()
    for binary in "$@"; do
        targets+=("${packages[$binary]}")
    done
    # One `go build` for all of them, so shared packages compile once. The
    # checked-in go.sum is authoritative (-mod=readonly).
    (cd "$module_dir" && CGO_ENABLED=0 go build -mod=readonly -tags providerless -trimpath \
        -ldflags "$ldflags" -o "$work/" "${targets[@]}")
    # go names the etcd binary after its module path without the /v3 suffix.
    if [[ -e "$work/server" ]]; then
        mv "$work/server" "$work/etcd"
    fi
    mkdir -p "$dest"
    for binary in "$@"; do
        mv -f "$work/$binary" "$dest/$binary"
    done
    rm -rf "$work"
    trap - EXIT
    log "$* built in $((SECONDS - started)) s"
}

missing=()
for binary in "${binaries[@]}"; do
    [[ -x "$dest/$binary" ]] || missing+=("$binary")
done
if ((${#missing[@]} > 0)); then
    build "${missing[@]}"
fi
for binary in "${binaries[@]}"; do
    ln -sfn "$dest/$binary" "$BIN/$binary"
done

first_line() { local out; out="$("$@" 2>/dev/null || true)"; printf '%s' "${out%%$'\n'*}"; }
echo "kubernetes in $BIN (put it on PATH):"
echo "  kube-apiserver: $(first_line "$BIN/kube-apiserver" --version)"
echo "  kube-controller-manager: $(first_line "$BIN/kube-controller-manager" --version)"
echo "  kubectl: $(first_line "$BIN/kubectl" version --client)"
echo "  etcd: $(first_line "$BIN/etcd" --version)"

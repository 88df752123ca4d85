#!/usr/bin/env bash
# Installs the real tools the tests run: ansible-core (from PyPI, into a
# venv), OpenTofu, xray and sing-box (built from their Go modules). Idempotent: each tool
# is cached under ${VEIL_CACHE:-$HOME/.cache/veil}, keyed by its version, and
# only (re)built when that version is not there yet. Both are exposed in
# $VEIL_CACHE/bin, which `make env` users put on PATH.
#
# Change a version by editing the pins below; the old build stays in the cache
# until removed by hand.
set -euo pipefail

# ansible-core 2.18 is the newest line whose templating behaves like the
# playbooks people already have (2.19 changed it); it needs Python >= 3.11.
ANSIBLE_CORE_VERSION="2.18.19"
# OpenTofu's go.mod needs Go >= 1.24 at this version (1.12 needs 1.26).
OPENTOFU_VERSION="v1.10.10"
# xray-core's Go module tags encode the release: v1.260327.0 is Xray 26.3.27.
XRAY_CORE_VERSION="v1.260327.0"
# sing-box, the VLESS client seed 000 names; `with_utls` brings the uTLS
# fingerprints Reality clients need.
SING_BOX_VERSION="v1.14.1"

VEIL_CACHE="${VEIL_CACHE:-$HOME/.cache/veil}"
BIN="$VEIL_CACHE/bin"
mkdir -p "$BIN"

log() { printf 'env-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

install_ansible() {
    local dest="$VEIL_CACHE/ansible-core-$ANSIBLE_CORE_VERSION"
    if [[ ! -f "$dest/.complete" ]]; then
        command -v python3 >/dev/null || die "python3 is needed for ansible-core; install python3 and python3-venv"
        python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
            || die "ansible-core $ANSIBLE_CORE_VERSION needs Python >= 3.11 (found $(python3 --version 2>&1))"
        log "installing ansible-core $ANSIBLE_CORE_VERSION into $dest"
        local started=$SECONDS
        rm -rf "$dest"
        python3 -m venv "$dest" || die "python3 -m venv failed; install python3-venv"
        "$dest/bin/python" -m pip install --quiet --disable-pip-version-check \
            "ansible-core==$ANSIBLE_CORE_VERSION"
        touch "$dest/.complete"
        log "ansible-core installed in $((SECONDS - started)) s"
    fi
    ln -sfn "$dest/bin/ansible-playbook" "$BIN/ansible-playbook"
    ln -sfn "$dest/bin/ansible" "$BIN/ansible"
}

install_opentofu() {
    local dest="$VEIL_CACHE/opentofu-$OPENTOFU_VERSION"
    if [[ ! -x "$dest/tofu" ]]; then
        command -v go >/dev/null || die "go is needed to build OpenTofu; install Go >= 1.24"
        log "building OpenTofu $OPENTOFU_VERSION from its Go module (takes minutes the first time)"
        local started=$SECONDS
        # `go install module@version` refuses modules whose go.mod has
        # `replace` directives, and OpenTofu's has one (its hcl fork). So the
        # module source is fetched through the module proxy and built in place.
        local src
        src="$(go mod download -json "github.com/opentofu/opentofu@$OPENTOFU_VERSION" \
            | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
        [[ -n "$src" && -d "$src" ]] || die "could not download github.com/opentofu/opentofu@$OPENTOFU_VERSION"
        local work
        work="$(mktemp -d "$VEIL_CACHE/.opentofu-build.XXXXXX")"
        # shellcheck disable=SC2064 # expand now: `work` is local
        trap "rm -rf '$work'" EXIT
        cp -R "$src/." "$work/"
        chmod -R u+w "$work"
        mkdir -p "$dest"
        (cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
            -ldflags "-s -w -X github.com/opentofu/opentofu/version.dev=no" \
            -o "$dest/tofu.partial" ./cmd/tofu)
        mv "$dest/tofu.partial" "$dest/tofu"
        rm -rf "$work"
        trap - EXIT
        log "OpenTofu built in $((SECONDS - started)) s"
    fi
    ln -sfn "$dest/tofu" "$BIN/tofu"
}

# xray, built from its Go module's `main` package (about a minute once the
# modules are downloaded). Tests and `make bench` run this binary.
install_xray() {
    local dest="$VEIL_CACHE/xray-$XRAY_CORE_VERSION"
    if [[ ! -x "$dest/xray" ]]; then
        command -v go >/dev/null || die "Go is needed to build xray; install Go >= 1.26"
        log "building xray $XRAY_CORE_VERSION from its Go module"
        local started=$SECONDS
        mkdir -p "$dest"
        GOBIN="$dest/.gobin" GOFLAGS=-trimpath \
            go install -ldflags "-s -w" "github.com/xtls/xray-core/main@$XRAY_CORE_VERSION"
        mv "$dest/.gobin/main" "$dest/xray"
        rmdir "$dest/.gobin"
        log "xray built in $((SECONDS - started)) s"
    fi
    ln -sfn "$dest/xray" "$BIN/xray"
}

# sing-box, built from its Go module's command package (a few minutes once
# the modules are downloaded). VLESS Strategy tests run it as a client.
install_sing_box() {
    local dest="$VEIL_CACHE/sing-box-$SING_BOX_VERSION"
    if [[ ! -x "$dest/sing-box" ]]; then
        command -v go >/dev/null || die "Go is needed to build sing-box; install Go >= 1.26"
        log "building sing-box $SING_BOX_VERSION from its Go module"
        local started=$SECONDS
        mkdir -p "$dest"
        GOBIN="$dest/.gobin" GOFLAGS=-trimpath \
            go install -tags with_utls \
            -ldflags "-s -w -X github.com/sagernet/sing-box/constant.Version=${SING_BOX_VERSION#v}" \
            "github.com/sagernet/sing-box/cmd/sing-box@$SING_BOX_VERSION"
        mv "$dest/.gobin/sing-box" "$dest/sing-box"
        rmdir "$dest/.gobin"
        log "sing-box built in $((SECONDS - started)) s"
    fi
    ln -sfn "$dest/sing-box" "$BIN/sing-box"
}

install_ansible
install_opentofu
install_xray
install_sing_box

first_line() { local out; out="$("$@" 2>/dev/null || true)"; printf '%s' "${out%%$'\n'*}"; }
echo "tools in $BIN (put it on PATH):"
echo "  ansible-playbook: $(first_line "$BIN/ansible-playbook" --version)"
echo "  tofu: $(first_line "$BIN/tofu" version)"
echo "  xray: $(first_line "$BIN/xray" version)"
echo "  sing-box: $(first_line "$BIN/sing-box" version)"

#!/usr/bin/env bash
# Installs what the network-namespace tests (the DPI simulator, the zapret
# driver) run: Debian's `iptables` (iptables/ip6tables, the nft backend) and
# `ethtool` (to turn checksum offload off on test veths), unless both are
# already there. Idempotent. Debian/Ubuntu only.
set -euo pipefail

missing=()
command -v iptables >/dev/null || missing+=(iptables)
command -v ethtool >/dev/null || missing+=(ethtool)
if [ "${#missing[@]}" -eq 0 ]; then
  echo "net tools: already installed (iptables, ethtool)"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "net tools: apt-get not found; install ${missing[*]} by hand" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi

echo "net tools: installing Debian packages: ${missing[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"

# Veil — every CI step is a target here; .ci/run calls exactly these.
#
# Heavy builds live outside the source tree, keyed by version, so a warm
# `make test` stays fast: cargo's target dir, kube-apiserver,
# kube-controller-manager, kubectl, etcd, xray and helm builds go under
# $(VEIL_CACHE).

SHELL := /bin/bash
VEIL_CACHE ?= $(HOME)/.cache/veil
export VEIL_CACHE
export CARGO_TARGET_DIR ?= $(VEIL_CACHE)/target
# Tools built or installed by `make env` (ansible-playbook, tofu) are found here.
export PATH := $(VEIL_CACHE)/bin:$(PATH)
CARGO ?= cargo
EXAMPLE_DIR ?= examples/standalone

.PHONY: up up-kube test lint crds bench env build cluster

## up: the standalone quick start — operator on examples/standalone, SQLite under ./.veil/
up:
	$(CARGO) build --release -p veil-operator -p veil-agent
	$(CARGO_TARGET_DIR)/release/veil-operator up $(EXAMPLE_DIR)

## cluster: real etcd + kube-apiserver + kube-controller-manager (GC) with Veil's CRDs until Ctrl-C; kubeconfig at .veil/kubeconfig
cluster:
	bash scripts/env-kube.sh
	$(CARGO) run -q -p veil-e2e --bin veil-cluster -- --kubeconfig .veil/kubeconfig

## up-kube: the operator with --source kube against `make cluster` (run that first, in another terminal)
up-kube:
	@test -f .veil/kubeconfig || { echo "no .veil/kubeconfig: run 'make cluster' in another terminal first" >&2; exit 1; }
	$(CARGO) build --release -p veil-operator -p veil-agent
	$(CARGO_TARGET_DIR)/release/veil-operator run --source kube --kubeconfig .veil/kubeconfig --lease-namespace default --data-dir .veil/kube

## env: install or build the real dependencies tests use (idempotent, cached)
env:
	bash scripts/env.sh

## build: every binary of the workspace (tests start them as real processes)
build:
	$(CARGO) build --workspace --bins

## test: everything a fresh machine needs, then the whole test suite
test: env build
	$(CARGO) test --workspace --no-fail-fast

## lint: formatting and clippy with warnings denied
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## crds: regenerate manifests/crds/ from the Rust types, the Helm chart's copy and the spec tables in docs/kinds/
crds:
	VEIL_UPDATE_CRDS=1 $(CARGO) test -p veil-crds --test crd_drift
	rm -f charts/veil/crds/*.yaml
	cp manifests/crds/*.yaml charts/veil/crds/
	VEIL_UPDATE_DOCS=1 $(CARGO) test -p veil-crds --test docs_tables

## bench: the benchmarks named by the issues; record results in docs/benchmarks.md
bench: env
	$(CARGO) build --release --workspace --bins
	$(CARGO_TARGET_DIR)/release/veil-bench

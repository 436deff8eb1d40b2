#!/usr/bin/env bash
# Benchmark the installer (default): setup against the old script's steps, own CPU time, status
# and --version start-up, apiKeyHelper latency, binary size.
# `scripts/bench.sh proxy`: benchmark the companion proxy's data plane against a mock upstream
# and a bare hyper forwarder.
# Both print a table with each goal, measured value and verdict.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [[ "${1:-}" == "proxy" ]]; then
    shift
    cargo build --release --quiet -p archestra-proxy --example proxy-bench
    exec target/release/examples/proxy-bench "$@"
fi
scripts/install-claude.sh >/dev/null
# The binary on its own: built together with the example, it would get the features the
# example's dev-dependencies (the companion) turn on, and weigh more than what users install.
cargo build --release --quiet --bin archestra-connect
cargo build --release --quiet --example bench
exec target/release/examples/bench "$@"

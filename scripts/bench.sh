#!/usr/bin/env bash
# Benchmark the installer: setup against the old script's steps, own CPU time, status and
# --version start-up, apiKeyHelper latency, binary size. Prints a table with each goal.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/install-claude.sh >/dev/null
cargo build --release --quiet --bin archestra-connect --example bench
exec target/release/examples/bench "$@"

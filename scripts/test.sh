#!/usr/bin/env bash
# Run the whole test suite: install what the tests need, then every test of the workspace.
#
# The tests drive the real Claude Code CLI (pinned, installed into .tools/ by
# scripts/install-claude.sh) and git (for the marketplace served over smart HTTP).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! command -v git >/dev/null 2>&1; then
  echo "installing git for the marketplace tests" >&2
  apt-get update -qq && apt-get install -y -qq git >/dev/null
fi
scripts/install-claude.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

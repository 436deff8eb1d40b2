#!/usr/bin/env bash
# Run the whole test suite: install what the tests need, then every test of the workspace.
#
# The tests drive the real Claude Code CLI (pinned, installed into .tools/ by
# scripts/install-claude.sh) and git (for the marketplace served over smart HTTP).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# git serves the marketplace fixture over smart HTTP; dbus-daemon and gnome-keyring give
# the keyring tests a real Secret Service on a private session bus; tmux drives the
# terminal tests; openssl makes the private CA of the HTTPS redemption test.
missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus-daemon)
command -v gnome-keyring-daemon >/dev/null 2>&1 || missing+=(gnome-keyring)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} for the tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
scripts/install-claude.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

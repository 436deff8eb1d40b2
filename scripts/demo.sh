#!/usr/bin/env bash
# Try archestra-connect end to end on this machine, touching nothing of yours.
#
# Builds both programs, starts the companion server (the embedded default deployment,
# http://127.0.0.1:8787) with a throwaway database, serving fixtures/marketplace as its
# shared-skills marketplace, mints a one-time setup, runs `archestra-connect setup` against it
# with a throwaway HOME and CLAUDE_CONFIG_DIR, and shows `archestra-connect status`.
# Needs `claude` on PATH, or the pinned copy from scripts/install-claude.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# One package per build, so that the installer does not get the server's dependency features.
cargo build --release --quiet -p archestra-connect
cargo build --release --quiet -p archestra-proxy
bin="$root/target/release"
work="$(mktemp -d)"
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

if ! command -v claude >/dev/null 2>&1; then
  scripts/install-claude.sh >/dev/null
  export ARCHESTRA_CLAUDE_BIN="$root/.tools/claude/node_modules/.bin/claude"
fi

"$bin/archestra-proxy" serve --db "$work/proxy.db" --listen 127.0.0.1:8787 \
  --skills-dir "$root/fixtures/marketplace" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do
  grep -q "listening on" "$work/server.log" 2>/dev/null && break
  sleep 0.1
done
grep "listening on" "$work/server.log"

link="$("$bin/archestra-proxy" setups create --db "$work/proxy.db" --user you@example.com \
  --mcp-url http://127.0.0.1:8787/v1/mcp/default --mcp-name archestra \
  --skills-url /skills/marketplace.git --marketplace acme-skills --plugin extra --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')"

export HOME="$work/home" CLAUDE_CONFIG_DIR="$work/home/.claude"
mkdir -p "$CLAUDE_CONFIG_DIR"
"$bin/archestra-connect" setup "$link" --yes "$@"
echo
echo "What \`archestra-connect status\` now reports:"
"$bin/archestra-connect" status || true

#!/usr/bin/env bash
# Install the pinned Claude Code CLI into .tools/claude (ignored by git).
#
# The tests drive the real CLI, so its version is pinned here and nowhere else.
# Re-running is cheap: an install that already has the pinned version is kept.
set -euo pipefail

version="2.1.197"
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$root/.tools/claude"
bin="$prefix/node_modules/.bin/claude"

if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null | cut -d' ' -f1)" = "$version" ]; then
  echo "claude $version already installed at $bin"
  exit 0
fi

mkdir -p "$prefix"
cd "$prefix"
[ -f package.json ] || echo '{"name":"archestra-connect-tools","private":true}' > package.json
npm install --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$version"
"$bin" --version
echo "claude $version installed at $bin"

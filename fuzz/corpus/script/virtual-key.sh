#!/bin/bash
# Archestra setup for Claude Code.
# Hand-written fixture: MCP gateway and the LLM proxy in virtual-key mode.
set -euo pipefail

cli() { "$@" </dev/null 2>&1 | cat; }
say()  { printf '\n==> %s\n' "$1"; }

if ! command -v claude >/dev/null 2>&1; then
  echo "error: the 'claude' CLI was not found on PATH." >&2
  exit 1
fi

say 'Adding Archestra tools as "archestra"'
cli claude mcp remove --scope local 'archestra' >/dev/null 2>&1 || true
cli claude mcp remove --scope user 'archestra' >/dev/null 2>&1 || true
cli claude mcp add --scope user --transport http 'archestra' '@ORIGIN@/v1/mcp/default'

say 'Routing Claude Code through the Anthropic proxy'
if command -v python3 >/dev/null 2>&1; then
  export ARCHESTRA_SET_ENV_ANTHROPIC_BASE_URL='@ORIGIN@/v1/anthropic'
  export ARCHESTRA_REMOVE_VIRTUAL_KEY_ENV='ANTHROPIC_API_KEY'
  export ARCHESTRA_SET_ENV_ANTHROPIC_AUTH_TOKEN='arch_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'
  export ARCHESTRA_APPEND_ANTHROPIC_CUSTOM_HEADERS='X-Archestra-Agent-Id: anthropic_claude_code'
  python3 - <<'ARCHESTRA_PY'
print("merged")
ARCHESTRA_PY
fi

# archestra-ending: eyJsYWJlbCI6ICJDbGF1ZGUgQ29kZSIsICJhcHBOYW1lIjogIkFyY2hlc3RyYSIsICJwYXJ0cyI6IFtdLCAic2lnbkluIjogeyJjb21tYW5kIjogWyJjbGF1ZGUiLCAibWNwIiwgImxvZ2luIiwgImFyY2hlc3RyYSJdLCAidGV4dCI6ICJjbGF1ZGUgbWNwIGxvZ2luIGFyY2hlc3RyYSIsICJob3dUbyI6ICJTdGFydCBjbGF1ZGUsIHJ1biAvbWNwLCBwaWNrIFwiYXJjaGVzdHJhXCIgYW5kIHNpZ24gaW4uIn0sICJsYXVuY2giOiB7ImNvbW1hbmQiOiBbImNsYXVkZSIsICJXaGF0IGNhbiB5b3UgZG8gd2l0aCBteSBBcmNoZXN0cmEgdG9vbHM/Il0sICJ0ZXh0IjogImNsYXVkZSAn4oCmJyJ9LCAibm90ZXMiOiBbXX0=

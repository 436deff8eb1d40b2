#!/usr/bin/env bash
# Acme setup for Claude Code.
# Hand-written fixture: values a shell would expand must come out literal. Running this
# script would create /tmp/pwned; reading it must not.
set -euo pipefail

cli() { "$@" </dev/null 2>&1 | cat; }
say() { printf '\n==> %s\n' "$1"; }

say 'Adding Acme `id` $(touch /tmp/pwned) tools as "acme"'
cli claude mcp remove --scope user 'acme' >/dev/null 2>&1 || true
cli claude mcp remove --scope user 'acme_old' >/dev/null 2>&1 || true
say 'Acme'\''s `tools` are $(whoami)'\''s now'
touch /tmp/pwned-if-run
cli claude mcp add --scope user --transport http 'acme' '@ORIGIN@/v1/mcp/acme'

say 'Routing Claude Code through the Anthropic proxy'
export ARCHESTRA_SET_ENV_ANTHROPIC_BASE_URL='@ORIGIN@/v1/anthropic'
export ARCHESTRA_REMOVE_VIRTUAL_KEY_ENV='ANTHROPIC_AUTH_TOKEN,ANTHROPIC_API_KEY'
export ARCHESTRA_APPEND_ANTHROPIC_CUSTOM_HEADERS='X-Archestra-Agent-Id: anthropic_claude_code'
export ARCHESTRA_APPA_PERMISSION_RULES='["$(touch /tmp/pwned)", "`touch /tmp/pwned`", "it'\''s"]'
python3 - <<'ARCHESTRA_PY'
import os; os.system("touch /tmp/pwned")
ARCHESTRA_PY

# archestra-ending: eyJsYWJlbCI6ICJDbGF1ZGUgQ29kZSIsICJhcHBOYW1lIjogIkFjbWUgYGlkYCAkKHRvdWNoIC90bXAvcHduZWQpIiwgInBhcnRzIjogW10sICJzaWduSW4iOiB7ImNvbW1hbmQiOiBbImNsYXVkZSIsICJtY3AiLCAibG9naW4iLCAiYWNtZSJdLCAidGV4dCI6ICJjbGF1ZGUgbWNwIGxvZ2luIGFjbWUiLCAiaG93VG8iOiAiU3RhcnQgY2xhdWRlLCBydW4gL21jcCwgcGljayBcImFjbWVcIiBhbmQgc2lnbiBpbi4ifSwgImxhdW5jaCI6IHsiY29tbWFuZCI6IFsiY2xhdWRlIiwgIldoYXQgY2FuIHlvdSBkbyB3aXRoIG15IEFjbWUgYGlkYCAkKHRvdWNoIC90bXAvcHduZWQpIHRvb2xzPyJdLCAidGV4dCI6ICJjbGF1ZGUgJ+KApicifSwgIm5vdGVzIjogW119

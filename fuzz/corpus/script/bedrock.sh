#!/usr/bin/env bash
# Archestra setup for Claude Code.
# Hand-written fixture: the LLM proxy for Bedrock with a virtual key, nothing else.
set -euo pipefail

cli() { "$@" </dev/null 2>&1 | cat; }

say() { printf '\n==> %s\n' "$1"; }
say 'Routing Claude Code through the Bedrock proxy'
if command -v python3 >/dev/null 2>&1; then
  mkdir -p "$(dirname "$HOME/.claude/settings.json")"
  export ARCHESTRA_SET_ENV_CLAUDE_CODE_USE_BEDROCK='1'
  export ARCHESTRA_SET_ENV_AWS_REGION='us-east-1'
  export ARCHESTRA_SET_ENV_ANTHROPIC_BEDROCK_BASE_URL='@ORIGIN@/v1/bedrock'
  export ARCHESTRA_REMOVE_VIRTUAL_KEY_ENV=''
  export ARCHESTRA_SET_ENV_AWS_BEARER_TOKEN_BEDROCK='arch_fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210'
  export ARCHESTRA_APPEND_ANTHROPIC_CUSTOM_HEADERS='X-Archestra-Agent-Id: anthropic_claude_code'
  python3 - <<'ARCHESTRA_PY'
print("merged")
ARCHESTRA_PY
fi
echo "Update AWS_REGION in ~/.claude/settings.json if you use a different region."

# archestra-ending: eyJsYWJlbCI6ICJDbGF1ZGUgQ29kZSIsICJhcHBOYW1lIjogIkFyY2hlc3RyYSIsICJwYXJ0cyI6IFtdLCAic2lnbkluIjogbnVsbCwgImxhdW5jaCI6IHsiY29tbWFuZCI6IFsiY2xhdWRlIiwgIldoYXQgZGlkIEFyY2hlc3RyYSBzZXQgdXAgZm9yIHlvdT8iXSwgInRleHQiOiAiY2xhdWRlICfigKYnIn0sICJub3RlcyI6IFtdfQ==

#!/usr/bin/env bash
# Goose: `goose run --no-session --instructions <prompt file> --model M`.
source /opt/nightcrier/runners/common.sh
if [ -z "${OPENAI_API_KEY:-}" ] && [ -z "${ANTHROPIC_API_KEY:-}" ] && [ -z "${GEMINI_API_KEY:-}" ]; then
  log "one of OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY is required"
  exit 2
fi
export GOOSE_DISABLE_KEYRING=1
mkdir -p "$HOME/.config/goose"
cp /opt/nightcrier/AGENTS.md "$HOME/.goosehints"
exec goose run --no-session --instructions "$PROMPT_FILE" --model "$LLM_MODEL"

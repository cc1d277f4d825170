#!/usr/bin/env bash
# Claude Code: `claude -p --model M --output-format F --allowedTools T`, prompt on stdin
# (no argv size limit, unlike the original's single-argument prompt).
source /opt/nightcrier/runners/common.sh
require ANTHROPIC_API_KEY

args=(-p --model "$LLM_MODEL" --output-format "${OUTPUT_FORMAT:-text}")
if [ -n "${AGENT_ALLOWED_TOOLS:-}" ]; then
  args+=(--allowedTools "$AGENT_ALLOWED_TOOLS")
fi
if [ -n "${AGENT_MAX_TURNS:-}" ]; then
  args+=(--max-turns "$AGENT_MAX_TURNS")
fi
if [ "${AGENT_VERBOSE:-false}" = "true" ]; then
  args+=(--verbose)
fi
mkdir -p "$HOME/.claude"
cp /opt/nightcrier/AGENTS.md "$HOME/.claude/CLAUDE.md"
exec claude "${args[@]}" < "$PROMPT_FILE"

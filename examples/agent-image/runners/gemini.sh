#!/usr/bin/env bash
# Gemini CLI: `gemini --model M --allowed-tools <mapped>`, prompt on stdin; tool names mapped
# from the Claude-style list as in the original.
source /opt/nightcrier/runners/common.sh
if [ -z "${GEMINI_API_KEY:-}" ] && [ -z "${GOOGLE_API_KEY:-}" ]; then
  log "GEMINI_API_KEY or GOOGLE_API_KEY is required"
  exit 2
fi

mapped=()
IFS=',' read -r -a tools <<< "${AGENT_ALLOWED_TOOLS:-}"
for tool in "${tools[@]}"; do
  case "${tool// /}" in
    Read) mapped+=(read_file) ;;
    Write) mapped+=(write_file) ;;
    Grep) mapped+=(grep) ;;
    Glob) mapped+=(glob) ;;
    Bash) mapped+=(run_shell_command) ;;
    Skill | "") ;;
    *) log "ignoring unknown tool ${tool}" ;;
  esac
done
allowed=$(IFS=','; printf '%s' "${mapped[*]}")

mkdir -p "$HOME/.gemini"
cp /opt/nightcrier/AGENTS.md "$HOME/.gemini/GEMINI.md"
exec gemini --model "$LLM_MODEL" --allowed-tools "$allowed" < "$PROMPT_FILE"

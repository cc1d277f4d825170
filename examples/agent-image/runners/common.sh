#!/usr/bin/env bash
# Shared setup for the runner scripts. Sourced, never executed.
# Contract (set by nightcrier): AGENT_CLI, AGENT_HOME, HOME, LLM_MODEL, AGENT_ALLOWED_TOOLS,
# INCIDENT_ID, PROMPT_FILE, OUTPUT_DIR, OUTPUT_FORMAT, optional KUBECONFIG, API keys.
# Never `set -x` here: the environment holds API keys.
set -euo pipefail

log() { printf '[runner] %s\n' "$*" >&2; }

require() {
  local name
  for name in "$@"; do
    if [ -z "${!name:-}" ]; then
      log "missing required environment variable ${name}"
      exit 2
    fi
  done
}

require AGENT_CLI AGENT_HOME LLM_MODEL PROMPT_FILE OUTPUT_DIR INCIDENT_ID
if [ ! -r "$PROMPT_FILE" ]; then
  log "prompt file ${PROMPT_FILE} is not readable"
  exit 2
fi

# HOME is on the tmpfs; agents keep their config and session state there.
mkdir -p "$HOME"
cp /opt/nightcrier/AGENTS.md "$HOME/AGENTS.md"
cd "$AGENT_HOME"

log "starting ${AGENT_CLI} (model ${LLM_MODEL}) for incident ${INCIDENT_ID}"

#!/usr/bin/env bash
# Codex: `codex exec --skip-git-repo-check -m M -`, prompt on stdin, with the original's model
# aliases. The API key goes to `codex login` on stdin, never in a file or an argument.
source /opt/nightcrier/runners/common.sh
require OPENAI_API_KEY

case "$LLM_MODEL" in
  opus | gpt-5-codex) model=gpt-5-codex ;;
  sonnet | gpt-5.2) model=gpt-5.2 ;;
  haiku | gpt-4o) model=gpt-4o ;;
  *) model="$LLM_MODEL" ;;
esac

printenv OPENAI_API_KEY | codex login --with-api-key > /dev/null
# The container is the sandbox (read-only root, no capabilities, no-new-privileges); codex's own
# sandbox needs kernel features an unprivileged container does not have.
exec codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox \
  -m "$model" - < "$PROMPT_FILE"

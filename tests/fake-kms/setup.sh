#!/usr/bin/env bash
# Creates (or reuses) the fake kubernetes-mcp-server's virtualenv at <repo>/target/fake-kms/venv
# with requirements.txt installed; prints its python path (see tests/venv.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/../venv.sh" fake-kms "$here/requirements.txt"

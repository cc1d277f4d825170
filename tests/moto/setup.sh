#!/usr/bin/env bash
# Creates (or reuses) the moto virtualenv (an S3-compatible server for the report store tests) at
# <repo>/target/moto/venv with requirements.txt installed; prints its python path (see
# tests/venv.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/../venv.sh" moto "$here/requirements.txt"

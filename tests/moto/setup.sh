#!/usr/bin/env bash
# Creates (or reuses) the moto virtualenv (an S3-compatible server for the report store tests) at <repo>/target/moto/venv
# and installs requirements.txt into it when the file changed since the last install. Prints only
# the venv's python path on success; on failure the installer's output goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/target/moto/venv"
stamp="$venv/.requirements.sha256"
python="$venv/bin/python"

if [ ! -x "$python" ]; then
    mkdir -p "$(dirname "$venv")"
    if ! out=$(python3 -m venv "$venv" 2>&1); then
        echo "$out" >&2
        echo "setup.sh: python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2
        rm -rf "$venv"
        exit 1
    fi
fi

want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    rm -f "$stamp"
    if ! out=$("$python" -m pip install --disable-pip-version-check --no-input -q -r "$here/requirements.txt" 2>&1); then
        echo "$out" >&2
        echo "setup.sh: installing $here/requirements.txt failed" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
echo "$python"

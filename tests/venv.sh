#!/usr/bin/env bash
# Usage: venv.sh NAME REQUIREMENTS — creates (or reuses) the virtualenv <repo>/target/NAME/venv
# for a Python test server and installs REQUIREMENTS into it when the file changed since the last
# install. Prints only the venv's python path on success; on failure the installer's output goes
# to stderr. tests/fake-kms/setup.sh and tests/moto/setup.sh call it.
set -euo pipefail
name="$1"
requirements="$2"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/target/$name/venv"
stamp="$venv/.requirements.sha256"
python="$venv/bin/python"

if [ ! -x "$python" ]; then
    mkdir -p "$(dirname "$venv")"
    if ! out=$(python3 -m venv "$venv" 2>&1); then
        echo "$out" >&2
        echo "venv.sh: python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2
        rm -rf "$venv"
        exit 1
    fi
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    rm -f "$stamp"
    if ! out=$("$python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements" 2>&1); then
        echo "$out" >&2
        echo "venv.sh: installing $requirements failed" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
echo "$python"

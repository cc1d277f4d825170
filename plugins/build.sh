#!/usr/bin/env bash
# Builds every nightcrier plugin (Rust and Python) and the hostile test fixtures from a fresh machine.
#
# Needs: rustup + cargo, python3 with the venv module (Debian: python3-venv), network access to
# crates.io and PyPI the first time.
#
# Outputs (stable paths, relative to this folder):
#   target/plugins/<name>.wasm   example plugins, ready for `nightcrier serve --plugins plugins/target/plugins`
#                                (kubernetes-mcp, alertmanager, alertmanager-poll, noise-filter, dedup, redact-secrets, slack, team-router)
#   target/fixtures/<name>.wasm  hostile fixtures for tests (hostile, hostile-source, hostile-wrong-world,
#                                hostile-wit-major)
#
# Safe to run concurrently: a lock file serialises builders; unchanged inputs rebuild in seconds.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"
COMPONENTIZE_PY_VERSION="0.25.1"
RUST_PLUGINS=(kubernetes-mcp alertmanager alertmanager-poll noise-filter dedup redact-secrets slack)
FIXTURES=(hostile hostile-source hostile-wrong-world hostile-wit-major)
PYTHON_PLUGINS=(team-router)

mkdir -p "$TARGET/plugins" "$TARGET/fixtures"
export PYTHONDONTWRITEBYTECODE=1
exec 9>"$TARGET/.build.lock"
flock 9

echo "build.sh: ensuring the wasm32-wasip2 target" >&2
rustup target add wasm32-wasip2 >&2

echo "build.sh: building Rust plugins" >&2
# CARGO_TARGET_DIR from the caller (the host's test run) must not redirect the guest build.
env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_TARGET \
    cargo build --release --manifest-path "$HERE/Cargo.toml" --target wasm32-wasip2 >&2
for name in "${RUST_PLUGINS[@]}"; do
    cp -f "$TARGET/wasm32-wasip2/release/${name//-/_}.wasm" "$TARGET/plugins/$name.wasm"
done
for name in "${FIXTURES[@]}"; do
    cp -f "$TARGET/wasm32-wasip2/release/${name//-/_}.wasm" "$TARGET/fixtures/$name.wasm"
done

echo "build.sh: preparing componentize-py $COMPONENTIZE_PY_VERSION" >&2
if [ ! -x "$TARGET/venv/bin/python" ]; then
    python3 -m venv "$TARGET/venv"
fi
if [ "$("$TARGET/venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    "$TARGET/venv/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
fi

for name in "${PYTHON_PLUGINS[@]}"; do
    output="$TARGET/plugins/$name.wasm"
    if [ -f "$output" ] && [ -z "$(find "$HERE/$name" "$HERE/../wit" -newer "$output" -type f -print -quit)" ]; then
        continue
    fi
    echo "build.sh: componentizing $name" >&2
    (cd "$HERE/$name" && "$TARGET/venv/bin/componentize-py" -d "$HERE/../wit" -w pre-triage componentize app -o "$output.tmp" >&2)
    mv -f "$output.tmp" "$output"
done

echo "build.sh: done; plugins in $TARGET/plugins, fixtures in $TARGET/fixtures" >&2

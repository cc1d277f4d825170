#!/usr/bin/env bash
# Builds every nightcrier plugin (Rust, Python and C) and the hostile test fixtures from a fresh machine.
#
# Needs: rustup + cargo, python3 with the venv module (Debian: python3-venv), for C Debian's clang,
# lld, wasi-libc and libclang-rt-dev-wasm32, and network access to crates.io and PyPI the first
# time. Pinned tools are fetched into target/: componentize-py (a venv), wit-bindgen-cli and
# wasm-tools (`cargo install`), and the WASI preview 1 adapter (from the
# wasi-preview1-component-adapter-provider crate, pinned in c-toolchain/Cargo.lock).
#
# Outputs (stable paths, relative to this folder):
#   target/plugins/<name>.wasm   example plugins, ready for `nightcrier serve --plugins plugins/target/plugins`
#                                (kubernetes-mcp, alertmanager, alertmanager-poll, noise-filter, dedup, redact-secrets, slack,
#                                team-router in Python, maintenance-window in C)
#   target/fixtures/<name>.wasm  hostile fixtures for tests (hostile, hostile-source, hostile-wrong-world,
#                                hostile-wit-major)
#
# Safe to run concurrently: a lock file serialises builders; unchanged inputs rebuild in seconds.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"
COMPONENTIZE_PY_VERSION="0.25.1"
# wit-bindgen-cli at the version of the Rust plugins' wit-bindgen; wasm-tools of the same
# wasm-tools release (its crates are at 0.262, as wit-bindgen 0.63 uses).
WIT_BINDGEN_VERSION="0.63.0"
WASM_TOOLS_VERSION="1.262.0"
TOOLS="$TARGET/tools"
RUST_PLUGINS=(kubernetes-mcp alertmanager alertmanager-poll noise-filter dedup redact-secrets slack)
FIXTURES=(hostile hostile-source hostile-wrong-world hostile-wit-major)
PYTHON_PLUGINS=(team-router)
C_PLUGINS=(maintenance-window)

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

# cargo install of a pinned tool, unless that version is already in target/tools.
install_tool() {
    local crate="$1" version="$2" binary="$3" features="$4"
    if [ "$("$TOOLS/bin/$binary" --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
        echo "build.sh: installing $crate $version into $TOOLS" >&2
        env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_TARGET \
            cargo install --quiet --locked --root "$TOOLS" "$crate" --version "$version" \
            --no-default-features --features "$features" >&2
    fi
}

# The C example needs a C toolchain for wasm32 that the Rust and Python plugins do not: without
# it the C plugins are left out with a note (the quick start needs none of them), unless
# NIGHTCRIER_BUILD_C=1 (the test command sets it) makes a missing tool an error.
for tool in clang wasm-ld; do
    if ! command -v "$tool" >/dev/null; then
        if [ "${NIGHTCRIER_BUILD_C:-}" = 1 ]; then
            echo "build.sh: $tool is missing; on Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32" >&2
            exit 1
        fi
        echo "build.sh: $tool is missing, so the C plugins (${C_PLUGINS[*]}) are not built; on Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32" >&2
        C_PLUGINS=()
        break
    fi
done
if [ ${#C_PLUGINS[@]} -gt 0 ]; then
    install_tool wit-bindgen-cli "$WIT_BINDGEN_VERSION" wit-bindgen c
    install_tool wasm-tools "$WASM_TOOLS_VERSION" wasm-tools component
    # `cargo metadata` downloads and unpacks the pinned adapter crate; its directory holds the bytes.
    ADAPTER_CRATE="$(env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET cargo metadata --locked --format-version 1 \
        --manifest-path "$HERE/c-toolchain/Cargo.toml" | python3 -c '
import json, os, sys
packages = json.load(sys.stdin)["packages"]
print(next(os.path.dirname(p["manifest_path"]) for p in packages if p["name"] == "wasi-preview1-component-adapter-provider"))')"
    ADAPTER="$ADAPTER_CRATE/artefacts/wasi_snapshot_preview1.reactor.wasm"
    [ -f "$ADAPTER" ] || { echo "build.sh: no reactor adapter at $ADAPTER" >&2; exit 1; }
fi

for name in ${C_PLUGINS[@]+"${C_PLUGINS[@]}"}; do
    output="$TARGET/plugins/$name.wasm"
    if [ -f "$output" ] && [ -z "$(find "$HERE/$name" "$HERE/../wit" -newer "$output" -type f -print -quit)" ]; then
        continue
    fi
    echo "build.sh: building $name (C)" >&2
    work="$TARGET/c/$name"
    rm -rf "$work" && mkdir -p "$work"
    world="$(cat "$HERE/$name/world")"
    # The contract without the frozen releases in deps/: with two versions of the package the
    # generated C names would carry the version (nightcrier_plugin_0_1_1_host_log).
    mkdir -p "$work/wit/deps"
    cp "$HERE/../wit/"*.wit "$work/wit/"
    for dep in "$HERE/../wit/deps/"*; do
        case "$(basename "$dep")" in nightcrier-plugin@*) ;; *) cp -r "$dep" "$work/wit/deps/" ;; esac
    done
    "$TOOLS/bin/wit-bindgen" c "$work/wit" --world "$world" --out-dir "$work" >&2
    clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra \
        -Wno-unused-parameter -I "$work" -o "$work/core.wasm" \
        "$HERE/$name"/*.c "$work"/*.c "$work"/*_component_type.o -Wl,--strip-debug
    "$TOOLS/bin/wasm-tools" component new "$work/core.wasm" \
        --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$output.tmp"
    mv -f "$output.tmp" "$output"
done

echo "build.sh: done; plugins in $TARGET/plugins, fixtures in $TARGET/fixtures" >&2

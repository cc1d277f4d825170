#!/usr/bin/env bash
# nightcrier's test command: formatting, lints, and every test on a real SQLite file, a real
# throwaway Postgres server and the local Docker engine. Run from anywhere: `bash tests/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-wasip2

if [ -z "${NIGHTCRIER_TEST_PG_URL:-}" ]; then
    eval "$(bash tests/pg.sh start)"
    trap 'bash tests/pg.sh stop "$NIGHTCRIER_TEST_PG_DIR"' EXIT
fi
export NIGHTCRIER_TEST_PG_URL
echo "tests: Postgres at $NIGHTCRIER_TEST_PG_URL"

if [ -f plugins/build.sh ]; then
    # the tests load the C example too: a missing C toolchain is an error here
    NIGHTCRIER_BUILD_C=1 bash plugins/build.sh
fi

# the fake kubernetes-mcp-server the intake tests talk to (official Python MCP SDK, from PyPI)
fake_kms_python=$(bash tests/fake-kms/setup.sh)
# moto in server mode (from PyPI): the S3-compatible server the report store tests upload to;
# installed here so a missing PyPI fails the run at once (the tests would fail loudly too)
bash tests/moto/setup.sh >/dev/null

cargo fmt --all -- --check
cargo fmt --manifest-path plugins/Cargo.toml --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# the plugins' own unit tests run natively; the plugins themselves are built by build.sh above
(cd plugins && env -u CARGO_TARGET_DIR cargo clippy --target x86_64-unknown-linux-gnu --all-targets -- -D warnings)

log=$(mktemp)
status=0
(cd plugins && env -u CARGO_TARGET_DIR cargo test --target x86_64-unknown-linux-gnu --tests) 2>&1 | tee -a "$log" || status=1
cargo test --workspace --no-fail-fast --tests -- --skip replicas:: 2>&1 | tee -a "$log" || status=1
# The replica tests (three `serve` processes, 30 fake servers, a Postgres proxy) time feed
# handovers against 2 s protocol timeouts; run beside the browser and Docker tests on two cores
# they measured the neighbours' CPU use, not nightcrier. They run on their own, one at a time.
cargo test -p nightcrier-e2e --test e2e --no-fail-fast -- replicas:: --test-threads=1 2>&1 | tee -a "$log" || status=1
# the fake server checked against the protocol it imitates
if ! "$fake_kms_python" tests/fake-kms/selftest.py >"$log.kms" 2>&1; then
    cat "$log.kms"
    echo "tests: the fake kubernetes-mcp-server's self-test failed"
    status=1
fi
rm -f "$log.kms"
# one closing line for the whole run
totals=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } } END { printf "%d passed, %d failed", p, f }' "$log")
rm -f "$log"
echo "tests: $totals"
exit "$status"

#!/usr/bin/env bash
# Time from `nightcrier demo` to its first report: starts the demo in a fresh folder, polls the
# API until an incident is resolved (it has its report then), prints the seconds and the load
# average, and stops the demo with SIGINT. Usage (repository root, release binary built):
#   bash docs/bench/demo-first-report.sh [BINARY] [PORT]
set -euo pipefail
bin=${1:-./target/release/nightcrier}
port=${2:-18090}
dir=$(mktemp -d)
trap 'kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
start=$(date +%s.%N)
"$bin" demo --data "$dir/demo" --listen "127.0.0.1:$port" >"$dir/demo.out" 2>&1 &
pid=$!
until curl -sf "http://127.0.0.1:$port/api/v1/incidents?status=resolved" | grep -q '"id"'; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/demo.out"; echo "the demo exited" >&2; exit 1; }
    sleep 0.1
done
end=$(date +%s.%N)
report=$(curl -sf "http://127.0.0.1:$port/api/v1/incidents?status=resolved" \
    | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -n 1)
curl -sf "http://127.0.0.1:$port/api/v1/incidents/$report/report" | head -n 1 || true
awk -v s="$start" -v e="$end" -v l="$(cut -d' ' -f1-3 /proc/loadavg)" \
    'BEGIN { printf "command -> first report: %.1f s (load average %s)\n", e - s, l }'

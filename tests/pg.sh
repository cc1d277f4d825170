#!/usr/bin/env bash
# Starts (or stops) a throwaway PostgreSQL server for the tests, independent of any system
# cluster. `start` prints `export NIGHTCRIER_TEST_PG_URL=...` for eval; `stop DIR` stops it;
# `halt DIR` / `resume DIR` stop and restart it with its data (outage tests).
set -euo pipefail

find_bindir() {
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
        return
    fi
    echo "tests/pg.sh: no PostgreSQL server found; install it (Debian: apt-get install -y postgresql)" >&2
    exit 1
}

case "${1:-}" in
start)
    bindir=$(find_bindir)
    port=${NIGHTCRIER_TEST_PG_PORT:-}
    if [ -z "$port" ]; then
        # the first free port from 55432 up, so a second run (or a developer's server) is fine
        for candidate in $(seq 55432 55532); do
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
                port=$candidate
                break
            fi
        done
    fi
    dir=$(mktemp -d /tmp/nightcrier-pg.XXXXXX)
    run=()
    if [ "$(id -u)" = 0 ]; then
        # the server refuses to run as root
        chown postgres:postgres "$dir" 2>/dev/null || { useradd -r -m postgres && chown postgres:postgres "$dir"; }
        run=(runuser -u postgres --)
    fi
    "${run[@]}" "$bindir/initdb" -D "$dir/data" -U nightcrier --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    "${run[@]}" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U nightcrier nightcrier_test
    echo "$port" >"$dir/port"
    echo "export NIGHTCRIER_TEST_PG_URL=postgres://nightcrier@127.0.0.1:$port/nightcrier_test"
    echo "export NIGHTCRIER_TEST_PG_DIR=$dir"
    ;;
stop)
    dir=${2:?usage: pg.sh stop DIR}
    bindir=$(find_bindir)
    run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
halt)
    # stops the server (connections cut) but keeps its data, for outage tests
    dir=${2:?usage: pg.sh halt DIR}
    bindir=$(find_bindir)
    run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    ;;
resume)
    dir=${2:?usage: pg.sh resume DIR}
    bindir=$(find_bindir)
    port=$(cat "$dir/port")
    run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    ;;
*)
    echo "usage: tests/pg.sh start | stop DIR | halt DIR | resume DIR" >&2
    exit 2
    ;;
esac

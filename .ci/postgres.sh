# PostgreSQL for the test suite: a throwaway server on loopback only.
#
#   source .ci/postgres.sh && pg_start   # exports ABLATE_TEST_PG_URL, sets PG_DIR
#   ...                                  # python -m pytest tests/test_postgres.py ...
#   pg_stop                              # stops the server and deletes its files
#
# Installs PostgreSQL from the distribution (apt-get, quiet, only when missing), creates a
# cluster in a temporary directory with initdb (as the 'postgres' user when run as root),
# starts it on 127.0.0.1 at a free port with its socket in that directory, and creates the
# database ablate_test. Trust authentication is safe here: nothing listens beyond loopback.

pg_bindir() {
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

pg_install() {
    [ -n "$(pg_bindir)" ] && return 0
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing PostgreSQL (apt-get)" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        postgresql >/dev/null
    [ -n "$(pg_bindir)" ] || { echo "PostgreSQL installed but initdb not found" >&2; return 1; }
}

# Run a PostgreSQL binary as a non-root user (initdb and postgres refuse to run as root).
_pg_as() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    pg_install
    local bin port
    bin=$(pg_bindir)
    PG_DIR=$(mktemp -d /tmp/ablate-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
    chmod 700 "$PG_DIR"
    port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    _pg_as "$bin/initdb" -D "$PG_DIR/data" -U ablate --auth=trust -E UTF8 --no-sync >/dev/null
    _pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=200 -c fsync=off" \
        >/dev/null
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U ablate ablate_test
    PG_BIN=$bin
    export ABLATE_TEST_PG_URL="postgresql+psycopg://ablate@127.0.0.1:$port/ablate_test"
    echo "PostgreSQL up: $ABLATE_TEST_PG_URL (data in $PG_DIR)" >&2
}

pg_stop() {
    [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ] || return 0
    _pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
    PG_DIR=""
}

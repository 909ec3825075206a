#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on loopback for the tests and prints its URL.
# Usage: export RUNLINK_TEST_POSTGRES_URL=$(bash scripts/start-postgres.sh)
# Stop it with: pg_ctl -D "$DIR/data" stop (the directory is printed on stderr).
set -euo pipefail

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$PGBIN" ]; then
  echo "PostgreSQL server binaries not found (run scripts/install-deps.sh)" >&2
  exit 1
fi
PORT=${RUNLINK_PG_PORT:-54329}
# The first free port from there on: another cluster may already listen on it.
while (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
DIR=$(mktemp -d "${TMPDIR:-/tmp}/runlink-pg.XXXXXX")
chmod 755 "$DIR"
RUN=()
if [ "$(id -u)" -eq 0 ]; then
  # initdb refuses to run as root; the Debian package created the `postgres` user.
  chown postgres "$DIR"
  RUN=(runuser -u postgres --)
fi
"${RUN[@]}" "$PGBIN/initdb" -D "$DIR/data" -U runlink --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1
"${RUN[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=400 -c shared_buffers=128MB" \
  start >&2
"$PGBIN/psql" -q -h 127.0.0.1 -p "$PORT" -U runlink -d postgres -c "CREATE DATABASE runlink" >&2
echo "PostgreSQL running in $DIR on 127.0.0.1:$PORT" >&2
echo "postgres://runlink@127.0.0.1:$PORT/runlink"

#!/bin/sh
# A private PostgreSQL for pool mode's tests and demo: Debian's server binaries, its own
# data directory, loopback only, trust auth for the one role `berth`. Never touches the
# system's clusters.
#   scripts/postgres.sh start DIR PORT   # initdb on first use; prints the database URL
#   scripts/postgres.sh stop DIR
# initdb refuses to run as root: as root the server runs as the `postgres` user the
# package creates, and DIR is given to it. BERTH_PG_OPTS: more server options, e.g.
# `-c shared_preload_libraries=pg_stat_statements` (benches/pool_scale.rs's statements).
set -eu
cmd=${1:?usage: postgres.sh start DIR PORT | stop DIR}
dir=${2:?data directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] && [ -x "$bin/pg_ctl" ] || {
  echo "postgres.sh: PostgreSQL's server is not installed (run scripts/install-deps.sh)" >&2; exit 1; }
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$cmd" in
start)
  port=${3:?port}
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U berth -E UTF8 >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2; exit 1; }
  fi
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c fsync=off -c idle_in_transaction_session_timeout=60s ${BERTH_PG_OPTS:-}" \
    start >/dev/null || { cat "$dir/log" >&2; exit 1; }
  echo "postgres://berth@127.0.0.1:$port/postgres"
  ;;
stop)
  [ -f "$dir/data/postmaster.pid" ] || exit 0
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
*) echo "usage: postgres.sh start DIR PORT | stop DIR" >&2; exit 2 ;;
esac

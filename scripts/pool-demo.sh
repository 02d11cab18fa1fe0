#!/bin/sh
# Pool mode on one machine (README, "Pool mode"): installs what is needed, builds berth,
# starts Debian's PostgreSQL with its own data directory on loopback, one `berth service`
# and three `berth agent --service` nodes (distinct node ids and roots, one Docker engine),
# adds the pool, a job and ten tasks (the last depends on the other nine), and shows where
# each ran. Everything it started is stopped on exit. Runs as root, with or without sudo.
# With --web it then keeps the pool up with a task that prints a line a second for ten
# minutes, and prints the web view's address and token, until Ctrl-C.
set -eu
web=false
case "${1:-}" in
  --web) web=true ;;
  "") ;;
  *) echo "usage: $0 [--web]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p berth-agent
./scripts/ensure-engine.sh
./examples/build-images.sh
berth=$PWD/target/release/berth
demo=${BERTH_POOL_DEMO_DIR:-/var/lib/berth-pool-demo}
port=${BERTH_POOL_DEMO_PORT:-8765}
mkdir -p "$demo"
chmod 755 "$demo"
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  ./scripts/postgres.sh stop "$demo/pg" || true
}
trap cleanup EXIT INT TERM

db=$(./scripts/postgres.sh start "$demo/pg" "${BERTH_POOL_DEMO_PG_PORT:-55439}")
umask 077
[ -f "$demo/token" ] || head -c 24 /dev/urandom | base64 | tr '+/' '-_' >"$demo/token"
[ -f "$demo/enrolment-secret" ] || head -c 24 /dev/urandom | base64 | tr '+/' '-_' >"$demo/enrolment-secret"
[ -f "$demo/proxy-secret" ] || head -c 24 /dev/urandom | base64 | tr '+/' '-_' >"$demo/proxy-secret"
umask 022
echo "pool-demo: service on http://127.0.0.1:$port (PostgreSQL $db); logs in $demo"
"$berth" service --database-url "$db" --listen "127.0.0.1:$port" --insecure-http \
  --token-file "$demo/token" --enrolment-secret-file "$demo/enrolment-secret" \
  --proxy-secret-file "$demo/proxy-secret" \
  2>"$demo/service.log" &
pids="$pids $!"
export BERTH_SERVICE="http://127.0.0.1:$port" BERTH_TOKEN_FILE="$demo/token"
i=0
until "$berth" pool list >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -lt 100 ] || { cat "$demo/service.log"; exit 1; }; sleep 0.2
done
"$berth" pool show demopool >/dev/null 2>&1 || "$berth" pool add examples/pool-demo/pool.json
for n in 1 2 3; do
  mkdir -p "$demo/node$n"
  # The node's TCP API (any free loopback port, its own token) is where the service
  # reads the node's task files from.
  [ -f "$demo/node$n/token" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr '+/' '-_' >"$demo/node$n/token")
  cat >"$demo/node$n/berth.toml" <<TOML
service = ["http://127.0.0.1:$port"]
pool_id = "demopool"
enrolment_secret_file = "$demo/enrolment-secret"
tcp_address = "127.0.0.1:0"
token_file = "$demo/node$n/token"
TOML
  "$berth" agent --config "$demo/node$n/berth.toml" --node-id "node$n" \
    --node-root "$demo/node$n/root" --socket "$demo/node$n/berth.sock" \
    2>"$demo/node$n/agent.log" &
  pids="$pids $!"
done
echo "pool-demo: waiting for three idle nodes"
i=0
until [ "$("$berth" node list --pool demopool --state idle 2>/dev/null | tail -n +2 | wc -l)" -ge 3 ]; do
  i=$((i + 1)); [ $i -lt 300 ] || { "$berth" node list --pool demopool; exit 1; }; sleep 0.2
done
"$berth" node list --pool demopool
"$berth" job delete demojob >/dev/null 2>&1 || true
"$berth" job add examples/pool-demo/job.json
"$berth" task add --job demojob examples/pool-demo/tasks.json >/dev/null
echo "pool-demo: ten tasks added; waiting for them"
i=0
until [ "$("$berth" task list --job demojob --state completed 2>/dev/null | tail -n +2 | wc -l)" -ge 10 ]; do
  i=$((i + 1)); [ $i -lt 600 ] || break; sleep 0.2
done
"$berth" task list --job demojob
echo "--- hello5's stdout.txt, read through the service from the node that ran it:"
"$berth" task logs --job demojob hello5
if $web; then
  "$berth" job delete livejob >/dev/null 2>&1 || true
  i=0
  until "$berth" job add examples/pool-demo/live-job.json >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 150 ] || { "$berth" job add examples/pool-demo/live-job.json; exit 1; }; sleep 0.2
  done
  "$berth" task add --job livejob examples/pool-demo/live-task.json >/dev/null
  echo
  echo "pool-demo: the web view is at http://127.0.0.1:$port/ui/"
  echo "pool-demo: log in with the token in $demo/token: $(cat "$demo/token")"
  echo "pool-demo: job livejob's task 'live' prints a line a second for ten minutes; Ctrl-C stops everything"
  # Until Ctrl-C (the trap stops what was started) or the service ends.
  wait
fi

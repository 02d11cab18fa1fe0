#!/bin/sh
# Makes sure a Docker engine answers on the default socket: starts the system service, or,
# where there is no init system, dockerd in the background (log: /var/log/berth-dockerd.log).
set -eu
docker version >/dev/null 2>&1 && exit 0
if command -v systemctl >/dev/null 2>&1 && systemctl start docker 2>/dev/null; then :; else
  setsid dockerd >/var/log/berth-dockerd.log 2>&1 </dev/null &
fi
for i in $(seq 60); do docker version >/dev/null 2>&1 && exit 0; sleep 0.5; done
echo "ensure-engine: the Docker engine did not start; see /var/log/berth-dockerd.log" >&2
exit 1

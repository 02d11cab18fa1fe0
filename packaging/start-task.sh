#!/bin/sh
# Installs berth and starts its service from a Batch pool start task (or any root shell).
# Idempotent: a rerun (after a reboot, or a start task retry) installs nothing when that
# version is already installed, and restarts the agent only when the configuration changed.
#
#   start-task.sh --package URL|FILE [--pool POOL.json] [--config berth.toml]
#
# --package  the .deb or .rpm: an http(s) URL (a SAS query is never printed) or a file,
#            e.g. one of the start task's resourceFiles
# --pool     the pool JSON berth runs (images to prefetch, registries, start task, slots);
#            copied to /etc/berth/pool.json and named in berth.toml
# --config   a whole berth.toml to install as /etc/berth/berth.toml
#
# A Batch start task (admin elevation, waitForSuccess) with the script, package and pool
# as resource files:
#   /bin/sh -c 'sh start-task.sh --package berth_0.1.0-1_amd64.deb --pool pool.json'
# Where systemd runs, the unit is enabled and started; elsewhere (a container) the agent is
# started in the background as the unit would start it (log /var/log/berth.log).
set -eu

die() { echo "start-task: $*" >&2; exit 1; }
say() { echo "start-task: $*"; }

package="" pool="" config=""
while [ $# -gt 0 ]; do
    case "$1" in
        --package) [ $# -ge 2 ] || die "--package needs a URL or file"; package=$2; shift 2 ;;
        --pool) [ $# -ge 2 ] || die "--pool needs a file"; pool=$2; shift 2 ;;
        --config) [ $# -ge 2 ] || die "--config needs a file"; config=$2; shift 2 ;;
        -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "start-task: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$package" ] || { echo "start-task: --package is required (see --help)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "must run as root (a start task with elevationLevel admin)"
for f in "$pool" "$config"; do
    [ -z "$f" ] || [ -r "$f" ] || die "cannot read $f"
done

# 1. The package, fetched if it is a URL.
case "$package" in
    http://* | https://*)
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        shown=${package%%\?*}
        file="$tmp/$(basename "$shown")"
        say "downloading $shown"
        if command -v curl >/dev/null 2>&1; then
            curl -fsSL --retry 5 --retry-delay 2 -o "$file" "$package" || die "download failed: $shown"
        else
            wget -q -t 5 -O "$file" "$package" || die "download failed: $shown"
        fi
        ;;
    *)
        [ -r "$package" ] || die "cannot read $package"
        file=$(cd "$(dirname "$package")" && pwd)/$(basename "$package")
        ;;
esac

# 2. Installed unless that version already is.
case "$file" in
    *.deb)
        want=$(dpkg-deb -f "$file" Version)
        have=$(dpkg-query -W -f '${Status} ${Version}' berth 2>/dev/null | sed -n 's/^install ok installed //p')
        if [ "$want" = "$have" ]; then
            say "berth $have is already installed"
        else
            say "installing berth $want${have:+ (over $have)}"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confold "$file" >/dev/null ||
                die "apt-get could not install $file"
        fi
        ;;
    *.rpm)
        want=$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$file")
        have=$(rpm -q --qf '%{VERSION}-%{RELEASE}' berth 2>/dev/null || true)
        if [ "$want" = "$have" ]; then
            say "berth $have is already installed"
        else
            say "installing berth $want${have:+ (over $have)}"
            if command -v dnf >/dev/null 2>&1; then
                dnf install -y -q "$file" || die "dnf could not install $file"
            elif command -v yum >/dev/null 2>&1; then
                yum install -y -q "$file" || die "yum could not install $file"
            else
                rpm -U "$file" || die "rpm could not install $file"
            fi
        fi
        ;;
    *) die "$package: not a .deb or .rpm" ;;
esac

# 3. Configuration; `changed` says whether a running agent must restart to see it.
changed=0
put() { # put SRC DEST MODE: install SRC at DEST unless it is already there
    if ! cmp -s "$1" "$2"; then
        install -D -m "$3" "$1" "$2"
        say "wrote $2"
        changed=1
    fi
}
[ -z "$config" ] || put "$config" /etc/berth/berth.toml 640
if [ -n "$pool" ]; then
    put "$pool" /etc/berth/pool.json 640
    if ! grep -q '^[[:space:]]*pool[[:space:]]*=' /etc/berth/berth.toml; then
        echo 'pool = "/etc/berth/pool.json"' >>/etc/berth/berth.toml
        say "berth.toml: pool = \"/etc/berth/pool.json\""
        changed=1
    fi
fi

# 4. The agent running, with this configuration.
if [ -d /run/systemd/system ]; then
    systemctl enable berth.service >/dev/null 2>&1
    if [ "$changed" = 1 ]; then
        systemctl restart berth.service
    else
        systemctl start berth.service
    fi
else
    # No systemd: start the agent as the unit does (its ExecStart), once.
    pidfile=/run/berth/agent.pid
    running=""
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        running=$(cat "$pidfile")
    fi
    if [ -n "$running" ] && [ "$changed" = 1 ]; then
        say "configuration changed: stopping the agent ($running)"
        kill -TERM "$running"
        for _ in $(seq 100); do kill -0 "$running" 2>/dev/null || break; sleep 0.2; done
        running=""
    fi
    if [ -z "$running" ]; then
        exec_start=$(sed -n 's/^ExecStart=//p' /usr/lib/systemd/system/berth.service)
        install -d -m 0750 -g berth /run/berth
        # shellcheck disable=SC2086
        HOME=/root setsid $exec_start >>/var/log/berth.log 2>&1 </dev/null &
        echo $! >"$pidfile"
        say "started the agent ($!), log /var/log/berth.log"
    else
        say "the agent is running ($running)"
    fi
fi

# 5. It answers.
for _ in $(seq 120); do
    if berth node show >/dev/null 2>&1; then
        berth node show
        exit 0
    fi
    sleep 0.5
done
die "the agent does not answer on its socket; see journalctl -u berth or /var/log/berth.log"

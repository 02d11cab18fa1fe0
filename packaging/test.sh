#!/bin/sh
# The packaging tests, as root on a machine where berth is not installed (CI's is fresh):
# builds both packages (packaging/build.sh), inspects them, verifies and scores the unit,
# installs the .deb into this machine, starts the installed agent as its unit does (same
# command, environment, capability bounding set, no-new-privileges, umask, NOTIFY_SOCKET)
# and runs a container task through it, upgrades (config and state kept), removes and
# purges; then the start-task script twice (the second run changes nothing).
# Leaves the machine as it found it: a node root or /etc/berth already there is moved
# aside and put back, and an engine it had to start is stopped.
set -eu
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "packaging/test.sh: run as root (it installs the .deb)" >&2; exit 1; }

fails=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() { # check DESCRIPTION COMMAND...
    d=$1; shift
    if "$@" >/dev/null 2>&1; then ok "$d"; else bad "$d"; fi
}
mode_of() { stat -c '%a %U:%G' "$1" 2>/dev/null || echo missing; }
expect_mode() { # expect_mode PATH 'MODE OWNER:GROUP'
    m=$(mode_of "$1")
    if [ "$m" = "$2" ]; then ok "$1 is $2"; else bad "$1 is $m, expected $2"; fi
}

if dpkg-query -W -f '${Status}' berth 2>/dev/null | grep -q 'ok installed'; then
    echo "packaging/test.sh: the berth package is installed on this machine; this test installs" >&2
    echo "and purges it. Run it on a machine without berth (or dpkg -P berth first)." >&2
    exit 1
fi

work=$(mktemp -d)
agent_pid="" listener_pid="" started_engine=""
aside=""
for d in /etc/berth /var/lib/berth; do
    if [ -e "$d" ]; then mv "$d" "$d.before-package-test"; aside="$aside $d"; fi
done
cleanup() {
    [ -z "$agent_pid" ] || kill -TERM "$agent_pid" 2>/dev/null || true
    [ -z "$listener_pid" ] || kill "$listener_pid" 2>/dev/null || true
    if [ -f /run/berth/agent.pid ]; then kill -TERM "$(cat /run/berth/agent.pid)" 2>/dev/null || true; fi
    sleep 1
    dpkg -P berth >/dev/null 2>&1 || true
    for d in $aside; do rm -rf "$d"; mv "$d.before-package-test" "$d"; done
    [ -z "$started_engine" ] || kill "$started_engine" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== build"
./packaging/build.sh
deb=$(ls target/package/berth_*_amd64.deb | head -1)
rpm=$(ls target/package/berth-*.x86_64.rpm | head -1)

echo "== the .deb's metadata and files"
info=$(dpkg-deb -I "$deb")
check "Package: berth" sh -c 'echo "$0" | grep -qx " Package: berth"' "$info"
check "Depends on an engine: docker.io | docker-ce | moby-engine" sh -c 'echo "$0" | grep -q "^ Depends:.*docker.io | docker-ce | moby-engine"' "$info"
check "conffiles: /etc/berth/berth.toml" sh -c 'dpkg-deb --ctrl-tarfile "$0" | tar -xO ./conffiles | grep -qx /etc/berth/berth.toml' "$deb"
dpkg-deb -c "$deb" | awk '{print $1, $NF}' | sed 's#^\([^ ]*\) \./#\1 /#' | grep -v '/$' | sort -k2 >"$work/deb-files"
for want in \
    "-rwxr-xr-x /usr/bin/berth" \
    "-rw-r----- /etc/berth/berth.toml" \
    "-rw-r--r-- /usr/lib/systemd/system/berth.service" \
    "-rw-r--r-- /usr/lib/tmpfiles.d/berth.conf" \
    "-rw-r--r-- /usr/share/bash-completion/completions/berth" \
    "-rw-r--r-- /usr/share/zsh/vendor-completions/_berth" \
    "-rw-r--r-- /usr/share/fish/vendor_completions.d/berth.fish" \
    "-rw-r--r-- /usr/share/man/man1/berth.1.gz" \
    "-rw-r--r-- /usr/share/man/man1/berth-agent.1.gz" \
    "-rw-r--r-- /usr/share/doc/berth/host-tasks.conf"; do
    check "deb has $want" grep -qxF -- "$want" "$work/deb-files"
done
check "every file in the .deb belongs to root" sh -c '! dpkg-deb -c "$0" | awk "{print \$2}" | grep -v "^0/0$"' "$deb"

echo "== the .rpm's metadata and files"
check "rpm Name: berth" sh -c 'rpm -qp --qf "%{NAME}" "$0" | grep -qx berth' "$rpm"
check "rpm requires an engine" sh -c 'rpm -qp --requires "$0" 2>/dev/null | grep -qxF "(docker-ce or moby-engine or docker)"' "$rpm"
check "rpm %config(noreplace) /etc/berth/berth.toml" sh -c 'rpm -qp --qf "[%{FILEFLAGS:fflags} %{FILENAMES}\n]" "$0" 2>/dev/null | grep -qx "cn /etc/berth/berth.toml"' "$rpm"
for s in preinstall postinstall preuninstall postuninstall; do
    check "rpm has a $s scriptlet" sh -c 'rpm -qp --scripts "$0" 2>/dev/null | grep -q "^$1 scriptlet"' "$rpm" "$s"
done
rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$rpm" 2>/dev/null |
    sed 's#/usr/share/zsh/site-functions/#/usr/share/zsh/vendor-completions/#' | sort -k2 >"$work/rpm-files"
# One description of the files: the same paths and modes in both (cargo-deb adds copyright).
grep -v '/usr/share/doc/berth/copyright$' "$work/deb-files" >"$work/deb-files-cmp"
if diff "$work/deb-files-cmp" "$work/rpm-files" >"$work/files-diff"; then
    ok "the .deb and the .rpm carry the same $(wc -l <"$work/rpm-files") files with the same modes"
else
    bad "the .deb and the .rpm differ:"; cat "$work/files-diff"
fi

echo "== the unit"
score=$(systemd-analyze security --offline=true systemd/berth.service 2>&1 | sed -n 's/.*Overall exposure level for berth.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: $score"
check "security exposure $score is at most 3.5 (README: 3.2)" awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 3.5) }'
# The drop-in beside a copy of the unit (with a command that exists here): it must load and
# lift the sandbox.
mkdir -p "$work/dropin/berth.service.d"
sed 's#^ExecStart=.*#ExecStart=/bin/true#' systemd/berth.service >"$work/dropin/berth.service"
cp systemd/host-tasks.conf "$work/dropin/berth.service.d/"
check "the unit with the host-tasks drop-in verifies" systemd-analyze verify --man=no "$work/dropin/berth.service"
lifted=$(systemd-analyze security --offline=true "$work/dropin/berth.service" 2>&1 | sed -n 's/.*Overall exposure level for berth.service: \([0-9.]*\).*/\1/p')
check "the host-tasks drop-in lifts the sandbox (exposure $lifted)" awk -v s="$lifted" 'BEGIN { exit !(s != "" && s >= 7) }'

echo "== install the .deb"
dpkg -i "$deb" >"$work/dpkg-install.log" 2>&1 || { cat "$work/dpkg-install.log"; bad "dpkg -i"; exit 1; }
ok "dpkg -i $deb"
check "systemd-analyze verify the installed unit" systemd-analyze verify /usr/lib/systemd/system/berth.service
systemd-analyze verify /usr/lib/systemd/system/berth.service || true
expect_mode /usr/bin/berth "755 root:root"
expect_mode /etc/berth/berth.toml "640 root:root"
expect_mode /var/lib/berth "755 root:root"
expect_mode /run/berth "750 root:berth"
check "group berth exists" getent group berth
check "the unit is enabled" test -L /etc/systemd/system/multi-user.target.wants/berth.service
check "man berth finds the page" man -w berth
check "bash completion completes subcommands" bash -c '. /usr/share/bash-completion/completions/berth; COMP_WORDS=(berth jo); COMP_CWORD=1; _berth berth jo berth; [ "${COMPREPLY[*]}" = "job jobschedule" ]'
check "berth --version" sh -c '/usr/bin/berth --version | grep -q "^berth "'

echo "== start the installed agent as the unit does"
if ! docker version >/dev/null 2>&1; then
    ./scripts/ensure-engine.sh
    started_engine=$(cat /var/run/docker.pid 2>/dev/null || true)
fi
./examples/build-images.sh >/dev/null
unit=/usr/lib/systemd/system/berth.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
envs=$(sed -n 's/^Environment=//p' "$unit")
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit" | tr 'A-Z' 'a-z' | sed 's/cap_//g; s/ \+/,+/g; s/^/-all,+/')
umask_=$(sed -n 's/^UMask=//p' "$unit")
nnp=""
grep -qx 'NoNewPrivileges=yes' "$unit" && nnp=--no-new-privs
echo "ExecStart=$exec_start; Environment=$envs; bounding set $caps; $nnp; umask $umask_"
notify="$work/notify.sock"
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    print(s.recv(4096).decode().replace("\n", " "), flush=True)
' "$notify" >"$work/notify.log" 2>&1 &
listener_pid=$!
for _ in $(seq 50); do [ -S "$notify" ] && break; sleep 0.1; done
# shellcheck disable=SC2086
(umask "$umask_" && exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin NOTIFY_SOCKET="$notify" $envs \
    setpriv --bounding-set "$caps" $nnp -- $exec_start) >"$work/agent.log" 2>&1 &
agent_pid=$!
ready=""
for _ in $(seq 100); do
    if grep -q 'READY=1' "$work/notify.log"; then ready=1; break; fi
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.2
done
if [ -n "$ready" ]; then ok "READY=1 on NOTIFY_SOCKET ($(head -1 "$work/notify.log"))"; else bad "no READY=1"; cat "$work/agent.log"; fi
expect_mode /run/berth/berth.sock "660 root:berth"
check "berth node show answers on /run/berth/berth.sock" berth node show
cat >"$work/job.json" <<'EOF'
{"id": "pkgjob"}
EOF
cat >"$work/task.json" <<'EOF'
{"id": "t1", "commandLine": "/bin/sh -c 'id -u; echo packaged > $AZ_BATCH_TASK_WORKING_DIR/out.txt'",
 "containerSettings": {"imageName": "myimage"}}
EOF
check "berth job add" berth job add "$work/job.json"
check "berth task add" berth task add --job pkgjob "$work/task.json"
state=""
for _ in $(seq 150); do
    state=$(berth task show --job pkgjob t1 --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || true)
    [ "$state" = completed ] && break
    sleep 0.2
done
check "the task completed" test "$state" = completed
check "it exited 0" sh -c 'berth task show --job pkgjob t1 --json | python3 -c "import json,sys; sys.exit(json.load(sys.stdin)[\"executionInfo\"][\"exitCode\"])"'
check "it ran as the non-admin task user (useradd and chown under the bounding set)" \
    sh -c 'uid=$(id -u _azbatch) && [ "$uid" != 0 ] && grep -qx "$uid" /var/lib/berth/workitems/pkgjob/job-1/t1/stdout.txt'
check "it wrote its working directory" grep -qx packaged /var/lib/berth/workitems/pkgjob/job-1/t1/wd/out.txt
kill -TERM "$agent_pid"
for _ in $(seq 100); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$agent_pid" 2>/dev/null; then bad "the agent did not stop on SIGTERM"; else
    wait "$agent_pid" && ok "SIGTERM: the agent exited 0" || bad "SIGTERM: the agent exited $?"
fi
agent_pid=""
check "STOPPING=1 on NOTIFY_SOCKET" grep -q 'STOPPING=1' "$work/notify.log"
kill "$listener_pid" 2>/dev/null || true
listener_pid=""

echo "== reinstall and upgrade keep the configuration and the state"
echo "# changed by the package test" >>/etc/berth/berth.toml
dpkg -i "$deb" >"$work/dpkg-reinstall.log" 2>&1 && ok "dpkg -i again" || { cat "$work/dpkg-reinstall.log"; bad "dpkg -i again"; }
check "reinstall: the changed berth.toml is kept" grep -qx '# changed by the package test' /etc/berth/berth.toml
BERTH_DEB_VERSION=0.1.0-99 BERTH_PACKAGE_OUT="$work/v2" ./packaging/build.sh >"$work/build-v2.log" 2>&1 || { cat "$work/build-v2.log"; bad "build 0.1.0-99"; }
dpkg -i "$work"/v2/berth_0.1.0-99_amd64.deb >"$work/dpkg-upgrade.log" 2>&1 && ok "upgrade to 0.1.0-99" || { cat "$work/dpkg-upgrade.log"; bad "upgrade"; }
check "upgraded: dpkg says 0.1.0-99" sh -c 'dpkg-query -W -f "\${Version}" berth | grep -qx 0.1.0-99'
check "upgrade: the changed berth.toml is kept" grep -qx '# changed by the package test' /etc/berth/berth.toml
check "upgrade: the agent's store is kept" test -s /var/lib/berth/berth/state.db
check "upgrade: the task's files are kept" test -s /var/lib/berth/workitems/pkgjob/job-1/t1/wd/out.txt

echo "== remove, then purge"
dpkg -r berth >/dev/null 2>&1 && ok "dpkg -r" || bad "dpkg -r"
check "removed: /usr/bin/berth is gone" test ! -e /usr/bin/berth
check "removed: the unit is gone" test ! -e /usr/lib/systemd/system/berth.service
check "removed: berth.toml stays until purge" test -f /etc/berth/berth.toml
check "removed: the node root stays until purge" test -d /var/lib/berth/berth
dpkg -P berth >/dev/null 2>&1 && ok "dpkg -P" || bad "dpkg -P"
check "purged: /etc/berth is gone" test ! -e /etc/berth
check "purged: /var/lib/berth is gone" test ! -e /var/lib/berth
check "purged: the enable link is gone" test ! -e /etc/systemd/system/multi-user.target.wants/berth.service
check "purged: group berth stays (system groups are not removed)" getent group berth

echo "== the start-task script, twice"
cat >"$work/pool.json" <<'EOF'
{"id": "pkgpool", "taskSlotsPerNode": 2,
 "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible", "containerImageNames": ["myimage"]}}}
EOF
(cd "$work" && sh "$OLDPWD/packaging/start-task.sh" --package "$OLDPWD/$deb" --pool pool.json) >"$work/start1.log" 2>&1 &&
    ok "start-task.sh: first run" || { cat "$work/start1.log"; bad "start-task.sh: first run"; }
cat "$work/start1.log"
check "first run installed the package" grep -q 'installing berth 0.1.0-1' "$work/start1.log"
check "first run named the pool in berth.toml" grep -qx 'pool = "/etc/berth/pool.json"' /etc/berth/berth.toml
check "the agent runs the pool (2 slots)" sh -c 'berth node show --json | python3 -c "import json,sys; n=json.load(sys.stdin); sys.exit(n[\"poolId\"] != \"pkgpool\")"'
pid1=$(cat /run/berth/agent.pid 2>/dev/null || echo none)
(cd "$work" && sh "$OLDPWD/packaging/start-task.sh" --package "$OLDPWD/$deb" --pool pool.json) >"$work/start2.log" 2>&1 &&
    ok "start-task.sh: second run" || { cat "$work/start2.log"; bad "start-task.sh: second run"; }
cat "$work/start2.log"
check "second run installed nothing" grep -q 'already installed' "$work/start2.log"
check "second run wrote nothing" sh -c '! grep -q wrote "$0"' "$work/start2.log"
check "second run kept the same agent" test "$(cat /run/berth/agent.pid 2>/dev/null)" = "$pid1"
check "start-task.sh refuses a bad argument (exit 2)" sh -c 'sh packaging/start-task.sh --bogus; [ $? -eq 2 ]'

echo
if [ "$fails" -eq 0 ]; then echo "PASS: packaging tests"; else echo "FAIL: $fails packaging checks failed"; exit 1; fi

#!/usr/bin/env bash
# GPU end to end, on a machine with an NVIDIA GPU, its driver and nvcc (no toolkit needed).
# Builds an image that holds no NVIDIA file (busybox, glibc pieces, a CUDA program built
# here), then runs container tasks through `berth run` and checks their output:
#   smi      `nvidia-smi -L` as the default non-admin user      -> lists the GPU
#   cuda     the CUDA program as the non-admin user               -> "vecadd ok"
#   cudaroot the CUDA program with admin elevation (root)         -> "vecadd ok"
#   nogpu    BERTH_GPUS=0                                         -> no /dev/nvidia*, no nvidia-smi
# then
#   own      --gpus all with no toolkit: berth adds nothing; the engine refuses it
# and, with two slots, two tasks share the one GPU side by side, but with one GPU per slot
# the second waits until the first has given the GPU back; then the same through the daemon
# (`berth agent`, `berth node show`, `berth task add`, `berth task logs -f`).
#
# Usage: scripts/gpu-test.sh BERTH [KIT_DIR]
#   BERTH    the berth binary
#   KIT_DIR  a directory with kit.tar.xz (scripts/gpu/make-kit.sh): a private engine is
#            started from it (scripts/gpu/start-engine.sh); without it, DOCKER_HOST or the
#            local engine is used.
set -euo pipefail
berth=$(realpath "${1:?usage: gpu-test.sh BERTH [KIT_DIR]}")
src=$(cd "$(dirname "$0")" && pwd)
if [ -n "${2:-}" ]; then
  eval "$(bash "$src/gpu/start-engine.sh" "$2/kit.tar.xz")"
fi
work=$(mktemp -d)
fail() { echo "FAIL: $*"; exit 1; }

nvidia-smi -L
nvcc=$(command -v nvcc || ls /usr/local/cuda*/bin/nvcc 2>/dev/null | head -1)
[ -x "$nvcc" ] || fail "no nvcc"
"$nvcc" -cudart static -o "$work/vecadd" "$src/gpu/vecadd.cu"

# The image: busybox, the program and the glibc pieces it and the driver's libraries load.
root=$work/rootfs
mkdir -p "$root/bin" "$root/lib/x86_64-linux-gnu" "$root/lib64" "$root/tmp" "$root/etc"
busybox=$(command -v busybox || echo /tmp/kit/busybox)
cp "$busybox" "$root/bin/busybox"
for a in sh ls cat echo id grep sleep date; do ln -s busybox "$root/bin/$a"; done
cp "$work/vecadd" "$root/bin/"
for l in libc.so.6 libm.so.6 libstdc++.so.6 libgcc_s.so.1 libdl.so.2 libpthread.so.0 librt.so.1; do
  p=$(ldconfig -p | awk -v n="$l" '$1 == n && /x86-64/ { print $NF; exit }')
  [ -n "$p" ] && cp -L "$p" "$root/lib/x86_64-linux-gnu/"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
if find "$root" -iname '*nvidia*' -o -iname 'libcuda*' | grep -q .; then fail "the image holds NVIDIA files"; fi
tar -C "$root" -c . | docker import - berth/gpu-test:1 >/dev/null

cat > "$work/pool.json" <<'EOF'
{"id": "gpupool", "taskSlotsPerNode": 1,
 "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible",
   "containerImageNames": ["berth/gpu-test:1"]}}}
EOF
task() { # id command [extra JSON members]
  printf '{"id": "%s", "commandLine": "%s", "containerSettings": {"imageName": "berth/gpu-test:1", "containerRunOptions": "--network none %s"}%s}' "$1" "$2" "${4:-}" "${3:-}"
}
admin=', "userIdentity": {"autoUser": {"elevationLevel": "admin"}}'
nogpu=', "environmentSettings": [{"name": "BERTH_GPUS", "value": "0"}]'
{
  echo '['
  task smi "nvidia-smi -L"; echo ,
  task cuda "/bin/vecadd"; echo ,
  task cudaroot "/bin/vecadd" "$admin"; echo ,
  task nogpu "sh -c 'ls /dev | grep nvidia; nvidia-smi -L; echo rc=\$? NVIDIA_VISIBLE_DEVICES=\$NVIDIA_VISIBLE_DEVICES'" "$nogpu"
  echo ']'
} > "$work/tasks.json"

nr=$work/node
echo "== berth pool start"
"$berth" pool start --pool "$work/pool.json" --node-root "$nr" --json > "$work/node.json"
grep -q '"exposure": "manual"' "$work/node.json" || { cat "$work/node.json"; fail "no GPUs in the node info"; }
grep -E '"(uuid|name|driverVersion|cudaVersion)"' "$work/node.json"

echo "== berth run"
"$berth" run --pool "$work/pool.json" --node-root "$nr" "$work/tasks.json" || true
out() { cat "$nr/workitems/berthjob/job-1/$1/stdout.txt" "$nr/workitems/berthjob/job-1/$1/stderr.txt" 2>/dev/null; }
for t in smi cuda cudaroot nogpu; do echo "-- $t:"; out "$t"; done
out smi | grep -q '^GPU 0: .*(UUID: GPU-' || fail "smi: nvidia-smi -L did not list the GPU"
out cuda | grep -q 'vecadd ok' || fail "cuda: the CUDA program did not run as the non-admin user"
out cudaroot | grep -q 'vecadd ok' || fail "cudaroot: the CUDA program did not run as root"
out nogpu | grep -q 'rc=127 NVIDIA_VISIBLE_DEVICES=void' || fail "nogpu: a task with BERTH_GPUS=0 saw GPU tools"
out nogpu | grep -q '^nvidia' && fail "nogpu: a task with BERTH_GPUS=0 saw /dev/nvidia*"

echo "== berth run --json (own --gpus)"
"$berth" run --pool "$work/pool.json" --node-root "$nr" --json <(echo "[$(task own "nvidia-smi -L" "" "--gpus all")]") > "$work/own.json" || true
grep -q 'ContainerInvalidSettings' "$work/own.json" || { cat "$work/own.json"; fail "own: --gpus all was not passed as given"; }
grep -o 'could not select device driver[^"]*' "$work/own.json" | head -1

stamps="sh -c 'read u x < /proc/uptime; echo \$u; sleep 2; read u x < /proc/uptime; echo \$u'"
pair() { # extra berth flags; prints "overlap" or "apart"
  rm -rf "$nr/workitems/berthjob/job-1/a" "$nr/workitems/berthjob/job-1/b"
  echo "[$(task a "$stamps"), $(task b "$stamps")]" > "$work/pair.json"
  "$berth" run --pool "$work/pool.json" --node-root "$nr" --slots 2 "$@" "$work/pair.json" >/dev/null 2>&1
  awk -v a="$(out a | tr '\n' ' ')" -v b="$(out b | tr '\n' ' ')" 'BEGIN { split(a, x, " "); split(b, y, " ");
    print "a " x[1] "-" x[2] ", b " y[1] "-" y[2] > "/dev/stderr";
    print ((x[1] < y[2] && y[1] < x[2]) ? "overlap" : "apart") }'
}
echo "== two slots, one GPU: shared by default, so the two tasks overlap"
[ "$(pair)" = overlap ] || fail "two tasks sharing the GPU did not run side by side"
echo "== two slots, --gpus-per-slot 1: the second task waits for the GPU"
[ "$(pair --gpus-per-slot 1)" = apart ] || fail "two tasks held the one GPU at once"
echo "== the daemon: berth node show lists the GPU; a task added with the CLI sees it"
sock=$work/berth.sock
"$berth" agent --config /dev/null --pool "$work/pool.json" --socket "$sock" --node-root "$work/agentnode" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 100); do "$berth" node show --socket "$sock" >/dev/null 2>&1 && break; sleep 0.2; done
"$berth" node show --socket "$sock" | tee "$work/node.txt"
grep -q 'GPUs: 1 ' "$work/node.txt" || fail "berth node show does not list the GPU"
echo '{"id": "gpujob"}' > "$work/job.json"
task smi "nvidia-smi -L" > "$work/smi.json"
"$berth" job add "$work/job.json" --socket "$sock"
"$berth" task add --job gpujob "$work/smi.json" --socket "$sock"
"$berth" task logs --job gpujob smi -f --socket "$sock" | tee "$work/smi.txt"
kill "$agent"; wait "$agent" || true
grep -q '^GPU 0: .*(UUID: GPU-' "$work/smi.txt" || { cat "$work/agent.log"; fail "the daemon's task did not see the GPU"; }
echo "PASS: GPU tests"

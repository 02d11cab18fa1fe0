#!/bin/sh
# The README's first command: install what is needed, build berth, start Docker, build the
# example image offline, and run the seed sample task with `berth run`.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p berth-agent
./scripts/ensure-engine.sh
./examples/build-images.sh
./target/release/berth run --node-root /var/lib/berth examples/sampletask.json
echo "--- output.txt:"
cat /var/lib/berth/workitems/berthjob/job-1/sampletask/wd/output.txt

#!/bin/sh
# The README's second command: install what is needed and run the whole test suite.
# The engine tests use the Docker engine that answers (BERTH_TEST_DOCKER_HOST, DOCKER_HOST or
# the default socket) or start a private dockerd of their own; they never skip.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
cargo test --workspace "$@"

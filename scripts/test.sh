#!/bin/sh
# The README's second command: install what is needed and run the whole test suite.
# The engine tests use the Docker engine that answers (BERTH_TEST_DOCKER_HOST, DOCKER_HOST or
# the default socket) or start a private dockerd of their own; they never skip. Then the
# packaging tests build the .deb and .rpm and install the .deb into this machine
# (packaging/test.sh); arguments (a cargo test filter) run only the cargo tests.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
# Format and lints first: a diff or a warning fails the run (the lint set is
# [workspace.lints] in Cargo.toml).
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace "$@"
# The benchmarks are not run here, but they must keep compiling.
cargo test --workspace --benches --no-run --quiet
if [ $# -eq 0 ]; then
    ./packaging/test.sh
else
    echo "test.sh: packaging tests not run: arguments were given to cargo test"
fi

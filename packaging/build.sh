#!/bin/sh
# Builds the .deb and the .rpm from a clean checkout into target/package/ (override with
# BERTH_PACKAGE_OUT), installing cargo-deb and cargo-generate-rpm first if missing.
# BERTH_DEB_VERSION (e.g. 0.1.0-2) overrides the package version, for upgrade tests.
set -eu
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
out=${BERTH_PACKAGE_OUT:-target/package}
gen=target/package/generated

# Pinned: the versions these packages were checked with.
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --version 3.8.0
command -v cargo-generate-rpm >/dev/null 2>&1 || cargo install cargo-generate-rpm --locked --version 0.21.1

cargo build --release --locked -p berth-agent
bin=target/release/berth

# Completions and man pages come from the CLI parser itself.
rm -rf "$gen" && mkdir -p "$gen/man" "$out"
"$bin" completions bash >"$gen/berth.bash"
"$bin" completions zsh >"$gen/_berth"
"$bin" completions fish >"$gen/berth.fish"
"$bin" manpages "$gen/man"
gzip -9n "$gen"/man/*.1

python3 packaging/rpm.py agent/Cargo.toml >"$gen/rpm-assets.toml"
if [ -n "${BERTH_DEB_VERSION:-}" ]; then
    cargo deb -p berth-agent --no-build --quiet -o "$out" --deb-version "$BERTH_DEB_VERSION"
    cargo generate-rpm -p agent --metadata-overwrite "$gen/rpm-assets.toml" -o "$out" \
        --set-metadata "release = \"${BERTH_DEB_VERSION##*-}\""
else
    cargo deb -p berth-agent --no-build --quiet -o "$out"
    cargo generate-rpm -p agent --metadata-overwrite "$gen/rpm-assets.toml" -o "$out"
fi

ls -1 "$out"/*.deb "$out"/*.rpm

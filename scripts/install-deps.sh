#!/bin/sh
# Installs what berth's demo and tests need on Debian/Ubuntu: Docker's engine (docker.io),
# a registry (docker-registry) and htpasswd (apache2-utils) for its auth tests,
# busybox-static (offline test images), iproute2, the packaging tests' tools (rpm, python3,
# man-db, systemd-analyze, setpriv), PostgreSQL (pool mode's service), Azurite (npm) for the task-file tests,
# the Azure Batch Python SDKs (pinned azure-batch 14.x and 15.x) and the az CLI, each in a
# virtual environment, for the API compatibility test, Chromium and playwright-core (npm,
# pinned) for the web view's browser tests, and a Rust toolchain if none is present.
# Idempotent; needs root (or sudo).
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=""
for pair in dockerd:docker.io docker-registry:docker-registry htpasswd:apache2-utils ip:iproute2 file:file \
    rpm:rpm python3:python3 man:man-db systemd-analyze:systemd setpriv:util-linux \
    /usr/lib/postgresql/15/bin/initdb:postgresql chromium:chromium chromedriver:chromium-driver; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ] || need="$need $pkg"
done
[ -x /bin/busybox ] && ! file /bin/busybox | grep -q 'dynamically linked' || need="$need busybox-static"
if [ -n "$need" ]; then
  echo "install-deps: installing$need"
  $SUDO apt-get update -qq
  # Don't let the package start services where there is no init to run them.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "install-deps: installing Rust with rustup"
  command -v curl >/dev/null 2>&1 || { $SUDO apt-get install -y -qq curl ca-certificates >/dev/null; }
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
# The test script lints with clippy, which rustup's minimal profile leaves out.
if ! cargo clippy --version >/dev/null 2>&1 && ! "$HOME/.cargo/bin/cargo" clippy --version >/dev/null 2>&1; then
  echo "install-deps: adding clippy"
  PATH="$HOME/.cargo/bin:$PATH" rustup component add clippy
fi
# Azurite (Microsoft's Azure Storage emulator) for the resource/output file tests, pinned,
# into .tools/ of this checkout.
AZURITE_VERSION=3.35.0
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "$("$root/.tools/azurite/node_modules/.bin/azurite-blob" --version 2>/dev/null)" != "$AZURITE_VERSION" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "install-deps: installing nodejs and npm"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  echo "install-deps: installing azurite $AZURITE_VERSION"
  mkdir -p "$root/.tools/azurite"
  (cd "$root/.tools/azurite" && npm install --silent --no-audit --no-fund --no-save "azurite@$AZURITE_VERSION" >/dev/null)
fi
# playwright-core (no browser download: the tests drive Debian's /usr/bin/chromium), pinned,
# for tests/tests/ui.rs (tests/ui/e2e.mjs).
PLAYWRIGHT_VERSION=1.64.1
if [ "$(node -p "require('$root/.tools/ui-tests/node_modules/playwright-core/package.json').version" 2>/dev/null)" != "$PLAYWRIGHT_VERSION" ]; then
  echo "install-deps: installing playwright-core $PLAYWRIGHT_VERSION"
  mkdir -p "$root/.tools/ui-tests"
  (cd "$root/.tools/ui-tests" && npm install --silent --no-audit --no-fund --no-save "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null)
fi
# The Azure Batch Python SDK 14.x (msrest), pinned with its dependencies
# (tests/sdk/batch14-requirements.txt), for tests/tests/api_compat.rs.
AZURE_BATCH_VERSION=14.2.0
venv="$root/.tools/azure-batch-14"
if [ "$("$venv/bin/python" -c 'import azure.batch; print(azure.batch.__version__)' 2>/dev/null)" != "$AZURE_BATCH_VERSION" ]; then
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "install-deps: installing python3-venv"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  echo "install-deps: installing azure-batch $AZURE_BATCH_VERSION"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/tests/sdk/batch14-requirements.txt"
fi
# The 15.x SDK (azure-core), pinned (tests/sdk/batch15-requirements.txt), in its own
# virtual environment: HTTPS with a token, and SharedKey.
AZURE_BATCH15_VERSION=15.1.0
venv="$root/.tools/azure-batch-15"
if [ "$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("azure-batch"))' 2>/dev/null)" != "$AZURE_BATCH15_VERSION" ]; then
  echo "install-deps: installing azure-batch $AZURE_BATCH15_VERSION"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/tests/sdk/batch15-requirements.txt"
fi
# The az CLI (azure-cli, pinned with its dependencies: tests/sdk/azure-cli-requirements.txt)
# for `az batch` against the agent: about 730 MB and 1.5 minutes to install.
# BERTH_SKIP_AZ_CLI=1 leaves it out (tests/tests/api_compat.rs's az test then fails, saying so).
AZ_CLI_VERSION=2.91.0
venv="$root/.tools/azure-cli"
if [ "${BERTH_SKIP_AZ_CLI:-0}" != 1 ] && \
   [ "$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("azure-cli"))' 2>/dev/null)" != "$AZ_CLI_VERSION" ]; then
  echo "install-deps: installing azure-cli $AZ_CLI_VERSION"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/tests/sdk/azure-cli-requirements.txt"
fi
echo "install-deps: ok"

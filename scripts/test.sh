#!/usr/bin/env bash
# Installs what the tests need, then runs every test of the workspace: unit tests of pure logic,
# and end-to-end tests that start their own MariaDB, s3s-fs and Garage on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --s3
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --workspace --locked "$@"

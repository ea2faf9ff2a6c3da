#!/usr/bin/env bash
# The main job end to end on the embedded default: a throwaway MariaDB holding an invoice
# platform (users, companies, invoices, offers, payments, audit_events, with a view, a trigger,
# routines and an event), backed up into a local-folder repository, then listed, shown and
# verified. Nothing outside .demo/ is touched; the MariaDB is gone when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "==> building coffer"
cargo build --locked --quiet --bin coffer
cargo build --locked --quiet -p coffer-verifier --bin coffer-sandbox
coffer=target/debug/coffer

demo=.demo
rm -rf "$demo"
mkdir -p "$demo"
. scripts/lib/sandbox.sh

echo "==> starting a throwaway MariaDB with the invoice platform"
start_invoice_sandbox "$demo" "${DEMO_SCALE:-2000}"
echo "    MariaDB on 127.0.0.1:$SANDBOX_PORT"
write_coffer_config "$demo" "$SANDBOX_PORT"
export COFFER_CONFIG="$demo/coffer.toml"

echo "==> coffer check"
$coffer check
echo "==> coffer backup run full"
$coffer backup run full
echo "==> coffer backup list"
$coffer backup list
echo "==> coffer backup show latest"
$coffer backup show latest
echo "==> coffer backup verify latest"
$coffer backup verify latest
echo "==> done: repository in $demo/repo (see docs/FORMAT.md to restore it by hand)"

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
mkdir -p "$demo/secrets"
(umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$demo/secrets/db-password")

echo "==> starting a throwaway MariaDB with the invoice platform"
# The sandbox lives until its stdin closes, that is until this script exits.
exec 3> >(target/debug/coffer-sandbox --ready-file "$demo/sandbox.ready" --server-id 1 \
  --sql scripts/sql/invoice-platform.sql --scale "${DEMO_SCALE:-2000}" \
  --user coffer --password-file "$demo/secrets/db-password")
for _ in $(seq 1 600); do [ -s "$demo/sandbox.ready" ] && break; sleep 0.1; done
[ -s "$demo/sandbox.ready" ] || { echo "demo: the sandbox did not start" >&2; exit 1; }
port=$(sed -n 's/^port=//p' "$demo/sandbox.ready")
echo "    MariaDB on 127.0.0.1:$port"

cat > "$demo/coffer.toml" <<TOML
timezone = "UTC"

[repository]
url = "repo"
compression = "zstd"
compression_level = 3

[source]
host = "127.0.0.1"
port = $port
user = "coffer"
password_file = "secrets/db-password"
databases = ["app"]
TOML
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

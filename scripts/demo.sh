#!/usr/bin/env bash
# The main job end to end on the embedded default: a throwaway MariaDB holding an invoice
# platform (users, companies, invoices, offers, payments, audit_events, with a view, a trigger,
# routines and an event), backed up into a local-folder repository, listed, shown and verified;
# then writes and an accidental DELETE are archived from the binary log, found again with
# `binlog find`; the app's file storage (invoice PDFs, avatars) is snapshotted twice and one
# folder restored; its .env is versioned twice and diffed with the password masked; and a recovery drill restores everything into a second throwaway MariaDB and
# proves the whole checklist, the app's own check and a sample of the files included. Nothing outside .demo/ is touched; both MariaDBs are gone when the script
# ends.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "==> building coffer"
# One build for both binaries: features unified once, dependencies compiled once.
cargo build --locked --quiet --workspace --bins
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

echo "==> coffer key generate: every manifest and drill report is signed, and readers check it"
$coffer key generate --output-dir "$demo/keys"
sed -i 's|^\[repository\]$|[repository]\nsigning_key_file = "keys/coffer.key"\nverify_key = "keys/coffer.pub"|' "$demo/coffer.toml"

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
if command -v minisign >/dev/null 2>&1; then
  echo "==> minisign checks the newest manifest by hand, as docs/FORMAT.md shows"
  minisign -Vm "$(ls "$demo"/repo/manifests/*full*.json | tail -1)" -p "$demo/keys/coffer.pub"
fi

root_sql() { mariadb --no-defaults --socket="$(sed -n 's/^socket=//p' "$demo/sandbox.ready")" -uroot -e "$1"; }
echo "==> the app writes after the backup, and someone deletes the oldest audit events"
root_sql "UPDATE app.invoices SET status = 'funded' WHERE status = 'listed' LIMIT 20;
          FLUSH BINARY LOGS;
          DELETE FROM app.audit_events ORDER BY id LIMIT 25;"
echo "==> coffer backup run incremental"
$coffer backup run incremental
echo "==> coffer status"
$coffer status
echo "==> coffer binlog find --table audit_events --kind delete"
$coffer binlog find --table audit_events --kind delete
echo "==> the app's file storage: invoices as PDFs and avatars"
storage="$PWD/$demo/storage/app"
mkdir -p "$storage/invoices/2026/11" "$storage/avatars"
for n in $(seq -w 1 40); do
  { printf '%%PDF-1.4\n%% invoice INV-%s\n' "$n"; head -c $((2000 + 10#$n * 97)) /dev/urandom | base64; printf '%%%%EOF\n'; } \
    > "$storage/invoices/2026/11/INV-$n.pdf"
done
for n in $(seq 1 12); do head -c $((4000 + n * 311)) /dev/urandom > "$storage/avatars/user-$n.png"; done
cat >> "$demo/coffer.toml" <<TOML

[[files]]
name = "storage"
path = "$storage"
TOML
echo "==> coffer backup run files (then again: only what changed is read)"
$coffer backup run files
echo "a late change" >> "$storage/invoices/2026/11/INV-01.pdf"
$coffer backup run files
echo "==> coffer files ls latest invoices/2026/11/ (first lines)"
$coffer files ls latest invoices/2026/11/ > "$demo/files-ls.txt"
head -5 "$demo/files-ls.txt"
echo "==> coffer restore files --latest --path invoices/ --to $demo/restored-files"
$coffer restore files --latest --path invoices/ --to "$demo/restored-files"
diff -r "$storage/invoices" "$demo/restored-files/invoices" && echo "    restored invoices are byte-identical"

echo "==> the app's configuration: versioned when it changes, secrets masked in diffs"
mkdir -p "$demo/app"
printf 'APP_ENV=production\nDB_HOST=127.0.0.1\nDB_PASSWORD=demo-secret-1\n' > "$demo/app/.env"
cat >> "$demo/coffer.toml" <<TOML

[[config_backup]]
paths = ["$PWD/$demo/app/.env"]
TOML
$coffer backup run config
sed -i 's/^DB_PASSWORD=.*/DB_PASSWORD=demo-secret-2/; s/^DB_HOST=.*/DB_HOST=db.internal/' "$demo/app/.env"
$coffer backup run config
echo "==> coffer config history and diff of $demo/app/.env"
$coffer config history "$PWD/$demo/app/.env"
$coffer config diff "$PWD/$demo/app/.env"

cat >> "$demo/coffer.toml" <<TOML

[drill]
files_sample = 20
[[drill.app_checks]]
name = "the invoice list loads"
command = "$PWD/scripts/demo/app-check.sh"
TOML
cat >> "$demo/coffer.toml" <<'TOML'
[[drill.sql_checks]]
name = "funded invoices exist"
query = "SELECT id FROM invoices WHERE status = 'funded'"
min_rows = 1

[[drill.sql_checks]]
name = "every payment has an invoice"
query = "SELECT COUNT(*) FROM payments p LEFT JOIN invoices i ON i.id = p.invoice_id WHERE i.id IS NULL"
expect = "0"
TOML
echo "==> coffer drill run (a second throwaway MariaDB: restore, replay, checklist, report)"
$coffer drill run
echo "==> coffer prune --dry-run: what [retention.*] keeps and why"
$coffer prune --dry-run
echo "==> coffer daemon for a few seconds: GET /up and GET /metrics"
daemon_port=$((20000 + RANDOM % 20000))
cat >> "$demo/coffer.toml" <<TOML

[schedule]
incremental = "*/5 * * * * *"

[daemon]
listen = "127.0.0.1:$daemon_port"
TOML
$coffer daemon 2> "$demo/daemon.log" &
daemon_pid=$!
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$daemon_port/up" > /dev/null 2>&1 && break
  sleep 0.2
done
sleep 6
curl -sS "http://127.0.0.1:$daemon_port/up"; echo
curl -sS "http://127.0.0.1:$daemon_port/metrics" | grep -E '^coffer_(job_(last_success|next_run)|backup_stored_bytes|recovery_point_age|pitr_window|drill_last_passed)' || true
kill -TERM "$daemon_pid"; wait "$daemon_pid"
echo "==> done: repository in $demo/repo, drill reports in $demo/repo/reports/drills (see docs/FORMAT.md to restore by hand)"

#!/usr/bin/env bash
# Binlog benchmark (run by `scripts/bench.sh binlog`):
#  1. recovery point under load: `coffer binlog stream` runs while a writer fills about
#     BENCH_BINLOG_MIB of binlog (ROW format, invoice-shaped audit rows, 500-row transactions);
#     `coffer status` samples the recovery point age every 2 s;
#  2. point-in-time restore: `coffer restore db --at-gtid LAST` (digest checks, the dump, then
#     replaying the archived binlogs) against the same by hand: `zstd -d < dump | mariadb` then
#     `mariadb-binlog --start-position=P FILES | mariadb`, into the same empty server.
# Writes the section between the binlog-bench markers of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

target_mib=${BENCH_BINLOG_MIB:-200}
interval=${BENCH_SHIP_INTERVAL:-10}
echo "==> building (release)"
# One build for both binaries: features unified once, dependencies compiled once.
cargo build --release --locked --quiet --workspace --bins

. scripts/lib/sandbox.sh
work=$(mktemp -d /tmp/coffer-bench-binlog.XXXXXX)
stream_pid=""
trap '[ -n "$stream_pid" ] && kill "$stream_pid" 2>/dev/null; exec 3>&- 4>&- 2>/dev/null || true; rm -rf "$work"' EXIT
now() { date +%s.%N; }
coffer() { target/release/coffer --config "$work/coffer.toml" "$@"; }

echo "==> source: the invoice platform at scale 2000"
SANDBOX_BIN=target/release/coffer-sandbox start_invoice_sandbox "$work" 2000
write_coffer_config "$work" "$SANDBOX_PORT"
(umask 077; printf '[client]\nprotocol=TCP\nhost=127.0.0.1\nport=%s\nuser=coffer\npassword="%s"\n' "$SANDBOX_PORT" "$(cat "$work/secrets/db-password")" > "$work/source.cnf")
root_sql() { mariadb --no-defaults --socket="$(sed -n 's/^socket=//p' "$work/sandbox.ready")" -uroot -N -e "$1"; }
root_sql "SET GLOBAL binlog_format = 'ROW'"
coffer backup run full --json > /dev/null
start_pos=$(jq -r '.binlog.position' "$(ls "$work"/repo/manifests/*full*.json)")
start_file=$(jq -r '.binlog.file' "$(ls "$work"/repo/manifests/*full*.json)")

echo "==> writing about $target_mib MiB of binlog with the stream running (ship interval ${interval}s)"
target/release/coffer --config "$work/coffer.toml" binlog stream --interval "$interval" 2> "$work/stream.log" &
stream_pid=$!
binlog_bytes() { root_sql "SHOW BINARY LOGS" | awk '{s+=$2} END {print s+0}'; }
base_bytes=$(binlog_bytes)
writer() {
  # Each transaction inserts 500 audit rows (~400 bytes each in ROW format) and updates 50
  # invoices; the sequence engine makes the rows.
  while true; do
    root_sql "INSERT INTO app.audit_events (user_id, action, subject_type, subject_id, payload, ip, created_at)
      SELECT 1 + seq % 2000, 'invoice.updated', 'invoice', seq, JSON_OBJECT('amount', seq * 3, 'note', REPEAT('x', 200)), INET6_ATON('10.0.0.1'), NOW(6)
      FROM app.seq_1_to_500;
      UPDATE app.invoices SET amount = amount + 0.01 ORDER BY RAND() LIMIT 50;" || return
  done
}
writer &
writer_pid=$!
samples="$work/ages"
: > "$samples"
write_start=$(now)
while [ $(( $(binlog_bytes) - base_bytes )) -lt $(( target_mib * 1048576 )) ]; do
  sleep 2
  coffer status --json 2>/dev/null | jq -r '.recovery_point.age_seconds // empty' >> "$samples" || true
done
kill "$writer_pid"; wait "$writer_pid" 2>/dev/null || true
write_seconds=$(echo "$(now) - $write_start" | bc -l)
written_mib=$(echo "scale=1; ($(binlog_bytes) - $base_bytes) / 1048576" | bc -l)
catch_start=$(now)
until [ "$(coffer status --json 2>/dev/null | jq -r '.recovery_point.fully_archived')" = true ]; do sleep 0.5; done
catch_up=$(echo "$(now) - $catch_start" | bc -l)
kill -TERM "$stream_pid"; wait "$stream_pid" || true; stream_pid=""
coffer backup run incremental --json > /dev/null
last_gtid=$(root_sql "SELECT @@gtid_binlog_pos")
age_max=$(sort -n "$samples" | tail -1)
age_median=$(sort -n "$samples" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "    $written_mib MiB in ${write_seconds}s; recovery point age median ${age_median}s, max ${age_max}s over $(wc -l < "$samples") samples; caught up ${catch_up}s after the writes stopped"

echo "==> point-in-time restore: by hand against coffer"
tdir="$work/target"
SANDBOX_BIN=target/release/coffer-sandbox start_target_sandbox "$tdir"
(umask 077; printf '[client]\nprotocol=TCP\nhost=127.0.0.1\nport=%s\nuser=coffer\npassword="%s"\n' "$TARGET_PORT" "$(cat "$tdir/secrets/db-password")" > "$tdir/client.cnf")
# The by-hand side reads the same archived files, decoded beforehand (not timed).
mkdir -p "$work/plain"
for m in "$work"/repo/manifests/*binlog*.json; do
  file=$(jq -r '.binlog_file.file' "$m"); key=$(jq -r '.artifacts[0].key' "$m")
  zstd -dc -q "$work/repo/$key" > "$work/plain/$file"
done
dump_key=$(jq -r '.artifacts[0].key' "$(ls "$work"/repo/manifests/*full*.json)")
files=$(ls "$work/plain" | sort | awk -v first="$start_file" '$0 >= first' | sed "s|^|$work/plain/|" | tr '\n' ' ')
replay_mib=$(du -cm $files | tail -1 | cut -f1)
by_hand() {
  zstd -dc -q "$work/repo/$dump_key" | mariadb --defaults-file="$tdir/client.cnf"
  # shellcheck disable=SC2086
  mariadb-binlog --start-position="$start_pos" $files | mariadb --defaults-file="$tdir/client.cnf" --binary-mode
}
t0=$(now); by_hand; hand_seconds=$(echo "$(now) - $t0" | bc -l)
hand_rows=$(mariadb --defaults-file="$tdir/client.cnf" -N -e "SELECT COUNT(*) FROM app.audit_events")
mariadb --defaults-file="$tdir/client.cnf" -e 'DROP DATABASE app'
export COFFER_TARGET_USER=coffer
COFFER_TARGET_PASSWORD=$(cat "$tdir/secrets/db-password"); export COFFER_TARGET_PASSWORD
t0=$(now); coffer restore db --at-gtid "$last_gtid" --target "127.0.0.1:$TARGET_PORT" > /dev/null
coffer_seconds=$(echo "$(now) - $t0" | bc -l)
coffer_rows=$(mariadb --defaults-file="$tdir/client.cnf" -N -e "SELECT COUNT(*) FROM app.audit_events")
source_rows=$(root_sql "SELECT COUNT(*) FROM app.audit_events")
[ "$coffer_rows" = "$source_rows" ] && [ "$hand_rows" = "$source_rows" ] || { echo "row counts differ: source $source_rows, by hand $hand_rows, coffer $coffer_rows" >&2; exit 1; }
ratio=$(echo "scale=3; $coffer_seconds / $hand_seconds" | bc -l)
echo "    by hand ${hand_seconds}s, coffer ${coffer_seconds}s (ratio $ratio), $replay_mib MiB of binlog"

section="$work/section.md"
cat > "$section" <<EOF
<!-- binlog-bench:start -->
## Binlog archiving and point-in-time restore

Made by \`scripts/bench.sh binlog\` (release build, one round). A source with binlog_format ROW
takes about ${target_mib} MiB of writes (transactions of 500 audit rows plus 50 invoice updates)
while \`coffer binlog stream --interval ${interval}\` runs; \`coffer status\` samples the recovery point
age every 2 s.

| binlog written | write time | recovery point age (median / max) | samples | caught up after the writes stopped |
|---|---|---|---|---|
| ${written_mib} MiB | $(printf %.0f "$write_seconds") s | ${age_median} s / ${age_max} s | $(wc -l < "$samples") | $(printf %.1f "$catch_up") s |

Then a point-in-time restore to the last GTID into an empty server: by hand
(\`zstd -d < dump | mariadb\`, then \`mariadb-binlog --start-position=P FILES | mariadb\` on files
decoded beforehand) against \`coffer restore db --at-gtid\` (which also fetches and checks every
digest first, and decodes the binlogs from the repository). Both end with the source's row count
(${source_rows} audit rows).

| binlogs replayed | by hand | coffer | ratio |
|---|---|---|---|
| ${replay_mib} MiB | $(printf %.1f "$hand_seconds") s | $(printf %.1f "$coffer_seconds") s | **${ratio}** |

Run on $(date -u +%Y-%m-%d) with \`BENCH_BINLOG_MIB=${target_mib} BENCH_SHIP_INTERVAL=${interval} scripts/bench.sh binlog\`.
<!-- binlog-bench:end -->
EOF
python3 - "$section" <<'PY'
import re, sys
section = open(sys.argv[1]).read().rstrip("\n")
text = open("docs/BENCHMARKS.md").read()
pattern = re.compile(r"<!-- binlog-bench:start -->.*?<!-- binlog-bench:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open("docs/BENCHMARKS.md", "w").write(text)
PY
echo "==> wrote the binlog section of docs/BENCHMARKS.md"
cat "$section"

#!/usr/bin/env bash
# Binlog index benchmark (run by `scripts/bench.sh index`): coffer's peak RSS while it indexes and
# replays one large binlog of many small transactions.
#  1. a throwaway MariaDB (ROW format, innodb_flush_log_at_trx_commit=0, sync_binlog=0) gets
#     BENCH_INDEX_TX autocommit transactions of one BENCH_INDEX_ROW_BYTES row each from
#     BENCH_INDEX_SESSIONS sessions running a stored procedure: about 1 GiB of binlog in one file
#     (max_binlog_size 1 GiB) with the defaults;
#  2. `coffer backup run incremental` archives it (rotates, fetches, stores the file and its
#     transaction index): time and coffer's own peak RSS (VmHWM);
#  3. `coffer restore db --at-gtid LAST` into an empty server (digests, the dump, the plan read
#     from the index, the foreign-database scan, the replay): time and peak RSS.
# Writes the section between the index-bench markers of docs/BENCHMARKS.md, unless
# BENCH_INDEX_BIN names another coffer binary (an older build, measured as it is, with the
# sandbox binary BENCH_INDEX_SANDBOX: nothing is built and the figures are only printed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

transactions=${BENCH_INDEX_TX:-1000000}
row_bytes=${BENCH_INDEX_ROW_BYTES:-800}
sessions=${BENCH_INDEX_SESSIONS:-2}
bin=${BENCH_INDEX_BIN:-target/release/coffer}
sandbox_bin=${BENCH_INDEX_SANDBOX:-target/release/coffer-sandbox}
if [ -z "${BENCH_INDEX_BIN:-}" ]; then
  echo "==> building (release)"
  # One build for both binaries: features unified once, dependencies compiled once.
  cargo build --release --locked --quiet --workspace --bins
fi

. scripts/lib/sandbox.sh
work=$(mktemp -d /tmp/coffer-bench-index.XXXXXX)
trap 'exec 3>&- 4>&- 2>/dev/null || true; rm -rf "$work"' EXIT
. scripts/lib/measure.sh
coffer() { "$bin" --config "$work/coffer.toml" "$@"; }
mib() { echo "scale=1; $1 / 1024" | bc -l; }

echo "==> source: a throwaway MariaDB"
SANDBOX_BIN=$sandbox_bin start_invoice_sandbox "$work" 1
write_coffer_config "$work" "$SANDBOX_PORT"
root_sql() { mariadb --no-defaults --socket="$(sed -n 's/^socket=//p' "$work/sandbox.ready")" -uroot -N "$@"; }
root_sql -e "SET GLOBAL binlog_format = 'ROW'; SET GLOBAL innodb_flush_log_at_trx_commit = 0;
  SET GLOBAL sync_binlog = 0; SET GLOBAL max_binlog_size = 1073741824;
  CREATE TABLE app.bench_rows (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    session INT NOT NULL, payload VARBINARY(4096) NOT NULL) ENGINE=InnoDB"
root_sql <<'SQL'
DELIMITER //
CREATE PROCEDURE app.bench_fill(IN s INT, IN n INT, IN width INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  WHILE i < n DO
    INSERT INTO app.bench_rows (session, payload) VALUES (s, REPEAT(CHAR(65 + (i % 26)), width));
    SET i = i + 1;
  END WHILE;
END //
DELIMITER ;
SQL
coffer backup run full --json > /dev/null
coffer backup run incremental --json > /dev/null

echo "==> writing $transactions transactions of one ${row_bytes}-byte row ($sessions sessions)"
gen_start=$(now)
per=$((transactions / sessions))
pids=()
for s in $(seq 1 "$sessions"); do
  n=$per
  [ "$s" = "$sessions" ] && n=$((transactions - per * (sessions - 1)))
  root_sql -e "SET SESSION binlog_format = 'ROW'; CALL app.bench_fill($s, $n, $row_bytes)" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
gen_seconds=$(echo "$(now) - $gen_start" | bc -l)
last_gtid=$(root_sql -e "SELECT @@gtid_binlog_pos")
read -r big_file big_bytes < <(root_sql -e "SHOW BINARY LOGS" | sort -k2 -n | tail -1 | awk '{print $1, $2}')
echo "    $(printf %.0f "$gen_seconds") s; largest binlog $big_file: $(echo "scale=2; $big_bytes / 1073741824" | bc -l) GiB; last GTID $last_gtid"

echo "==> archiving: coffer backup run incremental"
read -r archive_seconds archive_rss < <(measure "$bin" --config "$work/coffer.toml" backup run incremental --json)
manifest=$(grep -l "\"file\": \"$big_file\"" "$work"/repo/manifests/*binlog*.json | head -1)
indexed=$(jq -r '.binlog_file.transactions' "$manifest")
index_key=$(jq -r '.artifacts[1].key' "$manifest")
index_bytes=$(zstd -dc -q "$work/repo/$index_key" | wc -c)
echo "    ${archive_seconds}s, peak RSS ${archive_rss} KiB; $big_file indexed with $indexed transactions (index $(echo "scale=1; $index_bytes / 1048576" | bc -l) MiB)"

echo "==> point-in-time restore: coffer restore db --at-gtid $last_gtid"
tdir="$work/target"
SANDBOX_BIN=$sandbox_bin start_target_sandbox "$tdir"
mariadb --no-defaults --socket="$(sed -n 's/^socket=//p' "$tdir/sandbox.ready")" -uroot -e \
  "SET GLOBAL innodb_flush_log_at_trx_commit = 0; SET GLOBAL sync_binlog = 0"
export COFFER_TARGET_USER=coffer
COFFER_TARGET_PASSWORD=$(cat "$tdir/secrets/db-password"); export COFFER_TARGET_PASSWORD
read -r restore_seconds restore_rss < <(measure "$bin" --config "$work/coffer.toml" restore db --at-gtid "$last_gtid" --target "127.0.0.1:$TARGET_PORT")
(umask 077; printf '[client]\nprotocol=TCP\nhost=127.0.0.1\nport=%s\nuser=coffer\npassword="%s"\n' "$TARGET_PORT" "$COFFER_TARGET_PASSWORD" > "$tdir/client.cnf")
restored=$(mariadb --defaults-file="$tdir/client.cnf" -N -e "SELECT COUNT(*) FROM app.bench_rows")
[ "$restored" = "$transactions" ] || { echo "restored $restored rows, expected $transactions" >&2; exit 1; }
echo "    ${restore_seconds}s, peak RSS ${restore_rss} KiB; $restored rows restored"

if [ -n "${BENCH_INDEX_BIN:-}" ]; then
  echo "==> $bin measured; docs/BENCHMARKS.md left as it is"
  exit 0
fi
section="$work/section.md"
cat > "$section" <<EOF
<!-- index-bench:start -->
## Indexing and replaying a binlog of many small transactions

Made by \`scripts/bench.sh index\` (release build, one round). A source (binlog_format ROW,
\`innodb_flush_log_at_trx_commit=0\`, \`sync_binlog=0\`) commits ${transactions} autocommit transactions
of one ${row_bytes}-byte row each (a stored procedure in ${sessions} sessions), about one binlog file. Then
\`coffer backup run incremental\` archives it (rotation, fetch, the file and its transaction index
stored), and \`coffer restore db --at-gtid LAST\` restores the full backup and replays that file into an
empty server. Peak RSS is coffer's own process (\`VmHWM\`), not \`mariadb-binlog\`'s or \`mariadb\`'s.
Target: peak RSS < 64 MiB.

| binlog | transactions | index (plain JSON) | write time | archive: time / peak RSS | restore: time / peak RSS |
|---|---|---|---|---|---|
| $(echo "scale=2; $big_bytes / 1073741824" | bc -l) GiB | ${indexed} | $(echo "scale=1; $index_bytes / 1048576" | bc -l) MiB | $(printf %.0f "$gen_seconds") s | $(printf %.1f "$archive_seconds") s / **$(mib "$archive_rss") MiB** | $(printf %.1f "$restore_seconds") s / **$(mib "$restore_rss") MiB** |

Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(mariadb --version | sed 's/,.*//').
Run on $(date -u +%Y-%m-%d) with \`BENCH_INDEX_TX=${transactions} BENCH_INDEX_ROW_BYTES=${row_bytes} BENCH_INDEX_SESSIONS=${sessions} scripts/bench.sh index\`.
<!-- index-bench:end -->
EOF
python3 - "$section" <<'PY'
import re, sys
section = open(sys.argv[1]).read().rstrip("\n")
text = open("docs/BENCHMARKS.md").read()
pattern = re.compile(r"<!-- index-bench:start -->.*?<!-- index-bench:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open("docs/BENCHMARKS.md", "w").write(text)
PY
echo "==> wrote the index section of docs/BENCHMARKS.md"
cat "$section"

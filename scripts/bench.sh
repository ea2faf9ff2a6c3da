#!/usr/bin/env bash
# Full-backup benchmark: `coffer backup run full` against `mariadb-dump … | zstd -3 > file` on the
# same database in the same run, at two sizes (the larger 4x the smaller) to show that coffer's
# memory does not grow with the database. Writes docs/BENCHMARKS.md.
#
#   scripts/bench.sh                      # ~256 MiB and ~1 GiB dumps
#   BENCH_SCALES="186000 744000" scripts/bench.sh   # ~1 GiB and ~4 GiB
#   BENCH_ROUNDS=3 scripts/bench.sh       # rounds per side (best is reported)
#   scripts/bench.sh binlog               # binlog stream and point-in-time restore (bench-binlog.sh)
#   scripts/bench.sh catalog              # backup list and status over 20,000/100,000 manifests on s3s-fs (bench-catalog.sh)
#   scripts/bench.sh files                # file snapshots against restic on ~2 GiB and ~8 GiB trees (bench-files.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = binlog ]; then exec scripts/bench-binlog.sh; fi
if [ "${1:-}" = index ]; then exec scripts/bench-index.sh; fi
if [ "${1:-}" = catalog ]; then exec scripts/bench-catalog.sh; fi
if [ "${1:-}" = files ]; then exec scripts/bench-files.sh; fi
scripts/install-deps.sh

scales=${BENCH_SCALES:-"46500 186000"}
rounds=${BENCH_ROUNDS:-3}
echo "==> building (release)"
# One build for both binaries: features unified once, dependencies compiled once.
cargo build --release --locked --quiet --workspace --bins

. scripts/lib/sandbox.sh
work=$(mktemp -d /tmp/coffer-bench.XXXXXX)
trap 'exec 3>&- 2>/dev/null || true; rm -rf "$work"' EXIT
results="$work/results.md"
: > "$results"

. scripts/lib/measure.sh

for scale in $scales; do
  dir="$work/scale-$scale"
  mkdir -p "$dir"
  echo "==> scale $scale: loading the invoice platform (this takes a while)"
  load_start=$(now)
  SANDBOX_BIN=target/release/coffer-sandbox start_invoice_sandbox "$dir" "$scale"
  load_seconds=$(echo "$(now) - $load_start" | bc -l)
  port=$SANDBOX_PORT
  write_coffer_config "$dir" "$port"
  (umask 077; printf '[client]\nprotocol=TCP\nhost=127.0.0.1\nport=%s\nuser=coffer\npassword="%s"\n' "$port" "$(cat "$dir/secrets/db-password")" > "$dir/client.cnf")
  baseline() {
    mariadb-dump --defaults-file="$dir/client.cnf" --single-transaction --routines --triggers --events \
      --hex-blob --order-by-primary --quick --default-character-set=utf8mb4 --master-data=2 --gtid \
      --databases app | zstd -3 -q -f -o "$dir/baseline.sql.zst"
  }
  best_base=""; best_coffer=""; coffer_rss=0
  for round in $(seq 1 "$rounds"); do
    read -r t _ < <(measure bash -c "$(declare -f baseline); dir='$dir'; baseline")
    base_t=$t
    if [ -z "$best_base" ] || [ "$(echo "$t < $best_base" | bc -l)" = 1 ]; then best_base=$t; fi
    rm -rf "$dir/repo"
    read -r t rss < <(measure target/release/coffer --config "$dir/coffer.toml" backup run full --json)
    if [ -z "$best_coffer" ] || [ "$(echo "$t < $best_coffer" | bc -l)" = 1 ]; then best_coffer=$t; fi
    if [ "$rss" -gt "$coffer_rss" ]; then coffer_rss=$rss; fi
    echo "    round $round: baseline ${base_t}s, coffer ${t}s, coffer peak RSS ${rss} KiB"
  done
  dump_bytes=$(zstd -dc "$dir/baseline.sql.zst" | wc -c)
  base_stored=$(stat -c %s "$dir/baseline.sql.zst")
  coffer_stored=$(find "$dir/repo/data" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
  mib() { echo "scale=1; $1 / 1048576" | bc -l; }
  ratio=$(echo "scale=3; $best_coffer / $best_base" | bc -l)
  base_tp=$(echo "scale=1; $dump_bytes / 1048576 / $best_base" | bc -l)
  coffer_tp=$(echo "scale=1; $dump_bytes / 1048576 / $best_coffer" | bc -l)
  printf '| %s | %s MiB | %.1f s | %.2f s (%s MiB/s) | %.2f s (%s MiB/s) | **%s** | %s MiB / %s MiB | %s MiB |\n' \
    "$scale" "$(mib "$dump_bytes")" "$load_seconds" "$best_base" "$base_tp" "$best_coffer" "$coffer_tp" "$ratio" \
    "$(mib "$base_stored")" "$(mib "$coffer_stored")" "$(echo "scale=1; $coffer_rss / 1024" | bc -l)" >> "$results"

  # Restore into an empty server: `zstd -d | mariadb` against `coffer restore db` (which also
  # verifies every digest first). One round each: a load takes a while.
  tdir="$dir/target"
  SANDBOX_BIN=target/release/coffer-sandbox start_target_sandbox "$tdir"
  (umask 077; printf '[client]\nprotocol=TCP\nhost=127.0.0.1\nport=%s\nuser=coffer\npassword="%s"\n' "$TARGET_PORT" "$(cat "$tdir/secrets/db-password")" > "$tdir/client.cnf")
  read -r restore_base _ < <(measure bash -c "zstd -dc '$dir/baseline.sql.zst' | mariadb --defaults-file='$tdir/client.cnf'")
  mariadb --defaults-file="$tdir/client.cnf" -e 'DROP DATABASE app'
  export COFFER_TARGET_USER=coffer
  COFFER_TARGET_PASSWORD=$(cat "$tdir/secrets/db-password")
  export COFFER_TARGET_PASSWORD
  read -r restore_coffer restore_rss < <(measure target/release/coffer --config "$dir/coffer.toml" restore db --latest --target "127.0.0.1:$TARGET_PORT")
  unset COFFER_TARGET_USER COFFER_TARGET_PASSWORD
  echo "    restore: baseline ${restore_base}s, coffer ${restore_coffer}s, coffer peak RSS ${restore_rss} KiB"
  printf '| %s | %s MiB | %.1f s | %.1f s | **%s** | %s MiB |\n' "$scale" "$(mib "$dump_bytes")" "$restore_base" "$restore_coffer" \
    "$(echo "scale=3; $restore_coffer / $restore_base" | bc -l)" "$(echo "scale=1; $restore_rss / 1024" | bc -l)" >> "$work/restore.md"
  stop_target_sandbox
  stop_sandbox
  sleep 2
done

{
  echo '<!-- full-bench:start -->'
  cat <<'HEAD'
Made by `scripts/bench.sh` (release build); each figure is the best of the rounds it ran. Both
sides dump the same database with the same `mariadb-dump` options (`--single-transaction
--master-data=2 --gtid --routines --triggers --events --hex-blob --order-by-primary --quick`),
compress with zstd level 3 and write to local disk. coffer additionally scans the stream for the
expectations (row counts and per-table SHA-256), hashes the stored bytes and writes a manifest.
Peak RSS is coffer's own process (`VmHWM`), not the dump tool's.

Targets: time ratio coffer / baseline ≤ 1.05; coffer peak RSS < 100 MiB, and no higher for a
4x larger database.

## Full backup: coffer against `mariadb-dump | zstd -3 > file`

| scale | dump size | load time | baseline | coffer | ratio | stored (baseline / coffer) | coffer peak RSS |
|---|---|---|---|---|---|---|---|
HEAD
  cat "$results"
  cat <<'MIDDLE'

## Full restore: coffer against `zstd -d < dump | mariadb`

Into an empty throwaway server that writes a binary log, one round each. coffer first re-reads
the stored artifact to check its SHA-256 (the target is touched only after that), then streams it
through the verified reader into the same `mariadb` client. Target ratio ≤ 1.10.

| scale | dump size | baseline | coffer | ratio | coffer peak RSS |
|---|---|---|---|---|---|
MIDDLE
  cat "$work/restore.md"
  cat <<TAIL

Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(mariadb-dump --version | sed 's/,.*//'), zstd $(zstd --version | sed 's/.*v//; s/,.*//').
Run on $(date -u +%Y-%m-%d) with \`BENCH_SCALES="$scales" BENCH_ROUNDS=$rounds scripts/bench.sh\`.
TAIL
  echo '<!-- full-bench:end -->'
} > "$work/section.md"
# Only the generated section is replaced: notes and other benchmarks' sections stay.
python3 - "$work/section.md" <<'PY'
import re, sys
section = open(sys.argv[1]).read().rstrip("\n")
text = open("docs/BENCHMARKS.md").read()
pattern = re.compile(r"<!-- full-bench:start -->.*?<!-- full-bench:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else "# Benchmarks\n\n" + section + "\n"
open("docs/BENCHMARKS.md", "w").write(text)
PY
echo "==> wrote the full-backup section of docs/BENCHMARKS.md"
cat "$work/section.md"

#!/usr/bin/env bash
# Catalog benchmark (run by `scripts/bench.sh catalog`): `coffer backup list` and `coffer status`
# over repositories of many manifests on a private s3s-fs, cold (empty state_dir: every manifest
# is read from storage) and warm (the manifest cache under state_dir/cache is filled).
#  1. s3s-fs on a free loopback port, its data in a scratch folder;
#  2. for each count in BENCH_CATALOG_COUNTS, a repository written straight into s3s-fs's data
#     folder (it keeps objects as plain files): the marker and synthetic but valid manifests, one
#     full backup (three tables, coordinates) per BENCH_CATALOG_FULL_EVERY manifests and binlog
#     backups of a chain of files in between, unsigned;
#  3. each command BENCH_CATALOG_ROUNDS times cold and warm, on s3s-fs and on the same objects
#     read as a folder repository (BENCH_CATALOG_STORAGES): time and coffer's own peak RSS
#     (VmHWM). `coffer status` has no source database here: it prints the repository part (which
#     lists the manifests once; with a source it lists them twice) and exits 3 for the unreachable
#     source; that exit is expected.
# Writes the section between the catalog-bench markers of docs/BENCHMARKS.md, unless
# BENCH_CATALOG_BIN names another coffer binary (measured as it is; figures only printed).
set -euo pipefail
cd "$(dirname "$0")/.."

counts=${BENCH_CATALOG_COUNTS:-"20000 100000"}
rounds=${BENCH_CATALOG_ROUNDS:-2}
full_every=${BENCH_CATALOG_FULL_EVERY:-100}
storages=${BENCH_CATALOG_STORAGES:-"s3s-fs folder"}
bin=${BENCH_CATALOG_BIN:-target/release/coffer}
s3s=${S3S_FS:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
[ -x "$s3s" ] || { echo "s3s-fs is missing: scripts/install-deps.sh --s3" >&2; exit 1; }
if [ -z "${BENCH_CATALOG_BIN:-}" ]; then
  echo "==> building (release)"
  cargo build --release --locked --quiet --bin coffer
fi

work=$(mktemp -d /tmp/coffer-bench-catalog.XXXXXX)
trap 'exec 3>&- 2>/dev/null || true; rm -rf "$work"' EXIT
. scripts/lib/measure.sh
mib() { echo "scale=1; $1 / 1024" | bc -l; }
# measure, for a command whose non-zero exit is expected (status without a source).
measure_any() { (set +e; measure "$@"); }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/s3" "$work/secrets"
printf 'COFFERBENCHKEY' > "$work/secrets/s3-key-id"
printf 'coffer-bench-secret-key' > "$work/secrets/s3-secret"
chmod 600 "$work"/secrets/*
# The guardian: s3s-fs stops when fd 3 closes, i.e. when this script goes away.
exec 3> >(sh -c '"$@" & pid=$!; read _ignored; kill "$pid" 2>/dev/null; wait "$pid"' sh \
  "$s3s" --host 127.0.0.1 --port "$port" --access-key COFFERBENCHKEY \
  --secret-key coffer-bench-secret-key "$work/s3" > "$work/s3s.log" 2>&1)
for _ in $(seq 1 100); do
  if (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done

# generate DIR COUNT: the marker and COUNT manifests under DIR (a bucket folder of s3s-fs).
generate() {
  python3 - "$1" "$2" "$full_every" <<'PY'
import json, os, sys, hashlib, datetime
root, count, full_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{root}/manifests", exist_ok=True)
with open(f"{root}/coffer-repository.json", "w") as f:
    json.dump({"format_version": 1, "created_at": "2026-01-01T00:00:00Z",
               "created_by": "coffer 0.1.0"}, f, indent=2)
start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
source = {"host": "db.internal", "port": 3306, "server_version": "10.11.19-MariaDB-log",
          "server_id": 1, "dump_tool": "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB"}
def hexd(*parts):
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
# The artifacts' keys and stored sizes, beside the bucket: materialize() writes them.
artifacts = open(f"{root}.artifacts", "w")
for i in range(count):
    t = start + datetime.timedelta(minutes=10 * i)
    kind = "full" if i % full_every == 0 else "binlog"
    bid = f"{t.strftime('%Y%m%dT%H%M%SZ')}-{kind}-{i % 65536:04x}"
    n = i + 1
    m = {"format_version": 1, "id": bid, "kind": kind, "started_at": stamp(t),
         "finished_at": stamp(t + datetime.timedelta(seconds=3)), "duration_seconds": 3.0,
         "coffer_version": "0.1.0", "source": source}
    if kind == "full":
        m["binlog"] = {"file": f"mysql-bin.{n:06d}", "position": 4, "gtid_position": f"0-1-{n * 100}"}
        m["databases"] = ["app"]
        m["artifacts"] = [{"name": "dump.sql", "key": f"data/{bid}/dump.sql.zst", "compression": "zstd",
                           "encrypted": False, "size": 11484290, "stored_size": 1653957,
                           "sha256": hexd(bid, "dump")}]
        m["expectations"] = {"databases": [{"name": "app", "tables": [
            {"name": name, "rows": rows, "sha256": hexd(bid, name)}
            for name, rows in (("companies", 2000), ("invoices", 20000), ("payments", 18000))],
            "views": ["funded_invoices"], "routines": ["net_amount"], "triggers": ["invoices_audit"],
            "events": []}]}
    else:
        file = f"mysql-bin.{n:06d}"
        m["databases"] = []
        m["artifacts"] = [
            {"name": file, "key": f"data/{bid}/{file}.zst", "compression": "zstd", "encrypted": False,
             "size": 1048576, "stored_size": 262144, "sha256": hexd(bid, "binlog")},
            {"name": "index.json", "key": f"data/{bid}/{file}.index.json.zst", "compression": "zstd",
             "encrypted": False, "size": 8192, "stored_size": 2048, "sha256": hexd(bid, "index")}]
        m["expectations"] = {"databases": []}
        epoch = int(t.timestamp())
        m["binlog_file"] = {"file": file, "server_id": 1, "first_event_time": epoch - 600,
                            "last_event_time": epoch, "last_commit_time": epoch, "end_position": 1048576,
                            "transactions": 100, "first_gtid": f"0-1-{i * 100 + 1}",
                            "last_gtid": f"0-1-{n * 100}", "next_file": f"mysql-bin.{n + 1:06d}"}
    with open(f"{root}/manifests/{bid}.json", "w") as f:
        f.write(json.dumps(m, indent=2) + "\n")
    for a in m["artifacts"]:
        artifacts.write(f"{a['key']}\t{a['stored_size']}\n")
PY
}

# materialize DIR: every artifact the manifests name, as a sparse file of its stored size (what
# a listing of data/ reports), so `coffer status` finds the archive whole.
materialize() {
  python3 - "$1" <<'PY'
import os, sys
root = sys.argv[1]
with open(f"{root}.artifacts") as listing:
    for line in listing:
        key, size = line.rstrip("\n").split("\t")
        path = f"{root}/{key}"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(int(size))
PY
}

results="$work/results.md"
: > "$results"
for count in $counts; do
  bucket="bench-$count"
  echo "==> $count manifests: writing them into s3s-fs's folder"
  generate "$work/s3/$bucket/repo" "$count"
  dir="$work/run-$count"
  mkdir -p "$dir"
  ln -sfn "$work/secrets" "$dir/secrets"
  cat > "$dir/s3s-fs.toml" <<TOML
timezone = "UTC"
state_dir = "state-s3s-fs"

[repository]
url = "s3://$bucket/repo"
endpoint = "http://127.0.0.1:$port"
region = "us-east-1"
path_style = true
checksum_mode = "when_required"
access_key_id_file = "secrets/s3-key-id"
secret_access_key_file = "secrets/s3-secret"

[source]
host = "127.0.0.1"
port = 1
user = "coffer"
TOML
  # The same objects read as a folder repository: what coffer itself costs, without s3s-fs.
  cat > "$dir/folder.toml" <<TOML
timezone = "UTC"
state_dir = "state-folder"

[repository]
url = "$work/s3/$bucket/repo"

[source]
host = "127.0.0.1"
port = 1
user = "coffer"
TOML
  for storage in $storages; do
    config="$dir/$storage.toml"
    # The folder rows see the artifacts too (a real repository's data/ listing, held by status);
    # s3s-fs lists in quadratic time, so its rows run before they exist and find every file
    # damaged.
    if [ "$storage" = folder ]; then materialize "$work/s3/$bucket/repo"; fi
    for command in "backup list --json" "status --json"; do
      best_cold=""; best_warm=""; rss_cold=0; rss_warm=0
      for round in $(seq 1 "$rounds"); do
        rm -rf "$dir/state-$storage/cache"
        # shellcheck disable=SC2086
        read -r t rss < <(measure_any "$bin" --config "$config" $command 2>/dev/null)
        if [ -z "$best_cold" ] || [ "$(echo "$t < $best_cold" | bc -l)" = 1 ]; then best_cold=$t; fi
        if [ "$rss" -gt "$rss_cold" ]; then rss_cold=$rss; fi
        if [ "$command" = "backup list --json" ]; then
          listed=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$work/last-stdout")
          [ "$listed" = "$count" ] || { echo "$storage: listed $listed manifests, not $count" >&2; exit 1; }
        fi
        # shellcheck disable=SC2086
        read -r w wrss < <(measure_any "$bin" --config "$config" $command 2>/dev/null)
        if [ -z "$best_warm" ] || [ "$(echo "$w < $best_warm" | bc -l)" = 1 ]; then best_warm=$w; fi
        if [ "$wrss" -gt "$rss_warm" ]; then rss_warm=$wrss; fi
        echo "    $storage, $command, round $round: cold ${t}s (${rss} KiB), warm ${w}s (${wrss} KiB)"
      done
      printf '| %s | %s | `coffer %s` | %.2f s | %s MiB | %.2f s | %s MiB |\n' "$count" "$storage" "$command" \
        "$best_cold" "$(mib "$rss_cold")" "$best_warm" "$(mib "$rss_warm")" >> "$results"
    done
  done
  rm -rf "$work/s3/$bucket" "$dir"
done

cat "$results"
if [ -n "${BENCH_CATALOG_BIN:-}" ]; then exit 0; fi
{
  echo '<!-- catalog-bench:start -->'
  cat <<HEAD
## Listing many manifests on S3: the manifest cache

Made by \`scripts/bench.sh catalog\` (release build, best of $rounds rounds). A private s3s-fs over
loopback holds repositories of synthetic, valid, unsigned manifests (one full backup with three
tables per $full_every manifests, binlog backups of a chain of files between them), written
straight into its data folder. *Cold*: an empty \`state_dir\`, so every manifest is read from
storage (up to 32 at a time); *warm*: the manifest cache under \`state_dir/cache/\` holds them
all, so only the listing (a LIST per 1000 keys) goes to storage. \`coffer status\` has no source
database here: it prints the repository part (one listing of the manifests) and exits 3 for the
unreachable source. *folder* rows read the very same files as a folder repository: what coffer
itself costs, without s3s-fs; by then every artifact the manifests name exists too (a sparse file
of its stored size), so \`coffer status\` also lists and checks \`data/\` (about two objects per
backup) as in a real repository. The s3s-fs rows run before the artifacts exist (s3s-fs lists in
quadratic time), so their status finds every archived file damaged. Peak RSS is coffer's own
process (\`VmHWM\`).

Targets: cold ≤ 10 s at 20,000 manifests, warm ≤ 1 s at 100,000, peak RSS < 100 MiB.

| manifests | storage | command | cold | cold peak RSS | warm | warm peak RSS |
|---|---|---|---|---|---|---|
HEAD
  cat "$results"
  cat <<TAIL

Before (the issue's figures, same machine): every listing read each manifest with one GET after
another, about 21 ms each on s3s-fs: 428 s to list 20,001 manifests.

Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $("$s3s" --version 2>/dev/null | head -1 || echo s3s-fs).
Run on $(date -u +%Y-%m-%d) with \`BENCH_CATALOG_COUNTS="$counts" BENCH_CATALOG_ROUNDS=$rounds scripts/bench.sh catalog\`.
TAIL
  echo '<!-- catalog-bench:end -->'
} > "$work/section.md"
# Only the generated section is replaced (appended the first time): other sections stay.
python3 - "$work/section.md" <<'PY'
import re, sys
section = open(sys.argv[1]).read().rstrip("\n")
text = open("docs/BENCHMARKS.md").read()
pattern = re.compile(r"<!-- catalog-bench:start -->.*?<!-- catalog-bench:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open("docs/BENCHMARKS.md", "w").write(text)
PY
echo "==> wrote the catalog section of docs/BENCHMARKS.md"
cat "$work/section.md"

#!/usr/bin/env bash
# File-snapshot benchmark: coffer against restic (Debian's package) on one generated tree, in one
# run, alternating A B A B: first backup, second backup after 1 % of the files changed, restore of
# one folder, restore of everything, repository size after both backups, peak RSS. Then coffer
# alone on a 4x larger tree, to show that its memory does not grow with the files.
# Writes the files section of docs/BENCHMARKS.md.
#
#   scripts/bench.sh files                      # ~2 GiB, 3 rounds, then ~8 GiB once
#   BENCH_FILES_ROUNDS=1 BENCH_FILES_LARGE=0 scripts/bench.sh files   # quick: ~2 GiB, once
#   BENCH_FILES_SMALL=200 BENCH_FILES_BIG_MIB=2 COFFER_BIN=target/debug/coffer ...  # a dry run of
#     the script itself on a tiny tree (its figures mean nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
need=()
command -v restic >/dev/null 2>&1 || need+=(restic)
command -v age-keygen >/dev/null 2>&1 || need+=(age)
if [ "${#need[@]}" -gt 0 ]; then
  echo "==> installing ${need[*]} (Debian's packages)"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
export PATH="$HOME/.cargo/bin:$PATH"
rounds=${BENCH_FILES_ROUNDS:-3}
large=${BENCH_FILES_LARGE:-1}
small_files=${BENCH_FILES_SMALL:-20000}
big_mib=${BENCH_FILES_BIG_MIB:-200}
if [ -n "${COFFER_BIN:-}" ]; then
  coffer=$(realpath "$COFFER_BIN")
else
  echo "==> building (release)"
  cargo build --release --locked --quiet --workspace --bins
  coffer=$PWD/target/release/coffer
fi

work=$(mktemp -d "${BENCH_DIR:-/tmp}/coffer-bench-files.XXXXXX")
trap 'rm -rf "$work"' EXIT
. scripts/lib/measure.sh

# make_tree DIR SCALE: SCALE x (20,000 small files, text and PDF-like, in tenant folders, plus
# 4 large files of 200 MiB): about 2 GiB at scale 1. Contents are seeded, so every run makes
# the same tree.
make_tree() {
  python3 - "$1" "$2" "$small_files" "$big_mib" <<'PY'
import os, random, sys
root, scale, small, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(2026)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(5000)]
corpus = b" ".join(rng.choice(words) for _ in range(400_000)) + b"\n"  # ~2.6 MiB of text
for n in range(small * scale):
    tenant = f"tenant-{n % 40:02d}"
    if n % 3 == 0:
        folder = os.path.join(root, "documents", tenant, f"{(n // 40) % 25:02d}")
        name = f"invoice-{n:06d}.pdf"
        # A PDF is mostly compressed streams: random bytes between a text header and trailer.
        size = rng.randint(20_000, 180_000)
        body = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nstream\n" + rng.randbytes(size) + b"\nendstream\n%%EOF\n"
    else:
        folder = os.path.join(root, "notes", tenant)
        name = f"note-{n:06d}.txt"
        size = rng.randint(1_000, 40_000)
        start = rng.randrange(len(corpus) - size)
        body = corpus[start:start + size]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(body)
os.makedirs(os.path.join(root, "exports"), exist_ok=True)
for n in range(4 * scale):
    with open(os.path.join(root, "exports", f"export-{n:02d}.bin"), "wb") as f:
        for _ in range(big):
            f.write(rng.randbytes(1 << 20))
PY
}

# change_tree DIR: 1 % of the small files rewritten in the middle, 1 % more added.
change_tree() {
  python3 - "$1" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(7)
small = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if "exports" not in d)
chosen = rng.sample(small, len(small) // 100)
for path in chosen:
    data = bytearray(open(path, "rb").read())
    at = len(data) // 2
    data[at:at + 64] = rng.randbytes(64)
    open(path, "wb").write(bytes(data))
for n in range(len(small) // 100):
    folder = os.path.join(root, "documents", f"tenant-{n % 40:02d}", "new")
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, f"upload-{n:05d}.pdf"), "wb").write(b"%PDF-1.7\n" + rng.randbytes(rng.randint(20_000, 180_000)))
PY
}

tree_bytes() { du -sb --apparent-size "$1" | cut -f1; }
repo_bytes() { du -sb --apparent-size "$1" | cut -f1; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mib() { echo "scale=1; $1 / 1048576" | bc -l; }

# coffer_round DIR TREE: prints "first second folder all repo_bytes peak_rss_kib".
coffer_round() {
  local dir=$1 tree=$2 peak=0 t rss first second folder all
  rm -rf "$dir/repo" "$dir/state" "$dir/restore-folder" "$dir/restore-all"
  read -r first rss < <(measure "$coffer" --config "$dir/coffer.toml" backup run files --json)
  [ "$rss" -gt "$peak" ] && peak=$rss
  change_tree "$tree"
  read -r second rss < <(measure "$coffer" --config "$dir/coffer.toml" backup run files --json)
  [ "$rss" -gt "$peak" ] && peak=$rss
  read -r folder rss < <(measure "$coffer" --config "$dir/coffer.toml" restore files --latest \
    --path documents/tenant-03/ --to "$dir/restore-folder" --identity-file "$dir/age.key")
  [ "$rss" -gt "$peak" ] && peak=$rss
  read -r all rss < <(measure "$coffer" --config "$dir/coffer.toml" restore files --latest \
    --to "$dir/restore-all" --identity-file "$dir/age.key")
  [ "$rss" -gt "$peak" ] && peak=$rss
  diff -rq "$tree" "$dir/restore-all" > /dev/null || { echo "coffer's restore differs from the tree" >&2; exit 1; }
  echo "$first $second $folder $all $(repo_bytes "$dir/repo") $peak"
}

# restic_round DIR TREE: the same, with restic.
restic_round() {
  local dir=$1 tree=$2 peak=0 rss first second folder all
  rm -rf "$dir/restic" "$dir/restore-folder" "$dir/restore-all"
  export RESTIC_PASSWORD_FILE="$dir/restic.password" RESTIC_REPOSITORY="$dir/restic" RESTIC_CACHE_DIR="$dir/restic-cache"
  restic init --quiet > /dev/null
  read -r first rss < <(measure restic backup --quiet "$tree")
  [ "$rss" -gt "$peak" ] && peak=$rss
  change_tree "$tree"
  read -r second rss < <(measure restic backup --quiet "$tree")
  [ "$rss" -gt "$peak" ] && peak=$rss
  read -r folder rss < <(measure restic restore latest --quiet --target "$dir/restore-folder" --include "$tree/documents/tenant-03")
  [ "$rss" -gt "$peak" ] && peak=$rss
  read -r all rss < <(measure restic restore latest --quiet --target "$dir/restore-all")
  [ "$rss" -gt "$peak" ] && peak=$rss
  diff -rq "$tree" "$dir/restore-all$tree" > /dev/null || { echo "restic's restore differs from the tree" >&2; exit 1; }
  echo "$first $second $folder $all $(repo_bytes "$dir/restic") $peak"
  unset RESTIC_PASSWORD_FILE RESTIC_REPOSITORY RESTIC_CACHE_DIR
}

# setup DIR TREE: the coffer config (folder repository, encrypted to a fresh age key) and the
# restic password.
setup() {
  local dir=$1 tree=$2
  (umask 077; head -c 32 /dev/urandom | base64 > "$dir/restic.password")
  # The age key pair coffer encrypts to (restic always encrypts: so does coffer here).
  rm -f "$dir/age.key"
  age-keygen -o "$dir/age.key" 2> "$dir/age.pub"
  cat > "$dir/coffer.toml" <<EOF
state_dir = "$dir/state"

[repository]
url = "$dir/repo"
encryption_recipient = "$(grep -o 'age1[0-9a-z]*' "$dir/age.pub" | head -1)"

[[files]]
name = "storage"
path = "$tree"
EOF
}

results="$work/files.md"
: > "$results"
dir="$work/small"
mkdir -p "$dir"
echo "==> making the ~2 GiB tree"
make_tree "$dir/tree-pristine" 1
setup "$dir" "$dir/tree"
bytes=$(tree_bytes "$dir/tree-pristine")
files=$(find "$dir/tree-pristine" -type f | wc -l)
: > "$dir/coffer.rows"; : > "$dir/restic.rows"
for round in $(seq 1 "$rounds"); do
  for side in coffer restic; do
    rm -rf "$dir/tree"
    cp -a "$dir/tree-pristine" "$dir/tree"
    sync
    row=$("${side}_round" "$dir" "$dir/tree")
    echo "    round $round, $side: $row (first second folder all repo rss)"
    echo "$row" >> "$dir/$side.rows"
  done
done
col() { awk -v c="$2" '{print $c}' "$1" | median; }
ratio() { printf '%.2f' "$(echo "scale=4; $1 / $2" | bc -l)"; }
for c in 1 2 3 4; do
  name=$(echo "first backup|second backup (1 % changed)|restore one folder (documents/tenant-03/)|restore everything" | cut -d'|' -f"$c")
  a=$(col "$dir/coffer.rows" "$c"); b=$(col "$dir/restic.rows" "$c")
  printf '| %s | %.2f s | %.2f s | **%s** |\n' "$name" "$a" "$b" "$(ratio "$a" "$b")" >> "$results"
done
a=$(col "$dir/coffer.rows" 5); b=$(col "$dir/restic.rows" 5)
# Three decimals: a repository a few MiB larger than restic's must not print as 1.00.
printf '| repository size after both backups | %s MiB | %s MiB | **%.3f** |\n' "$(mib "$a")" "$(mib "$b")" "$(echo "scale=6; $a / $b" | bc -l)" >> "$results"
a=$(col "$dir/coffer.rows" 6); b=$(col "$dir/restic.rows" 6)
printf '| peak RSS (the worst of the four steps) | %s MiB | %s MiB | %s |\n' "$(echo "scale=1; $a / 1024" | bc -l)" "$(echo "scale=1; $b / 1024" | bc -l)" "$(ratio "$a" "$b")" >> "$results"
small_rss=$a
rm -rf "$dir"

large_row=""
if [ "$large" = 1 ]; then
  dir="$work/large"
  mkdir -p "$dir"
  echo "==> making the ~8 GiB tree"
  make_tree "$dir/tree" 4
  setup "$dir" "$dir/tree"
  large_bytes=$(tree_bytes "$dir/tree")
  large_files=$(find "$dir/tree" -type f | wc -l)
  row=$(coffer_round "$dir" "$dir/tree")
  echo "    large, coffer: $row"
  read -r f s fo al repo rss <<< "$row"
  large_row=$(printf '| %s MiB, %s files | %.2f s | %.2f s | %.2f s | %.2f s | %s MiB | %s MiB |' \
    "$(mib "$large_bytes")" "$large_files" "$f" "$s" "$fo" "$al" "$(mib "$repo")" "$(echo "scale=1; $rss / 1024" | bc -l)")
  rm -rf "$dir"
fi

{
  echo '<!-- files-bench:start -->'
  cat <<HEAD
Made by \`scripts/bench.sh files\` ($(basename "$(dirname "$coffer")") build). One generated tree of $(mib "$bytes") MiB in
$files files (two thirds text notes, one third PDF-like files of random bytes, and four files of
$big_mib MiB), copied afresh before each side's round; both sides back it up, then 1 % of the small
files are rewritten in the middle and 1 % more added, back it up again, restore one tenant's
folder and everything (each restore compared with \`diff -r\` before it counts). Both repositories
are folders on the same disk and both are encrypted (restic always is; coffer to an age
recipient, the identity given to the restores). restic $(restic version | awk '{print $2}') with its
defaults (repository v2, compression auto); coffer with its defaults. $rounds rounds, alternating
coffer and restic (A B A B); each figure is the median of the rounds. Peak RSS is the process's
own \`VmHWM\`.

Targets: every time ratio ≤ 1.0, repository size ≤ restic's, coffer's peak RSS < 200 MiB and flat
from 2 GiB to 8 GiB of files.

## File snapshots: coffer against restic

| step | coffer | restic | coffer / restic |
|---|---|---|---|
HEAD
  cat "$results"
  if [ -n "$large_row" ]; then
    cat <<'MID'

coffer alone on a tree four times larger (the same generator at scale 4), one round:

| tree | first backup | second backup | restore one folder | restore everything | repository | peak RSS |
|---|---|---|---|---|---|---|
MID
    echo "$large_row"
    echo
    echo "Peak RSS at ~2 GiB: $(echo "scale=1; $small_rss / 1024" | bc -l) MiB."
  fi
  cat <<TAIL

Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB. Run on $(date -u +%Y-%m-%d) with
\`BENCH_FILES_ROUNDS=$rounds BENCH_FILES_LARGE=$large BENCH_FILES_SMALL=$small_files BENCH_FILES_BIG_MIB=$big_mib scripts/bench.sh files\`.
TAIL
  echo '<!-- files-bench:end -->'
} > "$work/section.md"
python3 - "$work/section.md" <<'PY'
import re, sys
section = open(sys.argv[1]).read().rstrip("\n")
text = open("docs/BENCHMARKS.md").read()
pattern = re.compile(r"<!-- files-bench:start -->.*?<!-- files-bench:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open("docs/BENCHMARKS.md", "w").write(text)
PY
echo "==> wrote the files section of docs/BENCHMARKS.md"
cat "$work/section.md"

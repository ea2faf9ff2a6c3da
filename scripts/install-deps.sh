#!/usr/bin/env bash
# Installs what coffer's demo, tests and benchmark need, skipping whatever is already there.
#   scripts/install-deps.sh          MariaDB server + client tools, zstd, procps
#   scripts/install-deps.sh --s3     also the S3 test servers (s3s-fs, Garage) via cargo install,
#                                    and moto (S3 sources with raw keys and ETags) via pip
set -euo pipefail

want_s3=0
for arg in "$@"; do
  case "$arg" in
    --s3) want_s3=1 ;;
    *) echo "install-deps: unknown argument $arg" >&2; exit 2 ;;
  esac
done

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for tool in mariadbd mariadb-install-db; do have "$tool" || { missing+=(mariadb-server); break; }; done
for tool in mariadb mariadb-dump mariadb-binlog; do have "$tool" || { missing+=(mariadb-client); break; }; done
have zstd || missing+=(zstd)
have pgrep || missing+=(procps)
have sha256sum || missing+=(coreutils)
have bc || missing+=(bc)
have jq || missing+=(jq)
have git || missing+=(git)           # the configuration history's git mirror (git plumbing)
have curl || missing+=(curl)         # the demo reads the daemon's /up and /metrics
have minisign || missing+=(minisign)   # checks coffer's signatures by hand, as FORMAT.md shows
have age || missing+=(age)             # decrypts a file snapshot's chunk by hand, as FORMAT.md shows
have openssl || missing+=(openssl)     # the TLS tests make their own CA and certificates
have make || missing+=(make)           # jemalloc's build (the binary's allocator) runs make
have cc || missing+=(gcc)              # ... and a C compiler, like zstd's
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]} with apt-get"
  # Keep the package's own service from starting: coffer starts its own throwaway servers.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    created_policy=1
  fi
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "$created_policy" = 1 ] && as_root rm -f "$policy"
fi

if [ "$want_s3" = 1 ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
  # Versions pinned to what builds with the project's Rust (see shared/S3-TEST-SERVERS.md).
  if ! command -v s3s-fs >/dev/null 2>&1; then
    echo "install-deps: building s3s-fs (about 2 minutes)"
    cargo install s3s-fs@0.14.1 --features binary --locked --quiet
  fi
  if ! command -v garage >/dev/null 2>&1; then
    echo "install-deps: building garage (about 11 minutes)"
    cargo install garage@2.5.0 --locked --quiet
  fi
  if ! command -v moto_server >/dev/null 2>&1; then
    # In a venv of its own, so it changes no other Python; its entry point is linked where
    # cargo's binaries are, which every script here puts on PATH.
    echo "install-deps: installing moto with pip (about 30 seconds)"
    venv="$HOME/.local/share/coffer/moto-venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "moto[server]==5.2.5"
    mkdir -p "$HOME/.cargo/bin"
    ln -sf "$venv/bin/moto_server" "$HOME/.cargo/bin/moto_server"
  fi
fi
echo "install-deps: ok"

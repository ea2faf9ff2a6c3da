# Shared by demo.sh and bench.sh (sourced, not run).

# start_invoice_sandbox DIR SCALE: starts a throwaway MariaDB (coffer-sandbox, the drill's own
# sandbox code) loaded with the invoice platform at SCALE, with a `coffer` account whose password
# is made in DIR/secrets/db-password. The sandbox lives until fd 3 closes, so it goes away with
# the calling script. Sets SANDBOX_PORT.
start_invoice_sandbox() {
  local dir=$1 scale=$2 bin=${SANDBOX_BIN:-target/debug/coffer-sandbox}
  mkdir -p "$dir/secrets"
  (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$dir/secrets/db-password")
  rm -f "$dir/sandbox.ready"
  exec 3> >("$bin" --ready-file "$dir/sandbox.ready" --server-id 1 \
    --sql scripts/sql/invoice-platform.sql --scale "$scale" \
    --user coffer --password-file "$dir/secrets/db-password")
  local waited=0
  while [ ! -s "$dir/sandbox.ready" ]; do
    sleep 0.2
    waited=$((waited + 1))
    if [ "$waited" -gt 9000 ]; then echo "the sandbox did not start within 30 minutes" >&2; return 1; fi
  done
  SANDBOX_PORT=$(sed -n 's/^port=//p' "$dir/sandbox.ready")
}

# start_target_sandbox DIR: an empty throwaway MariaDB to restore into, on fd 4, with a `coffer`
# account allowed everything (password in DIR/secrets/db-password). Sets TARGET_PORT.
start_target_sandbox() {
  local dir=$1 bin=${SANDBOX_BIN:-target/debug/coffer-sandbox}
  mkdir -p "$dir/secrets"
  (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$dir/secrets/db-password")
  rm -f "$dir/sandbox.ready"
  exec 4> >("$bin" --ready-file "$dir/sandbox.ready" --server-id 2 \
    --user coffer --password-file "$dir/secrets/db-password" --grants "ALL PRIVILEGES ON *.*")
  while [ ! -s "$dir/sandbox.ready" ]; do sleep 0.2; done
  TARGET_PORT=$(sed -n 's/^port=//p' "$dir/sandbox.ready")
}

# stop_target_sandbox: closes fd 4.
stop_target_sandbox() {
  exec 4>&-
}

# stop_sandbox: closes fd 3; the sandbox shuts its server down.
stop_sandbox() {
  exec 3>&-
}

# write_coffer_config DIR PORT: DIR/coffer.toml backing up `app` into the folder DIR/repo.
write_coffer_config() {
  cat > "$1/coffer.toml" <<TOML
timezone = "UTC"

[repository]
url = "repo"
compression = "zstd"
compression_level = 3

[source]
host = "127.0.0.1"
port = $2
user = "coffer"
password_file = "secrets/db-password"
databases = ["app"]
TOML
}

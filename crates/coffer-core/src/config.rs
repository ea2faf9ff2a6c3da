//! The configuration file: one TOML document, resolved against the environment.
//!
//! Precedence, highest first: environment variables (`COFFER_*`, `AWS_*`), the file, defaults.
//! Unknown keys are errors. Secrets are read from `*_file` keys or environment variables into
//! [`Secret`]s, so they never reach `Debug` output, logs, or a child's command line.
//! Relative paths in the file are taken relative to the file's own folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::client::{Tls, TlsMode};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Where the configuration comes from when `--config` is not given and `$COFFER_CONFIG` is unset.
pub const DEFAULT_CONFIG_PATH: &str = "config/coffer.toml";

/// The resolved configuration, ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The operator's time zone (IANA name), used to read and show times.
    pub timezone: jiff::tz::TimeZone,
    /// The name of [`Config::timezone`], as written.
    pub timezone_name: String,
    /// coffer's own folder on this host (`state_dir`, `COFFER_STATE_DIR`): temporary files go
    /// under `state_dir/tmp` ([`crate::scratch`]). `None`: under `$TMPDIR`.
    pub state_dir: Option<PathBuf>,
    /// How long a dump, a binlog fetch or a load may make no progress before it is stopped as
    /// stalled (`stall_timeout_seconds`, default 300).
    pub stall_timeout: std::time::Duration,
    /// The backup repository.
    pub repository: RepositoryConfig,
    /// The database that is backed up.
    pub source: SourceConfig,
    /// Where and how restores go.
    pub restore: RestoreConfig,
    /// Continuous binlog archiving (`coffer binlog stream`).
    pub binlog: BinlogConfig,
    /// The recovery drill (`coffer drill run`).
    pub drill: DrillConfig,
}

/// Where a drill restores to.
#[derive(Debug, Clone)]
pub enum DrillSandbox {
    /// A throwaway `mariadbd` from the installed binaries, private to the drill.
    Managed,
    /// An existing server; every database the drill writes is named `PREFIX + name`.
    External {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Account (needs to create and drop the prefixed databases).
        user: String,
        /// Its password.
        password: Secret,
        /// Prefix of every database the drill creates, drops or reads there.
        database_prefix: String,
        /// TLS to the server.
        tls: crate::client::Tls,
    },
}

/// A command the drill runs against the restored sandbox ("application starts").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCheck {
    /// What the check shows (defaults to the command).
    pub name: Option<String>,
    /// Shell command, run with `sh -c`.
    pub command: String,
    /// Killed (and failed) after this many seconds.
    #[serde(default = "default_check_timeout")]
    pub timeout_seconds: u64,
    /// The exit code that means success.
    #[serde(default)]
    pub expect_exit: i32,
}

fn default_check_timeout() -> u64 {
    60
}

/// An SQL probe the drill runs in the restored database ("critical features work").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    /// What the probe shows (defaults to the query).
    pub name: Option<String>,
    /// The query; runs in the first restored database.
    pub query: String,
    /// The expected result: rows joined by newlines, columns by tabs (`"0"` for a count of 0).
    pub expect: Option<String>,
    /// Or: the least number of rows the query must return.
    pub min_rows: Option<u64>,
}

/// Recovery drill settings.
#[derive(Debug, Clone)]
pub struct DrillConfig {
    /// Where the drill restores.
    pub sandbox: DrillSandbox,
    /// Environment for app checks and `after_restore` commands: `MAIL_MAILER=log` and
    /// `QUEUE_CONNECTION=sync` unless set otherwise, plus what the file adds; keeps a restored
    /// app from mailing customers or charging cards. The `DB_*` variables pointing at the sandbox
    /// always win.
    pub env: std::collections::BTreeMap<String, String>,
    /// Shell commands run after the full backup is loaded, before the checks and the binlog
    /// replay (e.g. clearing caches). They must not change data: the data check compares with
    /// the backup.
    pub after_restore: Vec<String>,
    /// "Application starts" commands.
    pub app_checks: Vec<AppCheck>,
    /// "Critical features work" probes.
    pub sql_checks: Vec<SqlCheck>,
}

/// Continuous binlog archiving settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogConfig {
    /// How often the growing active binlog is shipped: the recovery point is at most about this
    /// old while the stream runs.
    pub ship_interval: std::time::Duration,
    /// The server id the stream presents to the source as a replica. It must differ from the
    /// source's and from every other replica's: the source drops an older connection that
    /// presents the same id.
    pub stream_server_id: u32,
}

impl Default for BinlogConfig {
    fn default() -> Self {
        Self {
            ship_interval: std::time::Duration::from_secs(60),
            stream_server_id: DEFAULT_STREAM_SERVER_ID,
        }
    }
}

/// The replica server id `coffer binlog stream` uses unless `[binlog] stream_server_id` is set.
pub const DEFAULT_STREAM_SERVER_ID: u32 = 4_012_023_001;

/// Restore settings: the target server (each field defaults to the source's) and hooks.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// Target host.
    pub host: String,
    /// Target port.
    pub port: u16,
    /// Target account.
    pub user: String,
    /// Target password.
    pub password: Secret,
    /// TLS to the target; each key defaults to the source's.
    pub tls: crate::client::Tls,
    /// Shell commands run before a restore touches the target (e.g. `php artisan down`).
    pub before: Vec<String>,
    /// Shell commands run after a restore, whether it succeeded or not (e.g. `php artisan up`).
    pub after: Vec<String>,
    /// How long one hook may run before its process group is killed (default 600 s).
    pub hook_timeout: std::time::Duration,
    /// The GTID domain a point-in-time replay writes into when the target's
    /// `gtid_strict_mode` cannot take the source's own GTIDs; `None`: such a replay is refused.
    pub gtid_domain: Option<u32>,
}

/// The backup repository: where and how artifacts are stored.
#[derive(Debug, Clone)]
pub struct RepositoryConfig {
    /// The storage location.
    pub location: RepositoryLocation,
    /// How artifacts are compressed before they are stored.
    pub compression: Compression,
    /// An age public key (`age1…`); when set, every artifact is encrypted to it.
    pub encryption_recipient: Option<String>,
    /// The key every manifest and drill report is signed with (`signing_key_file`); `None`:
    /// they are written unsigned.
    pub signing_key: Option<crate::signing::SigningKey>,
    /// The public key every manifest and drill report read must be signed with (`verify_key`);
    /// `None`: signatures are not checked, and readers warn once per command.
    pub verify_key: Option<crate::signing::VerifyKey>,
}

/// A repository location.
#[derive(Debug, Clone)]
pub enum RepositoryLocation {
    /// A folder on a local (or mounted) file system.
    Local(PathBuf),
    /// A bucket and key prefix on an S3-compatible server.
    S3(S3Config),
}

impl std::fmt::Display for RepositoryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3(s3) if s3.prefix.is_empty() => write!(f, "s3://{}", s3.bucket),
            Self::S3(s3) => write!(f, "s3://{}/{}", s3.bucket, s3.prefix),
        }
    }
}

/// S3 connection settings.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Endpoint URL for S3-compatible servers (`http://127.0.0.1:3900`); AWS when unset.
    pub endpoint: Option<String>,
    /// Region; must equal the server's.
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted servers.
    pub path_style: bool,
    /// When request and response checksums are computed.
    pub checksum_mode: ChecksumMode,
    /// Access key id.
    pub access_key_id: Secret,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Multipart part size in bytes; memory use is a small multiple of it.
    pub part_size: usize,
}

/// When the S3 client computes flexible checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// Only where the operation requires one: works with Garage and other servers over plain HTTP.
    WhenRequired,
    /// Whenever the operation supports one (the AWS default; best on AWS itself).
    WhenSupported,
}

/// The compression of stored artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at a level from 1 to 19.
    Zstd(i32),
    /// gzip at a level from 1 to 9, for tools that only read gzip.
    Gzip(u32),
    /// Stored as is.
    None,
}

impl Compression {
    /// The file-name suffix of this compression (`.zst`, `.gz`, or nothing).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Zstd(_) => ".zst",
            Self::Gzip(_) => ".gz",
            Self::None => "",
        }
    }

    /// The name recorded in manifests: `zstd`, `gzip` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd(_) => "zstd",
            Self::Gzip(_) => "gzip",
            Self::None => "none",
        }
    }
}

/// The database server that is backed up, reached over TCP like any remote client.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Account name.
    pub user: String,
    /// Account password (may be empty).
    pub password: Secret,
    /// Databases to back up; empty means every non-system database.
    pub databases: Vec<String>,
    /// TLS to the source (`tls`, `ca_file`, `cert_file`, `key_file`).
    pub tls: crate::client::Tls,
    /// `allow_incomplete`: back up even when the account cannot see every object of a database
    /// (triggers, routines, …), recording in the manifest what may be missing, instead of
    /// failing. Default false.
    pub allow_incomplete: bool,
}

// ---- the file as written ----------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    timezone: Option<String>,
    state_dir: Option<PathBuf>,
    stall_timeout_seconds: Option<u64>,
    repository: Option<RawRepository>,
    source: Option<RawSource>,
    restore: Option<RawRestore>,
    binlog: Option<RawBinlog>,
    drill: Option<RawDrill>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    sandbox: Option<RawSandboxKind>,
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    database_prefix: Option<String>,
    tls: Option<TlsMode>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    env: Option<std::collections::BTreeMap<String, String>>,
    after_restore: Option<Vec<String>>,
    app_checks: Option<Vec<AppCheck>>,
    sql_checks: Option<Vec<SqlCheck>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawSandboxKind {
    Managed,
    External,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinlog {
    ship_interval_seconds: Option<u64>,
    stream_server_id: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestore {
    target_host: Option<String>,
    target_port: Option<u16>,
    target_user: Option<String>,
    target_password_file: Option<PathBuf>,
    tls: Option<TlsMode>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    before: Option<Vec<String>>,
    after: Option<Vec<String>>,
    hook_timeout_seconds: Option<u64>,
    gtid_domain: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    url: Option<String>,
    compression: Option<RawCompression>,
    compression_level: Option<i32>,
    encryption_recipient: Option<String>,
    signing_key_file: Option<PathBuf>,
    verify_key: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    checksum_mode: Option<ChecksumMode>,
    access_key_id_file: Option<PathBuf>,
    secret_access_key_file: Option<PathBuf>,
    part_size_mib: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawCompression {
    Zstd,
    Gzip,
    None,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    databases: Option<Vec<String>>,
    tls: Option<TlsMode>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    allow_incomplete: Option<bool>,
}

/// Reads environment variables; injected so tests can resolve a config without touching the
/// process environment.
pub trait Env {
    /// The value of `name`, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Config {
    /// Picks the file to read: the explicit path, else `$COFFER_CONFIG`, else
    /// [`DEFAULT_CONFIG_PATH`].
    pub fn locate(explicit: Option<&Path>, env: &dyn Env) -> PathBuf {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| env.var("COFFER_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// Reads and resolves the file at `path`.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Self::parse(&text, path, env)
    }

    /// Resolves configuration text as if read from `path`.
    pub fn parse(text: &str, path: &Path, env: &dyn Env) -> Result<Config> {
        let fail = |key: &str, what: &dyn std::fmt::Display| {
            Error::config(format!("{}: key `{key}`: {what}", path.display()))
        };
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|err| {
                let key = err.path().to_string();
                let inner = err.into_inner();
                let line = inner
                    .span()
                    .map(|span| 1 + text[..span.start].matches('\n').count());
                let message = inner.message().replace('\n', " ");
                match (key.as_str(), line) {
                    (".", Some(line)) => {
                        Error::config(format!("{}: line {line}: {message}", path.display()))
                    }
                    (".", None) => Error::config(format!("{}: {message}", path.display())),
                    (key, Some(line)) => Error::config(format!(
                        "{}: line {line}: key `{key}`: {message}",
                        path.display()
                    )),
                    (key, None) => fail(key, &message),
                }
            })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let read_secret = |key: &str, file: &Path| -> Result<Secret> {
            let file = resolve(file);
            let text = std::fs::read_to_string(&file).map_err(|e| {
                fail(
                    key,
                    &format!("cannot read secret file {}: {e}", file.display()),
                )
            })?;
            warn_if_shared(key, &file);
            Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
        };
        // TLS of one connection (`SECTION.tls`, `.ca_file`, `.cert_file`, `.key_file`); a key
        // not set takes its value from `inherit` (the restore target inherits the source's).
        let read_tls = |section: &str,
                        [ca_file, cert_file, key_file]: [&Option<PathBuf>; 3],
                        mode: Option<TlsMode>,
                        inherit: &Tls|
         -> Result<Tls> {
            let pem = |name: &str, file: &Option<PathBuf>, inherited: &Option<PathBuf>| {
                let Some(file) = file else {
                    return Ok(inherited.clone());
                };
                let file = resolve(file);
                let key = format!("{section}.{name}");
                match std::fs::read(&file) {
                    Ok(bytes) if memchr::memmem::find(&bytes, b"-----BEGIN ").is_some() => {
                        Ok(Some(file))
                    }
                    Ok(_) => Err(fail(&key, &format!("{} is not a PEM file", file.display()))),
                    Err(e) => Err(fail(&key, &format!("cannot read {}: {e}", file.display()))),
                }
            };
            let tls = Tls {
                mode: mode.unwrap_or(inherit.mode),
                ca_file: pem("ca_file", ca_file, &inherit.ca_file)?,
                cert_file: pem("cert_file", cert_file, &inherit.cert_file)?,
                key_file: pem("key_file", key_file, &inherit.key_file)?,
            };
            if tls.mode.verifies() && tls.ca_file.is_none() {
                return Err(fail(
                    &format!("{section}.ca_file"),
                    &format!(
                        "missing: tls = \"{}\" checks the server's certificate against it (the CA certificate, PEM)",
                        tls.mode.name()
                    ),
                ));
            }
            match (&tls.cert_file, &tls.key_file) {
                (Some(_), None) => Err(fail(
                    &format!("{section}.key_file"),
                    &"missing: `cert_file` needs its key",
                )),
                (None, Some(_)) => Err(fail(
                    &format!("{section}.cert_file"),
                    &"missing: `key_file` needs its certificate",
                )),
                _ => Ok(tls),
            }
        };
        let state_dir = env
            .var("COFFER_STATE_DIR")
            .map(PathBuf::from)
            .or(raw.state_dir)
            .map(|p| resolve(&p));

        let timezone_name = env
            .var("COFFER_TIMEZONE")
            .or(raw.timezone)
            .unwrap_or_else(|| "UTC".to_string());
        let timezone = jiff::tz::TimeZone::get(&timezone_name).map_err(|_| {
            fail("timezone", &format!("unknown time zone {timezone_name:?} (want an IANA name such as \"Asia/Riyadh\")"))
        })?;

        // Repository.
        let repo = raw.repository.unwrap_or_default();
        let url = env
            .var("COFFER_REPOSITORY_URL")
            .or(repo.url)
            .ok_or_else(|| {
                fail(
                    "repository.url",
                    &"missing (a folder path, file://PATH or s3://BUCKET/PREFIX)",
                )
            })?;
        let compression = match (
            repo.compression.unwrap_or(RawCompression::Zstd),
            repo.compression_level,
        ) {
            (RawCompression::Zstd, level) => {
                let level = level.unwrap_or(3);
                if !(1..=19).contains(&level) {
                    return Err(fail(
                        "repository.compression_level",
                        &format!("{level} is out of range for zstd (1 to 19)"),
                    ));
                }
                Compression::Zstd(level)
            }
            (RawCompression::Gzip, level) => {
                let level = level.unwrap_or(6);
                if !(1..=9).contains(&level) {
                    return Err(fail(
                        "repository.compression_level",
                        &format!("{level} is out of range for gzip (1 to 9)"),
                    ));
                }
                Compression::Gzip(level as u32)
            }
            (RawCompression::None, Some(_)) => {
                return Err(fail(
                    "repository.compression_level",
                    &"makes no sense with compression = \"none\"",
                ));
            }
            (RawCompression::None, None) => Compression::None,
        };
        let encryption_recipient = env
            .var("COFFER_REPOSITORY_ENCRYPTION_RECIPIENT")
            .or(repo.encryption_recipient);
        if let Some(recipient) = &encryption_recipient {
            recipient.parse::<age::x25519::Recipient>().map_err(|e| {
                fail(
                    "repository.encryption_recipient",
                    &format!("not an age public key (age1…): {e}"),
                )
            })?;
        }
        // Signing: the secret half is read like any secret; the public half is the key itself
        // (`RW…`) or a path to its file.
        let signing_key = match &repo.signing_key_file {
            Some(file) => {
                let text = read_secret("repository.signing_key_file", file)?;
                Some(
                    crate::signing::SigningKey::from_text(text.expose())
                        .map_err(|e| fail("repository.signing_key_file", &e))?,
                )
            }
            None => None,
        };
        let verify_key = match env.var("COFFER_REPOSITORY_VERIFY_KEY").or(repo.verify_key) {
            Some(value) if crate::signing::VerifyKey::looks_like_key(&value) => Some(
                crate::signing::VerifyKey::parse(&value)
                    .map_err(|e| fail("repository.verify_key", &e))?,
            ),
            Some(value) => {
                let file = resolve(Path::new(value.trim()));
                Some(
                    crate::signing::VerifyKey::from_file(&file)
                        .map_err(|e| fail("repository.verify_key", &e))?,
                )
            }
            None => None,
        };
        if let (Some(signing), Some(verify)) = (&signing_key, &verify_key)
            && signing.verify_key() != *verify
        {
            return Err(fail(
                "repository.verify_key",
                &format!(
                    "key {} is not the public half of signing_key_file (key {}): every backup would be refused",
                    verify.key_id(),
                    signing.key_id()
                ),
            ));
        }
        let location = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(fail("repository.url", &format!("{url:?} names no bucket")));
            }
            let access_key_id = match env.var("AWS_ACCESS_KEY_ID") {
                Some(v) => Secret::new(v),
                None => match &repo.access_key_id_file {
                    Some(file) => read_secret("repository.access_key_id_file", file)?,
                    None => {
                        return Err(fail(
                            "repository.access_key_id_file",
                            &"missing: an S3 repository needs credentials (or set AWS_ACCESS_KEY_ID)",
                        ));
                    }
                },
            };
            let secret_access_key = match env.var("AWS_SECRET_ACCESS_KEY") {
                Some(v) => Secret::new(v),
                None => match &repo.secret_access_key_file {
                    Some(file) => read_secret("repository.secret_access_key_file", file)?,
                    None => {
                        return Err(fail(
                            "repository.secret_access_key_file",
                            &"missing: an S3 repository needs credentials (or set AWS_SECRET_ACCESS_KEY)",
                        ));
                    }
                },
            };
            let part_size_mib = repo.part_size_mib.unwrap_or(16);
            if !(5..=1024).contains(&part_size_mib) {
                return Err(fail(
                    "repository.part_size_mib",
                    &format!("{part_size_mib} is out of range (5 to 1024)"),
                ));
            }
            let endpoint = env.var("COFFER_REPOSITORY_ENDPOINT").or(repo.endpoint);
            if let Some(endpoint) = &endpoint
                && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            {
                return Err(fail(
                    "repository.endpoint",
                    &format!("{endpoint:?} is not an http:// or https:// URL"),
                ));
            }
            RepositoryLocation::S3(S3Config {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                endpoint,
                region: env
                    .var("COFFER_REPOSITORY_REGION")
                    .or(repo.region)
                    .unwrap_or_else(|| "us-east-1".into()),
                path_style: repo.path_style.unwrap_or(true),
                checksum_mode: repo.checksum_mode.unwrap_or(ChecksumMode::WhenRequired),
                access_key_id,
                secret_access_key,
                part_size: part_size_mib as usize * 1024 * 1024,
            })
        } else {
            for (key, set) in [
                ("repository.endpoint", repo.endpoint.is_some()),
                ("repository.region", repo.region.is_some()),
                (
                    "repository.access_key_id_file",
                    repo.access_key_id_file.is_some(),
                ),
                (
                    "repository.secret_access_key_file",
                    repo.secret_access_key_file.is_some(),
                ),
            ] {
                if set {
                    return Err(fail(key, &"only applies to an s3:// repository"));
                }
            }
            let folder = url.strip_prefix("file://").unwrap_or(&url);
            if folder.is_empty() || url.contains("://") && !url.starts_with("file://") {
                return Err(fail(
                    "repository.url",
                    &format!("{url:?} is neither a folder, file://PATH nor s3://BUCKET/PREFIX"),
                ));
            }
            RepositoryLocation::Local(resolve(Path::new(folder)))
        };

        // Source.
        let source = raw.source.unwrap_or_default();
        let port = match env.var("COFFER_SOURCE_PORT") {
            Some(v) => v.parse().map_err(|_| {
                fail(
                    "source.port",
                    &format!("COFFER_SOURCE_PORT={v:?} is not a port number"),
                )
            })?,
            None => source.port.unwrap_or(3306),
        };
        let password = match env.var("COFFER_SOURCE_PASSWORD") {
            Some(v) => Secret::new(v),
            None => match &source.password_file {
                Some(file) => read_secret("source.password_file", file)?,
                None => Secret::default(),
            },
        };
        let databases = source.databases.unwrap_or_default();
        for (i, name) in databases.iter().enumerate() {
            crate::names::check_database(name).map_err(|why| fail("source.databases", &why))?;
            if databases[..i].contains(name) {
                return Err(fail(
                    "source.databases",
                    &format!("{name:?} is listed twice"),
                ));
            }
        }
        let source_tls = read_tls(
            "source",
            [&source.ca_file, &source.cert_file, &source.key_file],
            source.tls,
            &Tls::default(),
        )?;
        let source = SourceConfig {
            tls: source_tls,
            host: env
                .var("COFFER_SOURCE_HOST")
                .or(source.host)
                .unwrap_or_else(|| "127.0.0.1".into()),
            port,
            user: env
                .var("COFFER_SOURCE_USER")
                .or(source.user)
                .unwrap_or_else(|| "root".into()),
            password,
            databases,
            allow_incomplete: source.allow_incomplete.unwrap_or(false),
        };

        // Restore target: each field defaults to the source's.
        let restore = raw.restore.unwrap_or_default();
        let target_port = match env.var("COFFER_TARGET_PORT") {
            Some(v) => v.parse().map_err(|_| {
                fail(
                    "restore.target_port",
                    &format!("COFFER_TARGET_PORT={v:?} is not a port number"),
                )
            })?,
            None => restore.target_port.unwrap_or(source.port),
        };
        let target_password = match env.var("COFFER_TARGET_PASSWORD") {
            Some(v) => Secret::new(v),
            None => match &restore.target_password_file {
                Some(file) => read_secret("restore.target_password_file", file)?,
                None => source.password.clone(),
            },
        };
        let target_tls = read_tls(
            "restore",
            [&restore.ca_file, &restore.cert_file, &restore.key_file],
            restore.tls,
            &source.tls,
        )?;
        let restore = RestoreConfig {
            tls: target_tls,
            host: env
                .var("COFFER_TARGET_HOST")
                .or(restore.target_host)
                .unwrap_or_else(|| source.host.clone()),
            port: target_port,
            user: env
                .var("COFFER_TARGET_USER")
                .or(restore.target_user)
                .unwrap_or_else(|| source.user.clone()),
            password: target_password,
            before: restore.before.unwrap_or_default(),
            after: restore.after.unwrap_or_default(),
            hook_timeout: std::time::Duration::from_secs(match restore.hook_timeout_seconds {
                Some(0) => {
                    return Err(fail("restore.hook_timeout_seconds", &"must be at least 1"));
                }
                Some(n) => n,
                None => 600,
            }),
            gtid_domain: restore.gtid_domain,
        };

        let raw_binlog = raw.binlog.unwrap_or_default();
        let binlog = BinlogConfig {
            ship_interval: match raw_binlog.ship_interval_seconds {
                Some(0) => {
                    return Err(fail(
                        "binlog.ship_interval_seconds",
                        &"must be at least 1 second",
                    ));
                }
                Some(s) => std::time::Duration::from_secs(s),
                None => BinlogConfig::default().ship_interval,
            },
            stream_server_id: match raw_binlog.stream_server_id {
                Some(0) => {
                    return Err(fail(
                        "binlog.stream_server_id",
                        &"0 is not a valid replica server id",
                    ));
                }
                Some(id) => id,
                None => DEFAULT_STREAM_SERVER_ID,
            },
        };

        let raw_drill = raw.drill.unwrap_or_default();
        let sandbox = match raw_drill.sandbox.unwrap_or(RawSandboxKind::Managed) {
            RawSandboxKind::Managed => DrillSandbox::Managed,
            RawSandboxKind::External => {
                let prefix = raw_drill.database_prefix.clone().unwrap_or_default();
                if prefix.is_empty()
                    || prefix.len() > 32
                    || !prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(fail(
                        "drill.database_prefix",
                        &"an external drill sandbox needs a prefix of letters, digits and _ (e.g. \"drill_\"), so it can never touch another database",
                    ));
                }
                DrillSandbox::External {
                    host: raw_drill.host.clone().ok_or_else(|| {
                        fail("drill.host", &"an external drill sandbox needs its host")
                    })?,
                    port: raw_drill.port.unwrap_or(3306),
                    user: raw_drill.user.clone().unwrap_or_else(|| "root".into()),
                    password: match &raw_drill.password_file {
                        Some(file) => read_secret("drill.password_file", file)?,
                        None => Secret::default(),
                    },
                    database_prefix: prefix,
                    tls: read_tls(
                        "drill",
                        [
                            &raw_drill.ca_file,
                            &raw_drill.cert_file,
                            &raw_drill.key_file,
                        ],
                        raw_drill.tls,
                        &Tls::default(),
                    )?,
                }
            }
        };
        for (i, check) in raw_drill.app_checks.iter().flatten().enumerate() {
            if check.timeout_seconds == 0 {
                return Err(fail(
                    &format!("drill.app_checks[{i}].timeout_seconds"),
                    &"must be at least 1 second",
                ));
            }
        }
        for (i, check) in raw_drill.sql_checks.iter().flatten().enumerate() {
            if check.expect.is_some() == check.min_rows.is_some() {
                return Err(fail(
                    &format!("drill.sql_checks[{i}]"),
                    &"give exactly one of `expect` or `min_rows`",
                ));
            }
        }
        let drill = DrillConfig {
            sandbox,
            // The safe defaults stay unless the file overrides them one by one.
            env: [("MAIL_MAILER", "log"), ("QUEUE_CONNECTION", "sync")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(raw_drill.env.unwrap_or_default())
                .collect(),
            after_restore: raw_drill.after_restore.unwrap_or_default(),
            app_checks: raw_drill.app_checks.unwrap_or_default(),
            sql_checks: raw_drill.sql_checks.unwrap_or_default(),
        };

        Ok(Config {
            restore,
            binlog,
            drill,
            path: path.to_path_buf(),
            timezone,
            timezone_name,
            state_dir,
            stall_timeout: std::time::Duration::from_secs(match raw.stall_timeout_seconds {
                Some(0) => return Err(fail("stall_timeout_seconds", &"must be at least 1")),
                Some(n) => n,
                None => 300,
            }),
            repository: RepositoryConfig {
                location,
                compression,
                encryption_recipient,
                signing_key,
                verify_key,
            },
            source,
        })
    }
}

/// A secret file that others can read is still used (refusing would stop backups over a mode
/// bit), but the operator is told, once per file.
pub fn warn_if_shared(key: &str, file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            key,
            file = %file.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "secret file is readable by others: chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/coffer/coffer.toml"), &no_env)
    }

    #[test]
    fn minimal_local_config_gets_defaults() {
        let config = parse("[repository]\nurl = \"repo\"\n").unwrap();
        assert!(
            matches!(&config.repository.location, RepositoryLocation::Local(p) if p == Path::new("/etc/coffer/repo"))
        );
        assert_eq!(config.repository.compression, Compression::Zstd(3));
        assert_eq!(config.source.port, 3306);
        assert_eq!(config.timezone_name, "UTC");
    }

    #[test]
    fn incomplete_backups_are_refused_unless_allowed() {
        let config = parse("[repository]\nurl = \"repo\"\n").unwrap();
        assert!(!config.source.allow_incomplete);
        let allowed =
            parse("[repository]\nurl = \"repo\"\n[source]\nallow_incomplete = true\n").unwrap();
        assert!(allowed.source.allow_incomplete);
        let err = parse("[repository]\nurl = \"repo\"\n[source]\nallow_incomplete = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.allow_incomplete"), "{err}");
    }

    #[test]
    fn binlog_stream_settings_default_and_are_checked() {
        let config = parse("[repository]\nurl = \"repo\"\n").unwrap();
        assert_eq!(config.binlog, BinlogConfig::default());
        assert_eq!(config.binlog.ship_interval.as_secs(), 60);
        let set = parse("[repository]\nurl = \"repo\"\n[binlog]\nship_interval_seconds = 5\nstream_server_id = 77\n")
            .unwrap();
        assert_eq!(set.binlog.ship_interval.as_secs(), 5);
        assert_eq!(set.binlog.stream_server_id, 77);
        let zero = parse("[repository]\nurl = \"repo\"\n[binlog]\nship_interval_seconds = 0\n")
            .unwrap_err()
            .to_string();
        assert!(zero.contains("binlog.ship_interval_seconds"), "{zero}");
    }

    #[test]
    fn drill_settings_are_checked() {
        let base = "[repository]\nurl = \"repo\"\n";
        let managed = parse(base).unwrap();
        assert!(matches!(managed.drill.sandbox, DrillSandbox::Managed));
        assert_eq!(managed.drill.env["MAIL_MAILER"], "log");
        let merged = parse(&format!("{base}[drill.env]\nAPP_ENV = \"drill\"\n")).unwrap();
        assert_eq!(merged.drill.env["APP_ENV"], "drill");
        assert_eq!(merged.drill.env["QUEUE_CONNECTION"], "sync");
        for (text, key) in [
            (
                "[drill]\nsandbox = \"external\"\nhost = \"db\"\n",
                "drill.database_prefix",
            ),
            (
                "[drill]\nsandbox = \"external\"\ndatabase_prefix = \"drill_\"\n",
                "drill.host",
            ),
            (
                "[[drill.sql_checks]]\nquery = \"SELECT 1\"\n",
                "drill.sql_checks[0]",
            ),
            (
                "[[drill.app_checks]]\ncommand = \"true\"\ntimeout_seconds = 0\n",
                "timeout_seconds",
            ),
        ] {
            let err = parse(&format!("{base}{text}")).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = parse("[repository]\nurl = \"r\"\ncompresion = \"zstd\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/etc/coffer/coffer.toml"), "{text}");
        assert!(text.contains("compresion"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (
                "[repository]\nurl = \"r\"\ncompression = \"lz4\"\n",
                "repository.compression",
            ),
            (
                "[repository]\nurl = \"r\"\ncompression_level = 42\n",
                "repository.compression_level",
            ),
            (
                "timezone = \"Mars/Olympus\"\n[repository]\nurl = \"r\"\n",
                "timezone",
            ),
            (
                "[repository]\nurl = \"r\"\nencryption_recipient = \"age1nope\"\n",
                "repository.encryption_recipient",
            ),
            (
                "[repository]\nurl = \"s3://b/p\"\n",
                "repository.access_key_id_file",
            ),
            (
                "[repository]\nurl = \"r\"\nregion = \"x\"\n",
                "repository.region",
            ),
            ("[repository]\nurl = \"ftp://x\"\n", "repository.url"),
            ("[source]\nport = 3306\n", "repository.url"),
            (
                "[repository]\nurl = \"r\"\n[source]\nport = 99999\n",
                "source.port",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{key} not in {err}");
        }
    }

    #[test]
    fn missing_secret_file_is_named() {
        let err = parse("[repository]\nurl = \"r\"\n[source]\npassword_file = \"nope.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/coffer/nope.txt"), "{err}");
        assert!(err.contains("source.password_file"), "{err}");
    }

    #[test]
    fn restore_target_defaults_to_the_source() {
        let text =
            "[repository]\nurl = \"r\"\n[source]\nhost = \"db\"\nport = 3307\nuser = \"b\"\n";
        let config = parse(text).unwrap();
        assert_eq!(
            (
                config.restore.host.as_str(),
                config.restore.port,
                config.restore.user.as_str()
            ),
            ("db", 3307, "b")
        );
        let text =
            format!("{text}[restore]\ntarget_host = \"sandbox\"\nafter = [\"php artisan up\"]\n");
        let env = |name: &str| (name == "COFFER_TARGET_PORT").then(|| "3310".to_string());
        let config = Config::parse(&text, Path::new("c.toml"), &env).unwrap();
        assert_eq!(
            (config.restore.host.as_str(), config.restore.port),
            ("sandbox", 3310)
        );
        assert_eq!(config.restore.after, vec!["php artisan up"]);
        assert!(
            parse("[repository]\nurl = \"r\"\n[restore]\ntarget = \"x\"\n")
                .unwrap_err()
                .to_string()
                .contains("target")
        );
    }

    #[test]
    fn tls_settings_default_inherit_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("coffer.toml");
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::fs::write(dir.path().join("not-pem"), "hello").unwrap();
        let load = |text: &str| {
            Config::parse(
                &format!("[repository]\nurl = \"r\"\n{text}"),
                &config_path,
                &no_env,
            )
        };
        let config = load("").unwrap();
        assert_eq!(config.source.tls, Tls::default());
        assert_eq!(config.source.tls.mode, TlsMode::Preferred);
        let config = load("[source]\ntls = \"verify-ca\"\nca_file = \"ca.pem\"\n[drill]\nsandbox = \"external\"\nhost = \"d\"\ndatabase_prefix = \"drill_\"\n").unwrap();
        assert_eq!(config.source.tls.mode, TlsMode::VerifyCa);
        assert_eq!(config.source.tls.ca_file, Some(dir.path().join("ca.pem")));
        assert_eq!(config.restore.tls, config.source.tls, "the target inherits");
        let DrillSandbox::External { tls, .. } = &config.drill.sandbox else {
            panic!("external")
        };
        assert_eq!(tls, &Tls::default(), "a drill server does not inherit");
        let config = load(
            "[source]\ntls = \"verify-ca\"\nca_file = \"ca.pem\"\n[restore]\ntls = \"disabled\"\n",
        )
        .unwrap();
        assert_eq!(config.restore.tls.mode, TlsMode::Disabled);
        for (text, expect) in [
            (
                "[source]\ntls = \"verify-ca\"\n",
                "key `source.ca_file`: missing",
            ),
            (
                "[source]\ntls = \"verify-identity\"\nca_file = \"nope.pem\"\n",
                "key `source.ca_file`: cannot read",
            ),
            ("[source]\nca_file = \"not-pem\"\n", "not a PEM file"),
            (
                "[source]\ncert_file = \"ca.pem\"\n",
                "key `source.key_file`: missing",
            ),
            ("[source]\ntls = \"on\"\n", "source.tls"),
            (
                "[restore]\ntls = \"verify-ca\"\n",
                "key `restore.ca_file`: missing",
            ),
            (
                "[drill]\nsandbox = \"external\"\nhost = \"d\"\ndatabase_prefix = \"p\"\ntls = \"verify-ca\"\n",
                "key `drill.ca_file`: missing",
            ),
        ] {
            let err = load(text).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{text}");
            assert!(err.to_string().contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = |name: &str| match name {
            "COFFER_SOURCE_HOST" => Some("db.internal".to_string()),
            "COFFER_SOURCE_PASSWORD" => Some("s3cret".to_string()),
            "COFFER_REPOSITORY_URL" => Some("s3://bucket/some/prefix/".to_string()),
            "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
            _ => None,
        };
        let text = "[repository]\nurl = \"r\"\n[source]\nhost = \"localhost\"\n";
        let config = Config::parse(text, Path::new("c.toml"), &env).unwrap();
        assert_eq!(config.source.host, "db.internal");
        assert_eq!(config.source.password.expose(), "s3cret");
        let RepositoryLocation::S3(s3) = &config.repository.location else {
            panic!()
        };
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("bucket", "some/prefix")
        );
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}

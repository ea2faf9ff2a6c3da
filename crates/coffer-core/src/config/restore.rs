//! `[restore]`: the restore target (each key defaults to the source's), hooks and GTID handling.

use super::*;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRestore {
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

/// Resolves the `[restore]` section against the environment; each target key defaults to the
/// source's.
pub(super) fn resolve(
    ld: &Loader<'_>,
    raw: Option<RawRestore>,
    source: &SourceConfig,
) -> Result<RestoreConfig> {
    let restore = raw.unwrap_or_default();
    let target_port = match ld.env.var("COFFER_TARGET_PORT") {
        Some(v) => v.parse().map_err(|_| {
            ld.fail(
                "restore.target_port",
                &format!("COFFER_TARGET_PORT={v:?} is not a port number"),
            )
        })?,
        None => restore.target_port.unwrap_or(source.port),
    };
    let target_password = match ld.env.var("COFFER_TARGET_PASSWORD") {
        Some(v) => Secret::new(v),
        None => match &restore.target_password_file {
            Some(file) => ld.read_secret("restore.target_password_file", file)?,
            None => source.password.clone(),
        },
    };
    let target_tls = ld.read_tls(
        "restore",
        [&restore.ca_file, &restore.cert_file, &restore.key_file],
        restore.tls,
        &source.tls,
    )?;
    let restore = RestoreConfig {
        tls: target_tls,
        host: ld
            .env
            .var("COFFER_TARGET_HOST")
            .or(restore.target_host)
            .unwrap_or_else(|| source.host.clone()),
        port: target_port,
        user: ld
            .env
            .var("COFFER_TARGET_USER")
            .or(restore.target_user)
            .unwrap_or_else(|| source.user.clone()),
        password: target_password,
        before: restore.before.unwrap_or_default(),
        after: restore.after.unwrap_or_default(),
        hook_timeout: std::time::Duration::from_secs(match restore.hook_timeout_seconds {
            Some(0) => {
                return Err(ld.fail("restore.hook_timeout_seconds", &"must be at least 1"));
            }
            Some(n) => n,
            None => 600,
        }),
        gtid_domain: restore.gtid_domain,
    };
    Ok(restore)
}

//! `[source]`: the database server that is backed up.

use super::*;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
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

/// Resolves the `[source]` section against the environment.
pub(super) fn resolve(ld: &Loader<'_>, raw: Option<RawSource>) -> Result<SourceConfig> {
    let source = raw.unwrap_or_default();
    let port = match ld.env.var("COFFER_SOURCE_PORT") {
        Some(v) => v.parse().map_err(|_| {
            ld.fail(
                "source.port",
                &format!("COFFER_SOURCE_PORT={v:?} is not a port number"),
            )
        })?,
        None => source.port.unwrap_or(3306),
    };
    let password = match ld.env.var("COFFER_SOURCE_PASSWORD") {
        Some(v) => Secret::new(v),
        None => match &source.password_file {
            Some(file) => ld.read_secret("source.password_file", file)?,
            None => Secret::default(),
        },
    };
    let databases = source.databases.unwrap_or_default();
    for (i, name) in databases.iter().enumerate() {
        crate::names::check_database(name).map_err(|why| ld.fail("source.databases", &why))?;
        if databases[..i].contains(name) {
            return Err(ld.fail("source.databases", &format!("{name:?} is listed twice")));
        }
    }
    let source_tls = ld.read_tls(
        "source",
        [&source.ca_file, &source.cert_file, &source.key_file],
        source.tls,
        &Tls::default(),
    )?;
    let source = SourceConfig {
        tls: source_tls,
        host: ld
            .env
            .var("COFFER_SOURCE_HOST")
            .or(source.host)
            .unwrap_or_else(|| "127.0.0.1".into()),
        port,
        user: ld
            .env
            .var("COFFER_SOURCE_USER")
            .or(source.user)
            .unwrap_or_else(|| "root".into()),
        password,
        databases,
        allow_incomplete: source.allow_incomplete.unwrap_or(false),
    };
    Ok(source)
}

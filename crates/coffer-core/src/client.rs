//! Talking to MariaDB/MySQL: the server's own client tools, run with credentials in a private
//! defaults file, and an in-process connection (sqlx) for metadata.
//!
//! Passwords never appear on a command line: each tool gets `--defaults-file=PATH` naming a
//! temporary file readable only by us (mode 0600), removed when the [`DefaultsFile`] is dropped.
//!
//! A server that stops answering (frozen, or behind a network that silently drops packets) must
//! not hang a job: the connection and every metadata query wait at most the endpoint's
//! [`Stall`] timeout (`stall_timeout_seconds`), and then fail saying so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Row};

use crate::error::{Error, ErrorKind, Result};
use crate::secret::Secret;

/// How long setting up a connection may take when the stall timeout is longer: a handshake
/// takes milliseconds, and an unreachable server should be reported as such, quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name or address (always reached over TCP).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Account.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// TLS to the server, for sqlx and every client tool alike.
    pub tls: Tls,
    /// How long the server may leave a connection attempt or a query unanswered.
    pub stall: Stall,
}

/// How long a server may keep coffer waiting for an answer (a connection being set up, a
/// metadata query) before the wait fails as a stall (`stall_timeout_seconds`), and what the
/// failure counts as: a stalled source fails the backup, a stalled target the restore (both
/// exit 5, as a stalled dump does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// The longest wait.
    pub timeout: Duration,
    /// The kind of the error a stall fails with.
    pub kind: ErrorKind,
}

impl Stall {
    /// A source's: a stall fails the backup (kind `Backup`).
    pub fn source(timeout: Duration) -> Self {
        Self {
            timeout,
            kind: ErrorKind::Backup,
        }
    }

    /// A restore target's (also a drill's sandbox): a stall fails the restore (kind `Restore`).
    pub fn target(timeout: Duration) -> Self {
        Self {
            timeout,
            kind: ErrorKind::Restore,
        }
    }
}

impl Endpoint {
    /// The same endpoint with another stall timeout (the configured `stall_timeout_seconds`).
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall.timeout = timeout;
        self
    }

    /// Awaits `query` (anything that waits for this server's answer) for at most the stall
    /// timeout; past it, fails with the stall's kind, naming `what` and the endpoint. The
    /// query's own result is returned as it is.
    pub async fn bounded<F: std::future::IntoFuture>(
        &self,
        what: &str,
        query: F,
    ) -> Result<F::Output> {
        tokio::time::timeout(self.stall.timeout, query)
            .await
            .map_err(|_| self.stalled(what))
    }

    /// The error of a wait for this server that passed the stall timeout. Transient: the same
    /// call may succeed once the server answers again.
    pub fn stalled(&self, what: &str) -> Error {
        Error::new(
            self.stall.kind,
            format!(
                "{what}: {self} made no progress for {} s (stall_timeout_seconds)",
                self.stall.timeout.as_secs()
            ),
        )
        .transient()
    }
}

/// How a connection uses TLS: `tls = "…"` in `[source]`, `[restore]` and `[drill]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plaintext, even when the server offers TLS.
    Disabled,
    /// TLS when the server offers it, plaintext otherwise; the certificate is not checked.
    #[default]
    Preferred,
    /// TLS or no connection; the certificate is not checked.
    Required,
    /// TLS, and the server's certificate must chain to the CA in `ca_file`.
    VerifyCa,
    /// As [`TlsMode::VerifyCa`], and the certificate must also name the host connected to.
    VerifyIdentity,
}

impl TlsMode {
    /// The name in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Preferred => "preferred",
            Self::Required => "required",
            Self::VerifyCa => "verify-ca",
            Self::VerifyIdentity => "verify-identity",
        }
    }

    /// Whether the server's certificate is checked against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyIdentity)
    }
}

/// The TLS settings of one [`Endpoint`]. Paths are absolute (the config resolves them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// What is required of the connection.
    pub mode: TlsMode,
    /// PEM CA certificate(s) the server's chain is checked against; used by the verify modes.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for accounts that `REQUIRE X509` (always with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// Its PEM private key.
    pub key_file: Option<PathBuf>,
}

impl Tls {
    /// Plaintext: for a sandbox on loopback that offers no TLS.
    pub fn disabled() -> Self {
        Self {
            mode: TlsMode::Disabled,
            ..Self::default()
        }
    }

    /// The `[client]` options of MariaDB's tools (`mariadb`, `mariadb-dump`, `mariadb-binlog`
    /// all read them). Their `ssl` alone falls back to plaintext when the server offers no TLS,
    /// also with `ssl-ca`; only `ssl-verify-server-cert` (which also checks the host name) makes
    /// them refuse. So `required` and `verify-ca` rely on [`connect`], made first by every job
    /// to the same endpoint with the mode enforced, to refuse a server without TLS.
    fn client_options(&self) -> String {
        if self.mode == TlsMode::Disabled {
            return "skip-ssl\n".to_string();
        }
        let mut out = String::from("ssl\n");
        if self.mode.verifies()
            && let Some(ca) = &self.ca_file
        {
            out.push_str(&format!("ssl-ca={}\n", path_value(ca)));
        }
        // Stated either way: newer clients verify by default.
        let verify_host = u8::from(self.mode == TlsMode::VerifyIdentity);
        out.push_str(&format!("ssl-verify-server-cert={verify_host}\n"));
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            out.push_str(&format!(
                "ssl-cert={}\nssl-key={}\n",
                path_value(cert),
                path_value(key)
            ));
        }
        out
    }
}

fn path_value(path: &Path) -> String {
    option_value(&path.to_string_lossy())
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

impl From<&crate::config::SourceConfig> for Endpoint {
    fn from(source: &crate::config::SourceConfig) -> Self {
        Self {
            host: source.host.clone(),
            port: source.port,
            user: source.user.clone(),
            password: source.password.clone(),
            tls: source.tls.clone(),
            stall: Stall::source(crate::storage::DEFAULT_STALL_TIMEOUT),
        }
    }
}

impl From<&crate::config::RestoreConfig> for Endpoint {
    fn from(target: &crate::config::RestoreConfig) -> Self {
        Self {
            host: target.host.clone(),
            port: target.port,
            user: target.user.clone(),
            password: target.password.clone(),
            tls: target.tls.clone(),
            stall: Stall::target(crate::storage::DEFAULT_STALL_TIMEOUT),
        }
    }
}

/// A client program of the server (`mariadb-dump`, `mariadb`, `mariadb-binlog`) found on `PATH`.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Absolute path.
    pub path: PathBuf,
    /// First line of `--version`.
    pub version: String,
}

impl Tool {
    /// Finds the first of `names` on `PATH` (MariaDB's name first, MySQL's as fallback).
    pub fn find(names: &[&str]) -> Result<Tool> {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        for name in names {
            for dir in std::env::split_paths(&path_var) {
                let candidate = dir.join(name);
                if is_executable(&candidate) {
                    let version = std::process::Command::new(&candidate)
                        .arg("--version")
                        .stdin(Stdio::null())
                        .stderr(Stdio::null())
                        .output()
                        .ok()
                        .and_then(|out| String::from_utf8(out.stdout).ok())
                        .and_then(|text| text.lines().next().map(str::to_string))
                        .unwrap_or_default();
                    return Ok(Tool {
                        path: candidate,
                        version: version.trim().to_string(),
                    });
                }
            }
        }
        Err(Error::other(format!(
            "none of {} is installed (install mariadb-client)",
            names.join(", ")
        )))
    }

    /// Whether this is MariaDB's build of the tool (MariaDB-only options are then available).
    pub fn is_mariadb(&self) -> bool {
        self.version.contains("MariaDB")
            || self
                .path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mariadb"))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A private option file holding the connection settings for one child process.
#[derive(Debug)]
pub struct DefaultsFile {
    file: tempfile::NamedTempFile,
}

impl DefaultsFile {
    /// Writes a `[client]` group for `endpoint` to a new 0600 temporary file.
    pub fn new(endpoint: &Endpoint) -> Result<Self> {
        // 0600 in the private scratch folder; a run killed with -9 leaves it to the next run's
        // cleanup.
        let mut file = crate::scratch::file("client-", ".cnf")
            .map_err(|e| e.context("creating the client defaults file"))?;
        let text = format!(
            "[client]\nprotocol=TCP\nhost={}\nport={}\nuser={}\npassword={}\n{}",
            option_value(&endpoint.host),
            endpoint.port,
            option_value(&endpoint.user),
            option_value(endpoint.password.expose()),
            endpoint.tls.client_options(),
        );
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| Error::other(format!("writing the client defaults file: {e}")))?;
        Ok(Self { file })
    }

    /// The first argument every tool must get: `--defaults-file=PATH`.
    pub fn arg(&self) -> String {
        format!("--defaults-file={}", self.file.path().display())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Quotes a value for a MySQL option file (double quotes, backslash escapes).
fn option_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Opens one connection for metadata queries, with the endpoint's TLS mode enforced. Setting it
/// up may take the stall timeout, at most 10 s: past the stall timeout the error is the stall's,
/// past 10 s a database error (exit 3, as for any server that cannot be reached).
pub async fn connect(endpoint: &Endpoint) -> Result<MySqlConnection> {
    use sqlx::mysql::MySqlSslMode;
    let tls = &endpoint.tls;
    let mut options = MySqlConnectOptions::new()
        .host(&endpoint.host)
        .port(endpoint.port)
        .username(&endpoint.user)
        .password(endpoint.password.expose())
        .ssl_mode(match tls.mode {
            TlsMode::Disabled => MySqlSslMode::Disabled,
            TlsMode::Preferred => MySqlSslMode::Preferred,
            TlsMode::Required => MySqlSslMode::Required,
            TlsMode::VerifyCa => MySqlSslMode::VerifyCa,
            TlsMode::VerifyIdentity => MySqlSslMode::VerifyIdentity,
        })
        .disable_statement_logging();
    if tls.mode.verifies()
        && let Some(ca) = &tls.ca_file
    {
        options = options.ssl_ca(ca);
    }
    if tls.mode != TlsMode::Disabled
        && let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file)
    {
        options = options.ssl_client_cert(cert).ssl_client_key(key);
    }
    let limit = endpoint.stall.timeout.min(CONNECT_TIMEOUT);
    match tokio::time::timeout(limit, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(connect_error(endpoint, &e)),
        Err(_) if limit == endpoint.stall.timeout => Err(endpoint.stalled("connecting")),
        Err(_) => Err(Error::database(format!(
            "cannot connect to {endpoint}: timed out after {} s",
            limit.as_secs()
        ))
        .transient()),
    }
}

/// A failed connection, explained: a TLS failure names the mode and the CA file and is
/// permanent (retrying cannot change a certificate); anything else may pass on a retry.
fn connect_error(endpoint: &Endpoint, e: &sqlx::Error) -> Error {
    let cause = crate::error_chain(e);
    let tls = &endpoint.tls;
    // rustls' handshake errors reach sqlx as I/O errors wrapping them; their texts are rustls'.
    const HANDSHAKE: &[&str] = &[
        "invalid peer certificate",
        "received fatal alert",
        "peer is incompatible",
        "peer misbehaved",
    ];
    let tls_failed = match e {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => {
            io.get_ref().is_some() && HANDSHAKE.iter().any(|text| cause.contains(text))
        }
        _ => false,
    };
    if tls_failed {
        let mode = tls.mode.name();
        let what = match tls.ca_file.as_ref().filter(|_| tls.mode.verifies()) {
            Some(ca) if cause.contains("UnknownIssuer") || cause.contains("BadSignature") => {
                format!(
                    "TLS (tls = \"{mode}\"): the server's certificate is not signed by the CA in {}",
                    ca.display()
                )
            }
            // sqlx 0.8 with rustls ≥ 0.23.24 checks the name in verify-ca mode too
            // (launchbadge/sqlx#3793): say so rather than leave the operator puzzled.
            Some(ca) if tls.mode == TlsMode::VerifyCa && cause.contains("not valid for name") => {
                format!(
                    "TLS (tls = \"verify-ca\", ca_file {}): the certificate does not name {}, and coffer's own connection checks the name in this mode too (connect by a name the certificate carries)",
                    ca.display(),
                    endpoint.host
                )
            }
            Some(ca) => format!("TLS (tls = \"{mode}\", ca_file {})", ca.display()),
            None => format!("TLS (tls = \"{mode}\")"),
        };
        return Error::database(format!("cannot connect to {endpoint}: {what}: {cause}"));
    }
    // MariaDB refuses a plaintext client of a server with `require_secure_transport=ON` as
    // "access denied", like a wrong password.
    let refused = e
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|d| d.number() == 1045);
    let hint = if refused && tls.mode == TlsMode::Disabled {
        " (with tls = \"disabled\": a server with require_secure_transport=ON refuses connections without TLS this way)"
    } else {
        ""
    };
    Error::database(format!("cannot connect to {endpoint}: {cause}{hint}")).transient()
}

/// What a backup records about the server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `VERSION()`.
    pub version: String,
    /// `@@server_id`.
    pub server_id: u64,
    /// Whether the binary log is on.
    pub log_bin: bool,
    /// Databases that are not the server's own.
    pub user_databases: Vec<String>,
}

/// Databases that belong to the server, never backed up as data.
pub const SYSTEM_DATABASES: &[&str] = &["information_schema", "performance_schema", "mysql", "sys"];

/// Reads version, server id, binlog state and the list of user databases from `endpoint` (each
/// query waits at most its stall timeout).
pub async fn server_info(conn: &mut MySqlConnection, endpoint: &Endpoint) -> Result<ServerInfo> {
    const WHAT: &str = "reading server information";
    let fail = |e: sqlx::Error| {
        Error::database(format!(
            "reading server information: {}",
            crate::error_chain(&e)
        ))
    };
    // Casts keep the column types textual/numeric whatever the server's quirks with SHOW output.
    let query = sqlx::query("SELECT CAST(VERSION() AS CHAR), CAST(@@server_id AS UNSIGNED), CAST(@@log_bin AS UNSIGNED)")
        .fetch_one(&mut *conn);
    let row = endpoint.bounded(WHAT, query).await?.map_err(fail)?;
    let version: String = row.try_get(0).map_err(fail)?;
    let server_id: u64 = row.try_get(1).map_err(fail)?;
    let log_bin: u64 = row.try_get(2).map_err(fail)?;
    let query = sqlx::query(
        "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
    )
    .fetch_all(&mut *conn);
    let rows = endpoint.bounded(WHAT, query).await?.map_err(fail)?;
    let mut user_databases = Vec::new();
    for row in rows {
        let name: String = row.try_get(0).map_err(fail)?;
        if !SYSTEM_DATABASES.contains(&name.as_str()) {
            user_databases.push(name);
        }
    }
    Ok(ServerInfo {
        version,
        server_id,
        log_bin: log_bin != 0,
        user_databases,
    })
}

/// The account's privileges: `SHOW GRANTS` on this connection, parsed ([`crate::grants`]): on a fresh connection it lists
/// what a fresh session of the same account may do, its default role's and `PUBLIC`'s grants
/// included, which is what the dump tool's own session will be allowed. A line that does not
/// parse is a database error. Each query waits at most `endpoint`'s stall timeout.
pub async fn grants(
    conn: &mut MySqlConnection,
    endpoint: &Endpoint,
) -> Result<crate::grants::Grants> {
    const WHAT: &str = "reading grants";
    let fail = |e: sqlx::Error| Error::database(format!("{WHAT}: {}", crate::error_chain(&e)));
    let query = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)").fetch_one(&mut *conn);
    let account: String = endpoint.bounded(WHAT, query).await?.map_err(fail)?;
    let query = sqlx::query("SHOW GRANTS").fetch_all(&mut *conn);
    let rows = endpoint.bounded(WHAT, query).await?.map_err(fail)?;
    let mut lines = Vec::new();
    for row in rows {
        // SHOW output may come back as binary: decode bytes.
        let bytes: Vec<u8> = row
            .try_get(0)
            .map_err(|e| Error::database(format!("reading grants: {e}")))?;
        lines.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    crate::grants::Grants::parse(&account, &lines)
}

/// What a full backup of `databases` needs that `grants` (from [`grants`]) lacks: privileges
/// counted on `*.*` or, for those a database can hold, on each database as the server resolves
/// its grants; and what the dump would not see in each database (see
/// [`crate::grants::Grants::backup_privileges`]).
pub fn missing_backup_privileges(
    grants: &crate::grants::Grants,
    databases: &[String],
    log_bin: bool,
) -> crate::grants::BackupPrivileges {
    grants.backup_privileges(databases, log_bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_never_answers_fails_the_connection_as_a_stall() {
        // Accepts the connection (as the kernel does for a frozen server) and says nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port,
            user: "coffer".into(),
            password: Secret::new("pw"),
            tls: Tls::disabled(),
            stall: Stall::source(Duration::from_secs(1)),
        };
        let started = std::time::Instant::now();
        let err = connect(&endpoint).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(err.kind(), ErrorKind::Backup);
        assert!(err.is_transient());
        assert_eq!(
            err.to_string(),
            format!(
                "connecting: coffer@127.0.0.1:{port} made no progress for 1 s (stall_timeout_seconds)"
            )
        );
        let target = Endpoint {
            stall: Stall::target(Duration::from_secs(1)),
            ..endpoint
        };
        let err = target
            .bounded("reading grants", std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Restore);
        silent.abort();
    }

    #[test]
    fn option_values_are_quoted() {
        assert_eq!(option_value(r#"p"a\ss word#"#), r#""p\"a\\ss word#""#);
    }

    #[test]
    fn defaults_file_is_private_and_holds_the_password() {
        use std::os::unix::fs::PermissionsExt;
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: 3307,
            user: "coffer".into(),
            password: Secret::new("pw"),
            tls: Tls::default(),
            stall: Stall::source(Duration::from_secs(300)),
        };
        let file = DefaultsFile::new(&endpoint).unwrap();
        let mode = file.path().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            std::fs::read_to_string(file.path())
                .unwrap()
                .contains("password=\"pw\"")
        );
        assert!(!file.arg().contains("pw\""));
    }

    #[test]
    fn tls_modes_become_client_options() {
        let tls = |mode| Tls {
            mode,
            ca_file: Some("/etc/coffer/ca \"1\".pem".into()),
            cert_file: Some("/c.pem".into()),
            key_file: Some("/k.pem".into()),
        };
        let client = "ssl-cert=\"/c.pem\"\nssl-key=\"/k.pem\"\n";
        assert_eq!(tls(TlsMode::Disabled).client_options(), "skip-ssl\n");
        let unchecked = format!("ssl\nssl-verify-server-cert=0\n{client}");
        assert_eq!(tls(TlsMode::Preferred).client_options(), unchecked);
        assert_eq!(tls(TlsMode::Required).client_options(), unchecked);
        let ca = "ssl-ca=\"/etc/coffer/ca \\\"1\\\".pem\"\n";
        assert_eq!(
            tls(TlsMode::VerifyCa).client_options(),
            format!("ssl\n{ca}ssl-verify-server-cert=0\n{client}")
        );
        assert_eq!(
            tls(TlsMode::VerifyIdentity).client_options(),
            format!("ssl\n{ca}ssl-verify-server-cert=1\n{client}")
        );
        assert_eq!(
            Tls::default().client_options(),
            "ssl\nssl-verify-server-cert=0\n"
        );
    }

    #[test]
    fn missing_privileges_are_listed() {
        use crate::grants::Grants;
        let databases = ["app".to_string()];
        let all = Grants::parse(
            "root@localhost",
            &["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"],
        )
        .unwrap();
        assert!(missing_backup_privileges(&all, &databases, true).is_empty());
        let some = Grants::parse("b@%", &["GRANT SELECT, RELOAD ON *.* TO `b`@`%`"]).unwrap();
        let found = missing_backup_privileges(&some, &databases, true);
        assert_eq!(
            found.missing,
            vec![
                "LOCK TABLES (on app.* or *.*)",
                "BINLOG MONITOR",
                "REPLICATION SLAVE"
            ]
        );
        assert_eq!(
            found.unseen_text(),
            "views of app (needs SHOW VIEW on app.* or *.*), triggers of app (needs TRIGGER on app.* or *.*), events of app (needs EVENT on app.* or *.*)"
        );
    }
}

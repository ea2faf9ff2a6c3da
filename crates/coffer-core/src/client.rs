//! Talking to MariaDB/MySQL: the server's own client tools, run with credentials in a private
//! defaults file, and an in-process connection (sqlx) for metadata.
//!
//! Passwords never appear on a command line: each tool gets `--defaults-file=PATH` naming a
//! temporary file readable only by us (mode 0600), removed when the [`DefaultsFile`] is dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Row};

use crate::error::{Error, Result};
use crate::secret::Secret;

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
        // tempfile creates files with mode 0600 on Unix.
        let mut file = tempfile::Builder::new()
            .prefix("coffer-client-")
            .suffix(".cnf")
            .tempfile()
            .map_err(|e| Error::other(format!("creating the client defaults file: {e}")))?;
        let text = format!(
            "[client]\nprotocol=TCP\nhost={}\nport={}\nuser={}\npassword={}\n",
            option_value(&endpoint.host),
            endpoint.port,
            option_value(&endpoint.user),
            option_value(endpoint.password.expose()),
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

/// Opens one connection for metadata queries.
pub async fn connect(endpoint: &Endpoint) -> Result<MySqlConnection> {
    let options = MySqlConnectOptions::new()
        .host(&endpoint.host)
        .port(endpoint.port)
        .username(&endpoint.user)
        .password(endpoint.password.expose())
        .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled)
        .disable_statement_logging();
    match tokio::time::timeout(Duration::from_secs(10), options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(Error::database(format!(
            "cannot connect to {endpoint}: {}",
            crate::error_chain(&e)
        ))
        .transient()),
        Err(_) => Err(Error::database(format!(
            "cannot connect to {endpoint}: timed out after 10 s"
        ))
        .transient()),
    }
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

/// Reads version, server id, binlog state and the list of user databases.
pub async fn server_info(conn: &mut MySqlConnection) -> Result<ServerInfo> {
    let fail = |e: sqlx::Error| {
        Error::database(format!(
            "reading server information: {}",
            crate::error_chain(&e)
        ))
    };
    // Casts keep the column types textual/numeric whatever the server's quirks with SHOW output.
    let row = sqlx::query("SELECT CAST(VERSION() AS CHAR), CAST(@@server_id AS UNSIGNED), CAST(@@log_bin AS UNSIGNED)")
        .fetch_one(&mut *conn)
        .await
        .map_err(fail)?;
    let version: String = row.try_get(0).map_err(fail)?;
    let server_id: u64 = row.try_get(1).map_err(fail)?;
    let log_bin: u64 = row.try_get(2).map_err(fail)?;
    let rows = sqlx::query(
        "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(fail)?;
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

/// The account's privileges, as `SHOW GRANTS` lists them, upper-cased.
pub async fn grants(conn: &mut MySqlConnection) -> Result<Vec<String>> {
    let rows = sqlx::query("SHOW GRANTS")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database(format!("reading grants: {}", crate::error_chain(&e))))?;
    let mut out = Vec::new();
    for row in rows {
        // SHOW output may come back as binary: decode bytes.
        let bytes: Vec<u8> = row
            .try_get(0)
            .map_err(|e| Error::database(format!("reading grants: {e}")))?;
        out.push(String::from_utf8_lossy(&bytes).to_uppercase());
    }
    Ok(out)
}

/// The privileges a full backup needs that `grants` (from [`grants`]) lacks at the global level
/// (`ON *.*`). Per-database grants are not counted: a backup host's account is global.
pub fn missing_backup_privileges(grants: &[String], log_bin: bool) -> Vec<&'static str> {
    let global: Vec<&String> = grants.iter().filter(|g| g.contains(" ON *.* ")).collect();
    if global
        .iter()
        .any(|g| g.starts_with("GRANT ALL PRIVILEGES ON *.*"))
    {
        return Vec::new();
    }
    let has = |p: &str| global.iter().any(|g| g.contains(p));
    let mut missing = Vec::new();
    for privilege in [
        "SELECT",
        "SHOW VIEW",
        "TRIGGER",
        "EVENT",
        "LOCK TABLES",
        "RELOAD",
    ] {
        if !has(privilege) {
            missing.push(privilege);
        }
    }
    if log_bin && !(has("BINLOG MONITOR") || has("REPLICATION CLIENT") || has("SUPER")) {
        missing.push("BINLOG MONITOR");
    }
    // Incremental backups read the binary log over the replication protocol.
    if log_bin && !has("REPLICATION SLAVE") {
        missing.push("REPLICATION SLAVE");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn missing_privileges_are_listed() {
        let all = vec!["GRANT ALL PRIVILEGES ON *.* TO `ROOT`@`LOCALHOST`".to_string()];
        assert!(missing_backup_privileges(&all, true).is_empty());
        let some = vec!["GRANT SELECT, RELOAD ON *.* TO `B`@`%`".to_string()];
        assert_eq!(
            missing_backup_privileges(&some, true),
            vec![
                "SHOW VIEW",
                "TRIGGER",
                "EVENT",
                "LOCK TABLES",
                "BINLOG MONITOR",
                "REPLICATION SLAVE"
            ]
        );
    }
}

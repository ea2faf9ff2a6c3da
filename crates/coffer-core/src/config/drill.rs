//! `[drill]`: the recovery drill's sandbox, environment, app checks and SQL probes.

use super::*;

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
    /// "Files accessible": how many files of each source's newest snapshot are restored and
    /// checked (`files_sample`, default [`DEFAULT_FILES_SAMPLE`]; the newest and the largest
    /// file are always among them).
    pub files_sample: usize,
}

/// How many files the drill's "files accessible" item restores when `files_sample` is not set.
pub const DEFAULT_FILES_SAMPLE: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrill {
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
    files_sample: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawSandboxKind {
    Managed,
    External,
}

/// Resolves the `[drill]` section against the environment.
pub(super) fn resolve(ld: &Loader<'_>, raw: Option<RawDrill>) -> Result<DrillConfig> {
    let raw_drill = raw.unwrap_or_default();
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
                return Err(ld.fail(
                    "drill.database_prefix",
                    &"an external drill sandbox needs a prefix of letters, digits and _ (e.g. \"drill_\"), so it can never touch another database",
                ));
            }
            DrillSandbox::External {
                host: raw_drill.host.clone().ok_or_else(|| {
                    ld.fail("drill.host", &"an external drill sandbox needs its host")
                })?,
                port: raw_drill.port.unwrap_or(3306),
                user: raw_drill.user.clone().unwrap_or_else(|| "root".into()),
                password: match &raw_drill.password_file {
                    Some(file) => ld.read_secret("drill.password_file", file)?,
                    None => Secret::default(),
                },
                database_prefix: prefix,
                tls: ld.read_tls(
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
            return Err(ld.fail(
                &format!("drill.app_checks[{i}].timeout_seconds"),
                &"must be at least 1 second",
            ));
        }
    }
    for (i, check) in raw_drill.sql_checks.iter().flatten().enumerate() {
        if check.expect.is_some() == check.min_rows.is_some() {
            return Err(ld.fail(
                &format!("drill.sql_checks[{i}]"),
                &"give exactly one of `expect` or `min_rows`",
            ));
        }
    }
    if raw_drill.files_sample == Some(0) {
        return Err(ld.fail(
            "drill.files_sample",
            &"must be at least 1 (the newest and the largest file are always checked)",
        ));
    }
    let drill = DrillConfig {
        files_sample: raw_drill.files_sample.unwrap_or(DEFAULT_FILES_SAMPLE),
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
    Ok(drill)
}

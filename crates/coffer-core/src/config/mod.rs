//! The configuration file: one TOML document, resolved against the environment.
//!
//! Precedence, highest first: environment variables (`COFFER_*`, `AWS_*`), the file, defaults.
//! Unknown keys are errors. Secrets are read from `*_file` keys or environment variables into
//! [`Secret`]s, so they never reach `Debug` output, logs, or a child's command line.
//! Relative paths in the file are taken relative to the file's own folder.
//!
//! One module per section — [`repository`](RepositoryConfig), [`source`](SourceConfig),
//! [`restore`](RestoreConfig), [`binlog`](BinlogConfig), [`drill`](DrillConfig), [`retention`](RetentionConfig), [`notify`](NotifyConfig),
//! [`files`](FilesSource) (with [`config_backup`](ConfigBackup)) — each with its
//! typed settings, the raw form serde reads, and the function that resolves one into the other
//! through the `Loader` (messages naming file and key, relative paths, secret files, TLS).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::client::{Tls, TlsMode};
use crate::error::{Error, Result};
use crate::secret::Secret;

mod binlog;
mod daemon;
mod drill;
mod files;
mod notify;
mod repository;
mod restore;
mod retention;
mod source;

use binlog::RawBinlog;
pub use binlog::{BinlogConfig, DEFAULT_STREAM_SERVER_ID};
pub use daemon::{DaemonConfig, JobName, RUNBOOK_SCHEDULE, ScheduleConfig, When};
use daemon::{RawDaemon, RawSchedule};
use drill::RawDrill;
pub use drill::{AppCheck, DEFAULT_FILES_SAMPLE, DrillConfig, DrillSandbox, SqlCheck};
pub use files::{ConfigBackup, DEFAULT_MASK_KEYS, FilesLocation, FilesSource, GlobList};
use files::{RawConfigBackup, RawFiles};
use notify::RawNotify;
pub use notify::{EmailConfig, NotifyConfig, NotifyEvent, NotifyTarget, SmtpTls, check_url};
use repository::RawRepository;
pub use repository::{ChecksumMode, Compression, RepositoryConfig, RepositoryLocation, S3Config};
use restore::RawRestore;
pub use restore::RestoreConfig;
use retention::RawRetention;
pub use retention::RetentionConfig;
use source::RawSource;
pub use source::SourceConfig;

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
    /// The database that is backed up; `None` when the file has no `[source]` section and backs
    /// up only files or configuration. Read it through [`Config::source`], which says what is
    /// missing.
    pub source: Option<SourceConfig>,
    /// Where and how restores go.
    pub restore: RestoreConfig,
    /// Continuous binlog archiving (`coffer binlog stream`).
    pub binlog: BinlogConfig,
    /// The recovery drill (`coffer drill run`).
    pub drill: DrillConfig,
    /// How long each kind of backup is kept (`coffer prune`).
    pub retention: RetentionConfig,
    /// When the daemon runs each job.
    pub schedule: ScheduleConfig,
    /// How the daemon runs them.
    pub daemon: DaemonConfig,
    /// Where the daemon sends alerts (`[[notify]]`); empty: nowhere.
    pub notify: Vec<NotifyConfig>,
    /// The folders and S3 prefixes whose files are snapshotted (`[[files]]`); names unique.
    pub files: Vec<FilesSource>,
    /// The configuration files versioned on every change (`[[config_backup]]`).
    pub config_backup: Vec<ConfigBackup>,
}

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
    retention: Option<RawRetention>,
    schedule: Option<RawSchedule>,
    daemon: Option<RawDaemon>,
    notify: Option<Vec<RawNotify>>,
    files: Option<Vec<RawFiles>>,
    config_backup: Option<Vec<RawConfigBackup>>,
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
        let ld = Loader {
            path,
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            env,
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
                    (key, None) => ld.fail(key, &message),
                }
            })?;
        let state_dir = env
            .var("COFFER_STATE_DIR")
            .map(PathBuf::from)
            .or(raw.state_dir)
            .map(|p| ld.resolve(&p));

        let timezone_name = env
            .var("COFFER_TIMEZONE")
            .or(raw.timezone)
            .unwrap_or_else(|| "UTC".to_string());
        let timezone = jiff::tz::TimeZone::get(&timezone_name).map_err(|_| {
            ld.fail("timezone", &format!("unknown time zone {timezone_name:?} (want an IANA name such as \"Asia/Riyadh\")"))
        })?;

        let repository = repository::resolve(&ld, raw.repository)?;
        let files = files::resolve_files(&ld, raw.files)?;
        let config_backup = files::resolve_config_backups(&ld, raw.config_backup)?;
        // Without `[source]`, a file that backs up files or configuration backs up no database;
        // one that backs up nothing else keeps the default source, as it always has.
        let database = raw.source.is_some() || (files.is_empty() && config_backup.is_empty());
        let source = source::resolve(&ld, raw.source)?;
        let restore = restore::resolve(&ld, raw.restore, &source)?;
        let source = database.then_some(source);
        let binlog = binlog::resolve(&ld, raw.binlog)?;
        let drill = drill::resolve(&ld, raw.drill)?;
        let retention = retention::resolve(&ld, raw.retention)?;
        let sources = daemon::Sources {
            database: source.is_some(),
            files: !files.is_empty(),
            config: !config_backup.is_empty(),
        };
        let schedule = daemon::resolve_schedule(&ld, raw.schedule, &timezone, sources)?;
        let daemon = daemon::resolve_daemon(&ld, raw.daemon)?;
        let notify = notify::resolve(&ld, raw.notify)?;

        Ok(Config {
            restore,
            retention,
            schedule,
            daemon,
            notify,
            binlog,
            drill,
            path: path.to_path_buf(),
            timezone,
            timezone_name,
            state_dir,
            stall_timeout: std::time::Duration::from_secs(match raw.stall_timeout_seconds {
                Some(0) => return Err(ld.fail("stall_timeout_seconds", &"must be at least 1")),
                Some(n) => n,
                None => 300,
            }),
            repository,
            source,
            files,
            config_backup,
        })
    }
}

impl Config {
    /// The database to back up, for the commands that need one: a configuration error (exit 2)
    /// naming the file when it has no `[source]` section.
    pub fn source(&self) -> Result<&SourceConfig> {
        self.source.as_ref().ok_or_else(|| {
            Error::config(format!(
                "this command needs a [source] section in {}",
                self.path.display()
            ))
        })
    }

    /// The folder where this host keeps what must outlive a run (the chunk-id key of file
    /// snapshots, its copy of keys): `state_dir`, else `$XDG_STATE_HOME/coffer`, else
    /// `$HOME/.local/state/coffer`. A configuration error when none of them is set.
    pub fn persistent_state_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.state_dir {
            return Ok(dir.clone());
        }
        // A relative value would move with the working directory: not a place for state.
        let from_env = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        from_env("XDG_STATE_HOME")
            .map(|d| d.join("coffer"))
            .or_else(|| from_env("HOME").map(|h| h.join(".local/state/coffer")))
            .ok_or_else(|| {
                Error::config(format!(
                    "no folder to keep this host's state in: set state_dir in {}",
                    self.path.display()
                ))
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

/// What every section's resolution needs: the file (for messages and relative paths) and the
/// environment.
pub(crate) struct Loader<'a> {
    path: &'a Path,
    base: PathBuf,
    env: &'a dyn Env,
}

impl Loader<'_> {
    /// A configuration error naming the file and the key.
    fn fail(&self, key: &str, what: &dyn std::fmt::Display) -> Error {
        Error::config(format!("{}: key `{key}`: {what}", self.path.display()))
    }

    /// A path from the file, relative to the file's own folder.
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// Reads a secret file named by `key` (one trailing newline dropped), warning when others
    /// can read it.
    fn read_secret(&self, key: &str, file: &Path) -> Result<Secret> {
        let file = self.resolve(file);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            self.fail(
                key,
                &format!("cannot read secret file {}: {e}", file.display()),
            )
        })?;
        warn_if_shared(key, &file);
        Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
    }

    /// TLS of one connection (`SECTION.tls`, `.ca_file`, `.cert_file`, `.key_file`); a key
    /// not set takes its value from `inherit` (the restore target inherits the source's).
    fn read_tls(
        &self,
        section: &str,
        [ca_file, cert_file, key_file]: [&Option<PathBuf>; 3],
        mode: Option<TlsMode>,
        inherit: &Tls,
    ) -> Result<Tls> {
        let pem = |name: &str, file: &Option<PathBuf>, inherited: &Option<PathBuf>| {
            let Some(file) = file else {
                return Ok(inherited.clone());
            };
            let file = self.resolve(file);
            let key = format!("{section}.{name}");
            match std::fs::read(&file) {
                Ok(bytes) if memchr::memmem::find(&bytes, b"-----BEGIN ").is_some() => {
                    Ok(Some(file))
                }
                Ok(_) => Err(self.fail(&key, &format!("{} is not a PEM file", file.display()))),
                Err(e) => Err(self.fail(&key, &format!("cannot read {}: {e}", file.display()))),
            }
        };
        let tls = Tls {
            mode: mode.unwrap_or(inherit.mode),
            ca_file: pem("ca_file", ca_file, &inherit.ca_file)?,
            cert_file: pem("cert_file", cert_file, &inherit.cert_file)?,
            key_file: pem("key_file", key_file, &inherit.key_file)?,
        };
        if tls.mode.verifies() && tls.ca_file.is_none() {
            return Err(self.fail(
                    &format!("{section}.ca_file"),
                    &format!(
                        "missing: tls = \"{}\" checks the server's certificate against it (the CA certificate, PEM)",
                        tls.mode.name()
                    ),
                ));
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(_), None) => Err(self.fail(
                &format!("{section}.key_file"),
                &"missing: `cert_file` needs its key",
            )),
            (None, Some(_)) => Err(self.fail(
                &format!("{section}.cert_file"),
                &"missing: `key_file` needs its certificate",
            )),
            _ => Ok(tls),
        }
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
        assert_eq!(config.source().unwrap().port, 3306);
        assert_eq!(config.timezone_name, "UTC");
    }

    #[test]
    fn incomplete_backups_are_refused_unless_allowed() {
        let config = parse("[repository]\nurl = \"repo\"\n").unwrap();
        assert!(!config.source().unwrap().allow_incomplete);
        let allowed =
            parse("[repository]\nurl = \"repo\"\n[source]\nallow_incomplete = true\n").unwrap();
        assert!(allowed.source().unwrap().allow_incomplete);
        let err = parse("[repository]\nurl = \"repo\"\n[source]\nallow_incomplete = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.allow_incomplete"), "{err}");
    }

    #[test]
    fn without_a_schedule_table_the_runbook_schedule_runs() {
        let config = parse("[repository]\nurl = \"repo\"\n").unwrap();
        let jobs: Vec<JobName> = config.schedule.jobs.iter().map(|(j, _)| *j).collect();
        assert_eq!(
            jobs,
            [
                JobName::Full,
                JobName::Incremental,
                JobName::Drill,
                JobName::Prune
            ]
        );
        assert!(config.schedule.when(JobName::Verify).is_none());
        assert_eq!(config.daemon, DaemonConfig::default());
    }

    #[test]
    fn a_schedule_table_lists_exactly_its_jobs_and_each_is_checked() {
        let config = parse(
            "[repository]\nurl = \"repo\"\n[schedule]\nincremental = \"continuous\"\nverify = \"0 5 * * *\"\n",
        )
        .unwrap();
        assert!(matches!(
            config.schedule.when(JobName::Incremental),
            Some(When::Continuous)
        ));
        assert!(matches!(
            config.schedule.when(JobName::Verify),
            Some(When::Cron(_))
        ));
        assert!(config.schedule.when(JobName::Full).is_none());

        let err = parse("[repository]\nurl = \"repo\"\n[schedule]\nfull = \"0 25 * * *\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/coffer/coffer.toml: key `schedule.full`: hour field \"25\""),
            "{err}"
        );
        let err = parse("[repository]\nurl = \"repo\"\n[schedule]\ndrill = \"continuous\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("only the incremental job"), "{err}");
        let err = parse("[repository]\nurl = \"repo\"\n[schedule]\nbackup = \"0 2 * * *\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backup"), "{err}");
    }

    #[test]
    fn daemon_settings_default_and_are_checked() {
        let config = parse(
            "[repository]\nurl = \"repo\"\n[daemon]\nlisten = \"0.0.0.0:9999\"\nmax_concurrent_jobs = 1\nshutdown_grace_seconds = 5\n",
        )
        .unwrap();
        assert_eq!(config.daemon.listen.port(), 9999);
        assert_eq!(config.daemon.max_concurrent_jobs, 1);
        assert_eq!(config.daemon.shutdown_grace.as_secs(), 5);
        assert_eq!(config.daemon.retries, 2);
        let err = parse("[repository]\nurl = \"repo\"\n[daemon]\nlisten = \"nine\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `daemon.listen`"), "{err}");
        assert!(
            parse("[repository]\nurl = \"repo\"\n[daemon]\nmax_concurrent_jobs = 0\n").is_err()
        );
    }

    #[test]
    fn binlog_stream_settings_default_and_are_checked() {
        let config = parse("[repository]\nurl = \"repo\"\n").unwrap();
        assert_eq!(config.binlog, BinlogConfig::default());
        assert_eq!(config.binlog.ship_interval.as_secs(), 5);
        let set = parse("[repository]\nurl = \"repo\"\n[binlog]\nship_interval_seconds = 7\nstream_server_id = 77\n")
            .unwrap();
        assert_eq!(set.binlog.ship_interval.as_secs(), 7);
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
    fn notify_targets_resolve_with_defaults_and_secrets_stay_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("coffer.toml");
        std::fs::write(
            dir.path().join("slack-url"),
            "https://hooks.slack.example/services/T0/B0/sekrit\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("smtp-password"), "hunter2\n").unwrap();
        let text = "[repository]\nurl = \"r\"\n\
            [[notify]]\nkind = \"webhook\"\nurl = \"https://hooks.example/x\"\nevents = [\"failure\", \"disk\"]\n\
            [[notify]]\nkind = \"slack\"\nurl_file = \"slack-url\"\n\
            [[notify]]\nkind = \"email\"\nsmtp_host = \"smtp.example.com\"\nusername = \"coffer\"\npassword_file = \"smtp-password\"\nfrom = \"coffer@example.com\"\nto = [\"oncall@example.com\"]\n\
            [[notify]]\nkind = \"healthchecks\"\nurl = \"https://hc-ping.com/0b1c\"\njobs = [\"full\"]\n";
        let config = Config::parse(text, &config_path, &no_env).unwrap();
        assert_eq!(config.notify.len(), 4);
        assert_eq!(
            config.notify[0].events,
            [NotifyEvent::Failure, NotifyEvent::Disk]
        );
        assert_eq!(config.notify[1].events, NotifyEvent::ALL);
        let NotifyTarget::Slack { url } = &config.notify[1].target else {
            panic!("slack")
        };
        assert_eq!(
            url.expose(),
            "https://hooks.slack.example/services/T0/B0/sekrit"
        );
        let NotifyTarget::Email(email) = &config.notify[2].target else {
            panic!("email")
        };
        assert_eq!((email.smtp_port, email.tls), (587, SmtpTls::Starttls));
        assert_eq!(email.password.as_ref().unwrap().expose(), "hunter2");
        assert_eq!(config.notify[3].jobs, [JobName::Full]);
        assert!(config.notify[3].pings_for(JobName::Full));
        assert!(!config.notify[3].pings_for(JobName::Prune));
        let debug = format!("{config:?}");
        for secret in ["sekrit", "hunter2", "0b1c", "hooks.example"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(
            parse("[repository]\nurl = \"r\"\n")
                .unwrap()
                .notify
                .is_empty()
        );
    }

    #[test]
    fn notify_errors_name_the_entry_and_key() {
        let base = "[repository]\nurl = \"r\"\n[[notify]]\nkind = \"webhook\"\nurl = \"https://ok.example/\"\n[[notify]]\n";
        let email = "kind = \"email\"\nsmtp_host = \"mx\"\nfrom = \"a@b\"\n";
        for (text, expect) in [
            (
                "url = \"https://x.example\"\n",
                "key `notify[1].kind`: missing",
            ),
            (
                "kind = \"pager\"\n",
                "key `notify[1].kind`: \"pager\" is not one of",
            ),
            ("kind = \"slack\"\n", "key `notify[1].url`: missing"),
            (
                "kind = \"slack\"\nurl = \"ftp://x.example/t0k3n\"\n",
                "key `notify[1].url`: not an http:// or https:// URL",
            ),
            (
                "kind = \"webhook\"\nurl = \"https:///path\"\n",
                "notify[1].url`: the URL has no host",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://a.example\"\nurl_file = \"f\"\n",
                "notify[1].url_file`: set `url` or `url_file`, not both",
            ),
            (
                "kind = \"webhook\"\nurl_file = \"nope\"\n",
                "notify[1].url_file`: cannot read secret file",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://a.example\"\nsmtp_host = \"mx\"\n",
                "notify[1].smtp_host`: not a key of a \"webhook\" target",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://a.example\"\njobs = [\"full\"]\n",
                "notify[1].jobs`: not a key of a \"webhook\" target",
            ),
            (
                "kind = \"healthchecks\"\nurl = \"https://a.example\"\njobs = [\"backup\"]\n",
                "notify[1].jobs`: \"backup\" is not a job",
            ),
            (
                "kind = \"healthchecks\"\nurl = \"https://a.example\"\nevents = [\"failure\"]\n",
                "notify[1].events`: not a key of a \"healthchecks\" target",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://a.example\"\nevents = []\n",
                "notify[1].events`: empty",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://a.example\"\nevents = [\"sometimes\"]\n",
                "notify[1].events",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://a.example\"\nsecret = 1\n",
                "secret",
            ),
            (
                "kind = \"email\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n",
                "notify[1].smtp_host`: missing",
            ),
            (email, "notify[1].to`: missing"),
            (
                &format!("{email}to = [\"oncall\"]\n"),
                "notify[1].to`: \"oncall\" is not an address",
            ),
            (
                &format!("{email}to = [\"c@d\"]\ntls = \"maybe\"\n"),
                "notify[1].tls",
            ),
            (
                &format!("{email}to = [\"c@d\"]\nurl = \"https://a.example\"\n"),
                "notify[1].url`: not a key of a \"email\" target",
            ),
            (
                &format!("{email}to = [\"c@d\"]\nsmtp_port = 0\n"),
                "notify[1].smtp_port",
            ),
        ] {
            let err = parse(&format!("{base}{text}")).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{text}");
            let err = err.to_string();
            assert!(err.contains(expect), "{text}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
            assert!(!err.contains("t0k3n"), "the URL is not repeated: {err}");
        }
    }

    #[test]
    fn an_smtp_password_is_never_sent_in_clear_to_another_host() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("coffer.toml");
        std::fs::write(dir.path().join("pw"), "hunter2").unwrap();
        let entry = |host: &str| {
            format!(
                "[repository]\nurl = \"r\"\n[[notify]]\nkind = \"email\"\nsmtp_host = \"{host}\"\ntls = \"none\"\nusername = \"u\"\npassword_file = \"pw\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n"
            )
        };
        let err = Config::parse(&entry("smtp.example.com"), &config_path, &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `notify[0].tls`"), "{err}");
        let local = Config::parse(&entry("127.0.0.1"), &config_path, &no_env).unwrap();
        let NotifyTarget::Email(email) = &local.notify[0].target else {
            panic!("email")
        };
        assert_eq!((email.smtp_port, email.tls), (25, SmtpTls::None));
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
        assert_eq!(config.source().unwrap().tls, Tls::default());
        assert_eq!(config.source().unwrap().tls.mode, TlsMode::Preferred);
        let config = load("[source]\ntls = \"verify-ca\"\nca_file = \"ca.pem\"\n[drill]\nsandbox = \"external\"\nhost = \"d\"\ndatabase_prefix = \"drill_\"\n").unwrap();
        assert_eq!(config.source().unwrap().tls.mode, TlsMode::VerifyCa);
        assert_eq!(
            config.source().unwrap().tls.ca_file,
            Some(dir.path().join("ca.pem"))
        );
        assert_eq!(
            config.restore.tls,
            config.source().unwrap().tls,
            "the target inherits"
        );
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
        assert_eq!(config.source().unwrap().host, "db.internal");
        assert_eq!(config.source().unwrap().password.expose(), "s3cret");
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

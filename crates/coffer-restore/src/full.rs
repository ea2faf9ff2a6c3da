//! Loading a full backup's dump into a server: what each database is called on the target and
//! what it holds there now ([`plan`]), the dump streamed into the server's own `mariadb` client
//! ([`load_dump`]), and the mark a load that stopped half-way leaves ([`mark_half_restored`]).
//! The order around it (verify, refuse, hooks, replay) is [`crate::restore`]'s.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use coffer_core::cancel::Cancel;
use coffer_core::client::{self, DefaultsFile, Endpoint, Tool};
use coffer_core::job::JobContext;
use coffer_core::manifest::{BackupKind, Manifest};
use coffer_core::names;
use coffer_core::pipeline::{ArtifactReader, Progress};
use coffer_core::process::{self, Logged};
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind, Result};
use serde::Serialize;
use sqlx::Row;
use tokio_util::io::SyncIoBridge;
use tracing::warn;

/// What to restore where.
#[derive(Clone)]
pub struct RestoreOptions {
    /// The target server and account.
    pub target: Endpoint,
    /// Restore a single-database backup under this name instead of its own.
    pub rename_to: Option<String>,
    /// Drop target databases that exist and hold tables (confirmed by the caller).
    pub drop_existing: bool,
    /// age identity, for encrypted backups.
    pub identity: Option<age::x25519::Identity>,
    /// Shell commands run before the target is touched.
    pub before: Vec<String>,
    /// Shell commands run afterwards, also when the restore failed or was interrupted.
    pub after: Vec<String>,
    /// How long one hook may run before its process group is killed.
    pub hook_timeout: std::time::Duration,
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity is a private key: never printed.
        f.debug_struct("RestoreOptions")
            .field("target", &self.target)
            .field("rename_to", &self.rename_to)
            .field("drop_existing", &self.drop_existing)
            .field("identity", &self.identity.as_ref().map(|_| "***"))
            .field("before", &self.before)
            .field("after", &self.after)
            .field("hook_timeout", &self.hook_timeout)
            .finish()
    }
}

/// One database of the plan: its name in the backup and on the target.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseMapping {
    /// Name in the backup.
    pub from: String,
    /// Name on the target.
    pub to: String,
    /// Tables it holds on the target now (0 when absent or empty), views not counted.
    pub existing_tables: u64,
    /// Views it holds on the target now.
    pub existing_views: u64,
    /// Set when an earlier restore stopped half-way into this database: what it left as the
    /// database's comment ([`HALF_RESTORED`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_restored: Option<String>,
}

/// How a restore that stopped after it began loading marks each target database (as its
/// comment, `ALTER DATABASE … COMMENT`), so the rerun's refusal can say what state it is in,
/// whoever reruns it and from wherever.
pub const HALF_RESTORED: &str = "coffer: half-restored";

impl DatabaseMapping {
    /// Whether the target database holds anything a restore would replace.
    pub fn occupied(&self) -> bool {
        self.existing_tables + self.existing_views > 0
    }

    /// `3 tables`, `3 tables and 1 view`, and what an interrupted restore left there.
    pub fn holdings(&self) -> String {
        let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let held = match self.existing_views {
            0 => plural(self.existing_tables, "table"),
            views => format!(
                "{} and {}",
                plural(self.existing_tables, "table"),
                plural(views, "view")
            ),
        };
        match &self.half_restored {
            Some(note) => format!("{held}; {note}"),
            None => held,
        }
    }
}

/// Only a full backup is restored by id: binlogs and segments are replayed on top of one.
pub fn require_full(manifest: &Manifest) -> Result<()> {
    if manifest.kind == BackupKind::Full {
        return Ok(());
    }
    Err(Error::config(format!(
        "{} is a {} backup, and only a full backup can be restored by id: restore a full one, or replay binlogs with --at, --at-position or --at-gtid",
        manifest.id, manifest.kind
    )))
}

/// Works out the databases a restore of `manifest` writes, and what the target holds now.
pub async fn plan(manifest: &Manifest, options: &RestoreOptions) -> Result<Vec<DatabaseMapping>> {
    require_full(manifest)?;
    if let Some(name) = &options.rename_to {
        if manifest.databases.len() != 1 {
            return Err(Error::config(format!(
                "--database renames a single-database backup; {} holds {}",
                manifest.id,
                manifest.databases.len()
            )));
        }
        names::check_database(name).map_err(Error::config)?;
    }
    let mut conn = client::connect(&options.target).await?;
    let mut mappings = Vec::new();
    for from in &manifest.databases {
        let to = options.rename_to.clone().unwrap_or_else(|| from.clone());
        let what = format!("inspecting {to}");
        let query = sqlx::query(
            "SELECT CAST(COALESCE(SUM(TABLE_TYPE <> 'VIEW'), 0) AS SIGNED), CAST(COALESCE(SUM(TABLE_TYPE = 'VIEW'), 0) AS SIGNED) \
             FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
        )
        .bind(&to);
        let row = options
            .target
            .bounded(&what, query.fetch_one(&mut conn))
            .await?
            .map_err(|e| Error::database(format!("{what} on {}: {e}", options.target)))?;
        let existing_tables: i64 = row.try_get(0).map_err(|e| Error::database(e.to_string()))?;
        let existing_views: i64 = row.try_get(1).map_err(|e| Error::database(e.to_string()))?;
        // MariaDB 10.5+ keeps a schema comment; elsewhere the query fails and there is none.
        let query = sqlx::query(
            "SELECT CAST(SCHEMA_COMMENT AS CHAR) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        )
        .bind(&to);
        let half_restored = options
            .target
            .bounded(&what, query.fetch_optional(&mut conn))
            .await?
            .ok()
            .flatten()
            .and_then(|row| row.try_get::<Option<String>, _>(0).ok().flatten())
            .filter(|comment| comment.starts_with(HALF_RESTORED));
        mappings.push(DatabaseMapping {
            from: from.clone(),
            to,
            existing_tables: existing_tables as u64,
            existing_views: existing_views as u64,
            half_restored,
        });
    }
    Ok(mappings)
}

/// Leaves [`HALF_RESTORED`] as the comment of each target database a failed or interrupted
/// load may have written into. Best effort: the failure itself is what gets reported.
pub async fn mark_half_restored(
    options: &RestoreOptions,
    manifest: &Manifest,
    databases: &[DatabaseMapping],
    why: &Error,
    job: &JobContext,
) {
    let Ok(mut conn) = client::connect(&options.target).await else {
        return;
    };
    let reason = match job.cancel.reason() {
        Some(reason) => reason.to_string(),
        None => process::cap(&why.to_string(), 120),
    };
    let note = format!(
        "{HALF_RESTORED} by a restore of {} that stopped at {}: {reason}",
        manifest.id,
        job.clock.now().strftime("%Y-%m-%d %H:%M:%S UTC")
    );
    for db in databases {
        let sql = format!(
            "ALTER DATABASE {} COMMENT = {}",
            names::quote_ident(&db.to),
            names::quote_string(&process::cap(&note, 1000))
        );
        // A database the load never reached does not exist: nothing to mark.
        let _ = sqlx::query(&sql).execute(&mut conn).await;
    }
}

/// Loads the dump of `manifest` into the target under the planned names: drops the occupied
/// target databases first when `drop_existing`, then streams the verified dump through the
/// server's own client, killed when `cancel` fires.
pub async fn load_dump(
    repository: &Repository,
    manifest: &Manifest,
    options: &RestoreOptions,
    databases: &[DatabaseMapping],
    cancel: &Cancel,
    progress: Progress,
) -> Result<()> {
    if options.drop_existing {
        let mut conn = client::connect(&options.target).await?;
        for db in databases.iter().filter(|d| d.occupied()) {
            warn!(database = %db.to, tables = db.existing_tables, "dropping the existing database");
            sqlx::query(&format!("DROP DATABASE {}", names::quote_ident(&db.to)))
                .execute(&mut conn)
                .await
                .map_err(|e| Error::database(format!("dropping {}: {e}", db.to)))?;
        }
    }
    let tool = Tool::find(&["mariadb", "mysql"])?;
    let rename = options
        .rename_to
        .as_ref()
        .map(|to| (databases[0].from.clone(), to.clone()));
    for record in manifest.artifacts.iter().filter(|a| a.name == "dump.sql") {
        let object = coffer_core::pipeline::open_artifact(repository.storage(), record).await?;
        let record = record.clone();
        let identity = options.identity.clone();
        let defaults = DefaultsFile::new(&options.target)?;
        let tool_path = tool.path.clone();
        let rename = rename.clone();
        let progress = progress.clone();
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let reader = ArtifactReader::new(
                Box::new(SyncIoBridge::new(object)),
                &record,
                identity.as_ref(),
            )?;
            cancel.check()?;
            let mut child = process::tool_command(&tool_path)
                .arg(defaults.arg())
                .args(["--binary-mode", "--max-allowed-packet=1G"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .logged()
                .spawn()
                .map_err(|e| Error::other(format!("cannot start {}: {e}", tool_path.display())))?;
            let group = process::Registered::new(Some(child.id()), &cancel);
            let mut stdin = child.stdin.take().expect("stdin is piped");
            // Drained as the load runs, keeping only its end: the client may echo rows back.
            let stderr_tail = process::drain_tail(child.stderr.take().expect("stderr is piped"));
            let copied = feed(reader, &mut stdin, rename.as_ref(), &progress);
            drop(stdin);
            let status = child
                .wait()
                .map_err(|e| Error::other(format!("waiting for the client: {e}")))?;
            let stderr_text = process::tail_lines(&stderr_tail.join().unwrap_or_default(), 5);
            drop(group);
            drop(defaults);
            cancel.check()?;
            if !status.success() {
                return Err(Error::new(
                    ErrorKind::Restore,
                    format!("mariadb client failed ({status}): {stderr_text}"),
                ));
            }
            // A read error (damage found at the end, a lost connection to storage) outranks a
            // client that happened to accept what it got.
            copied
        })
        .await
        .map_err(|e| Error::other(format!("restore task failed: {e}")))??;
    }
    Ok(())
}

/// Whether a dump line refers to database `name` qualified: `` `name`.x `` or `name.x` (not
/// as part of a longer identifier).
pub(crate) fn names_database(line: &[u8], name: &str) -> bool {
    let text = String::from_utf8_lossy(line);
    if text.contains(&format!("{}.", names::quote_ident(name))) {
        return true;
    }
    let needle = format!("{name}.");
    text.match_indices(&needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == '.')
    })
}

/// Copies the decoded dump into the client, renaming the database on the lines that name it.
fn feed(
    reader: ArtifactReader,
    out: &mut dyn Write,
    rename: Option<&(String, String)>,
    progress: &Progress,
) -> Result<()> {
    let broken = |e: std::io::Error| -> Error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Error::new(ErrorKind::Restore, "the mariadb client stopped reading")
        } else {
            Error::from(e)
        }
    };
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let Some((from, to)) = rename else {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(Error::from)?;
            if n == 0 {
                return Ok(());
            }
            progress.add(n as u64);
            out.write_all(&buf[..n]).map_err(broken)?;
        }
    };
    let (quoted_from, quoted_to) = (names::quote_ident(from), names::quote_ident(to));
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(Error::from)?;
        if n == 0 {
            return Ok(());
        }
        progress.add(n as u64);
        // Only the statements that name the database itself: CREATE DATABASE and USE.
        if line.starts_with(b"CREATE DATABASE ") || line.starts_with(b"USE `") {
            let text = String::from_utf8_lossy(&line).replacen(&quoted_from, &quoted_to, 1);
            out.write_all(text.as_bytes()).map_err(broken)?;
        } else if !line.starts_with(b"INSERT INTO ") && names_database(&line, from) {
            // A definition (trigger, routine, view, event) that names the database explicitly
            // would, once renamed, read or write the original database, not the copy: stop
            // before the client executes it.
            let text = String::from_utf8_lossy(&line);
            return Err(Error::new(
                ErrorKind::Restore,
                format!(
                    "the backup names database `{from}` explicitly in a definition, so it cannot be restored under another name without acting on `{from}` itself: {}",
                    text.trim().chars().take(160).collect::<String>()
                ),
            ));
        } else {
            out.write_all(&line).map_err(broken)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names_database;

    #[test]
    fn qualified_references_to_the_database_are_found() {
        let trigger = b"/*!50003 TRIGGER app.payments_guard BEFORE INSERT ON app.payments FOR EACH ROW SET NEW.amount = 1 */;;\n";
        assert!(names_database(trigger, "app"));
        assert!(names_database(
            b"select `app`.`invoices`.`id` AS `id`",
            "app"
        ));
        assert!(!names_database(
            b"/*!50003 TRIGGER payments_guard BEFORE INSERT ON payments */",
            "app"
        ));
        assert!(!names_database(b"CALL myapp.x(); SELECT t.app.x", "app"));
        assert!(!names_database(b"CREATE TABLE `apps` (`id` int)", "app"));
    }
}

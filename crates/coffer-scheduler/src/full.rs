//! The full backup: one consistent logical dump of the source, streamed into the repository.

use std::sync::Arc;
use std::time::Duration;

use coffer_core::client::{self, DefaultsFile, Endpoint, Tool};
use coffer_core::config::Config;
use coffer_core::dump::{DUMP_OPTIONS, run_dump};
use coffer_core::grants::Grants;
use coffer_core::job::JobContext;
use coffer_core::lock::{self, LockKind};
use coffer_core::manifest::{BackupKind, Manifest, SourceInfo, new_backup_id};
use coffer_core::names;
use coffer_core::pipeline::{self, Encoding, Progress};
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind, Result};
use jiff::Timestamp;
use tracing::{Instrument, info, info_span, warn};

/// The logical name of the dump artifact.
pub const DUMP_ARTIFACT: &str = "dump.sql";

/// Runs a full backup of the configured source into `repository` and returns its manifest.
///
/// The whole backup runs under a shared repository lock (`backup full`), waiting at most
/// `lock_wait` while a prune holds the exclusive one ([`ErrorKind::Locked`], exit 7, naming the
/// holder, when it is not free by then); the lock is released on every way out, and a lock lost
/// half-way stops the backup like a cancellation (nothing is recorded) and is what the error
/// says.
///
/// The dump runs over TCP with `--single-transaction` (no global lock on InnoDB), recording the
/// snapshot's binlog coordinates and GTID position; routines, triggers and events are included and
/// blobs written in hex. Before it starts, the account's grants are checked: a dump that could
/// not see some objects fails the backup unless `[source] allow_incomplete` is set, which records
/// them in the manifest instead. Its output is scanned for expectations as it streams through the
/// pipeline. The manifest is written only after the artifact is stored; on any failure there is
/// no manifest, and whatever was stored under the backup's data folder is removed (still under
/// the lock).
pub async fn run_full_backup(
    config: &Config,
    repository: &Arc<Repository>,
    job: &JobContext,
    progress: Progress,
    lock_wait: Duration,
) -> Result<Manifest> {
    let source = config.source()?;
    let span = info_span!("backup.full", id = tracing::field::Empty, source = %format!("{}:{}", source.host, source.port));
    async {
        let guard = lock::acquire(
            repository,
            LockKind::Shared,
            "backup full",
            lock_wait,
            &job.clock,
            &job.cancel,
        )
        .await?;
        let locked = guard.job(job);
        // The backup starts once the lock is held: its id and start time say when it ran.
        let started_at = locked.clock.now();
        let id = new_backup_id(BackupKind::Full, started_at);
        tracing::Span::current().record("id", tracing::field::display(&id));
        let result = full_backup(config, repository, &locked, &id, started_at, progress).await;
        if let Err(err) = &result {
            // No manifest was written, so the backup does not exist; clear what it left.
            match repository.remove_data(&id).await {
                Ok(removed) if removed.is_empty() => {}
                Ok(removed) => info!(objects = removed.len(), "removed the objects of the failed backup"),
                Err(cleanup) => warn!(error = %cleanup, "objects of the failed backup under data/{id}/ are left behind"),
            }
            warn!(error = %err, "full backup failed");
        }
        guard.finish(result).await
    }
    .instrument(span)
    .await
}

async fn full_backup(
    config: &Config,
    repository: &Repository,
    job: &JobContext,
    id: &str,
    started_at: Timestamp,
    progress: Progress,
) -> Result<Manifest> {
    let source = config.source()?;
    let endpoint = Endpoint::from(source).with_stall_timeout(config.stall_timeout);
    let mut conn = client::connect(&endpoint).await?;
    let server = client::server_info(&mut conn, &endpoint).await?;
    // A fresh session's grants: what the dump tool's own fresh session will be allowed.
    let grants = client::grants(&mut conn, &endpoint).await?;
    drop(conn);
    let databases = if source.databases.is_empty() {
        server.user_databases.clone()
    } else {
        let system: Vec<&String> = source
            .databases
            .iter()
            .filter(|d| client::SYSTEM_DATABASES.contains(&d.as_str()))
            .collect();
        if !system.is_empty() {
            return Err(Error::config(format!(
                "source.databases names the server's own databases {system:?}: accounts and grants are not part of a logical backup"
            )));
        }
        let missing: Vec<&String> = source
            .databases
            .iter()
            .filter(|d| !server.user_databases.contains(d))
            .collect();
        if !missing.is_empty() {
            return Err(Error::config(format!(
                "source.databases names databases the server does not have: {missing:?}"
            )));
        }
        source.databases.clone()
    };
    for name in &databases {
        // Every user database when none are configured: the server's names are checked too.
        names::check_database(name)
            .map_err(|why| Error::config(format!("cannot back up {endpoint}: {why}")))?;
    }
    if databases.is_empty() {
        return Err(Error::new(
            ErrorKind::Backup,
            format!("{endpoint} has no databases to back up"),
        ));
    }
    if !server.log_bin {
        warn!(
            "the source writes no binary log: this backup records no coordinates and cannot anchor a point-in-time restore"
        );
    }

    let may_be_missing = check_privileges(config, &grants, &databases, server.log_bin)?;

    repository.ensure_initialized().await?;
    let tool = Tool::find(&["mariadb-dump", "mysqldump"])?;
    let defaults = DefaultsFile::new(&endpoint)?;
    let mut args = vec![defaults.arg()];
    args.extend(DUMP_OPTIONS.iter().map(|o| o.to_string()));
    if server.log_bin {
        if tool.is_mariadb() {
            args.extend(["--master-data=2".to_string(), "--gtid".to_string()]);
        } else {
            args.push("--source-data=2".to_string());
        }
    }
    // `--` ends the options: a database may be named `-x`.
    args.extend(["--databases".to_string(), "--".to_string()]);
    args.extend(databases.iter().cloned());

    let encoding = Encoding {
        compression: config.repository.compression,
        recipient: config.repository.encryption_recipient.clone(),
    };
    let key = Repository::data_key(id, &format!("{DUMP_ARTIFACT}{}", encoding.suffix()));
    info!(databases = ?databases, tool = %tool.version, key = %key, "dumping");
    let tool_path = tool.path.clone();
    let stall = config.stall_timeout;
    let cancel = job.cancel.clone();
    let (record, facts) = pipeline::store(
        repository.storage(),
        DUMP_ARTIFACT,
        &key,
        &encoding,
        progress,
        move |writer| {
            // `defaults` lives until the dump exits, then the file is removed.
            let facts = run_dump(&tool_path, &args, writer, stall, &cancel);
            drop(defaults);
            facts
        },
    )
    .await?;
    if server.log_bin && facts.binlog.is_none() {
        return Err(Error::new(
            ErrorKind::Backup,
            "the dump recorded no binlog coordinates although the server writes a binary log",
        ));
    }

    let source = SourceInfo {
        host: source.host.clone(),
        port: source.port,
        server_version: server.version,
        server_id: server.server_id,
        dump_tool: tool.version,
    };
    let mut manifest =
        Manifest::finished(id, BackupKind::Full, started_at, job.clock.now(), source);
    manifest.binlog = facts.binlog;
    manifest.databases = databases;
    manifest.artifacts = vec![record];
    manifest.expectations = facts.expectations;
    manifest.may_be_missing = may_be_missing;
    repository.write_manifest(&manifest, &job.cancel).await?;
    info!(
        bytes = manifest.size_bytes(),
        stored_bytes = manifest.stored_bytes(),
        seconds = manifest.duration_seconds,
        "full backup stored"
    );
    Ok(manifest)
}

/// Checks, before anything is dumped, that the account can see every object of `databases`.
///
/// What it cannot see fails the backup ([`ErrorKind::Backup`], naming each kind of object and
/// database with the privilege that would show it), unless `[source] allow_incomplete` is set:
/// then the backup goes ahead and the returned list goes into the manifest. Privileges the jobs
/// need that do not decide what the dump sees (`RELOAD`, `BINLOG MONITOR`, …) are a warning
/// here; `coffer check` reports them as failures.
fn check_privileges(
    config: &Config,
    grants: &Grants,
    databases: &[String],
    log_bin: bool,
) -> Result<Vec<String>> {
    let found = client::missing_backup_privileges(grants, databases, log_bin);
    if !found.missing.is_empty() {
        warn!(
            account = %grants.account,
            missing = %found.missing.join(", "),
            "the account lacks privileges a backup needs (coffer check lists them)"
        );
    }
    if found.unseen.is_empty() {
        return Ok(Vec::new());
    }
    if !config.source()?.allow_incomplete {
        return Err(Error::new(
            ErrorKind::Backup,
            format!(
                "the account {} cannot see {}: grant what is missing, or set [source] allow_incomplete = true to back up what it can see",
                grants.account,
                found.unseen_text()
            ),
        ));
    }
    warn!(
        account = %grants.account,
        may_be_missing = %found.unseen_text(),
        "allow_incomplete is set: backing up what the account can see; the manifest records what may be missing"
    );
    Ok(found.unseen.iter().map(ToString::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allow_incomplete: bool) -> Config {
        let text = format!(
            "[repository]\nurl = \"repo\"\n[source]\nallow_incomplete = {allow_incomplete}\n"
        );
        Config::parse(
            &text,
            std::path::Path::new("/tmp/coffer.toml"),
            &|_: &str| None,
        )
        .unwrap()
    }

    fn no_trigger() -> Grants {
        Grants::parse(
            "coffer_backup@%",
            &["GRANT SELECT, SHOW VIEW, EVENT, LOCK TABLES, RELOAD, BINLOG MONITOR, REPLICATION SLAVE ON *.* TO `coffer_backup`@`%`"],
        )
        .unwrap()
    }

    #[test]
    fn an_account_that_cannot_see_triggers_fails_the_backup() {
        let err =
            check_privileges(&config(false), &no_trigger(), &["app".into()], true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backup);
        assert!(
            err.to_string().contains(
                "the account coffer_backup@% cannot see triggers of app (needs TRIGGER on app.* or *.*)"
            ),
            "{err}"
        );
        assert!(err.to_string().contains("allow_incomplete"), "{err}");
    }

    #[test]
    fn allow_incomplete_records_what_may_be_missing() {
        let missing =
            check_privileges(&config(true), &no_trigger(), &["app".into()], true).unwrap();
        assert_eq!(
            missing,
            vec!["triggers of app (needs TRIGGER on app.* or *.*)"]
        );
        let full = Grants::parse(
            "coffer_backup@%",
            &["GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, BINLOG MONITOR, REPLICATION SLAVE ON *.* TO `coffer_backup`@`%`"],
        )
        .unwrap();
        assert!(
            check_privileges(&config(false), &full, &["app".into()], true)
                .unwrap()
                .is_empty()
        );
    }
}

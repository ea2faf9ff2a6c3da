//! The incremental backup: archive every closed binary log of the source over the replication
//! protocol (the backup host reads nothing from the database host's disk).

use std::sync::Arc;
use std::time::Duration;

use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::lock::{self, LockKind};
use coffer_core::manifest::Manifest;
use coffer_core::pipeline::Progress;
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind, Result};
use tracing::{Instrument, info, info_span};

use crate::archiver::BinlogSource;

/// Archives the source's closed binlogs that the repository lacks, oldest first, one backup of
/// kind `binlog` each. The active binlog is rotated first (`FLUSH BINARY LOGS`) when it holds
/// transactions the archive lacks, so a run leaves nothing committed unarchived; a run with
/// nothing new changes nothing. Returns the new manifests.
///
/// The run holds a shared repository lock (`backup incremental`) throughout, waiting at most
/// `lock_wait` for a prune's exclusive one (exit 7 naming the holder when it is not free by
/// then), released on every way out; a lock lost half-way stops the run, and the error says so.
pub async fn run_incremental_backup(
    config: &Config,
    repository: &Arc<Repository>,
    job: &JobContext,
    progress: Progress,
    lock_wait: Duration,
) -> Result<Vec<Manifest>> {
    let source = config.source()?;
    let span =
        info_span!("backup.incremental", source = %format!("{}:{}", source.host, source.port));
    async {
        let guard = lock::acquire(
            repository,
            LockKind::Shared,
            "backup incremental",
            lock_wait,
            &job.clock,
            &job.cancel,
        )
        .await?;
        let locked = guard.job(job);
        let result = incremental(config, repository, &locked, progress).await;
        guard.finish(result).await
    }
    .instrument(span)
    .await
}

async fn incremental(
    config: &Config,
    repository: &Repository,
    job: &JobContext,
    progress: Progress,
) -> Result<Vec<Manifest>> {
    let source = BinlogSource::connect(config, repository, job).await?;
    repository.ensure_initialized().await?;
    let manifests = repository.list().await?;
    let binlogs = source.server_binlogs(&manifests, true).await?;
    // The last file is the one being written.
    let closed = &binlogs.on_server[..binlogs.on_server.len().saturating_sub(1)];
    let to_fetch: Vec<&String> = closed
        .iter()
        .filter(|f| !binlogs.archived_whole.contains(*f))
        .collect();

    let mut archived = Vec::new();
    for file in to_fetch {
        // mariadb-binlog --raw writes files, not a stream: fetch into a private temp folder,
        // then store from there (the file is on local disk once, never in memory).
        let scratch = coffer_core::scratch::dir("binlog-")?;
        let local = source.fetch_closed(file, scratch.path()).await?;
        archived.push(source.archive_whole(file, &local, progress.clone()).await?);
    }
    if !archived.is_empty() {
        // Segments a stream shipped of these files are now redundant.
        source.remove_superseded_segments().await;
    }
    info!(
        archived = archived.len(),
        on_server = binlogs.on_server.len(),
        "incremental backup done"
    );
    if let Some(gap) = binlogs.gap_message() {
        return Err(Error::new(ErrorKind::Backup, gap));
    }
    Ok(archived)
}

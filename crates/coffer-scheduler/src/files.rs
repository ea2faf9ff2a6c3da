//! The file snapshot job, [`run_files_backup`]: one snapshot of each `[[files]]` source, each
//! under the repository's shared lock, its manifest written last.
//!
//! The newest snapshot of the same source is the parent: files whose size, times and inode are
//! unchanged keep its chunks unread. An encrypted repository's listings cannot be read on a
//! backup host that holds only the recipient, so there the parent is the local copy of the last
//! listing this host wrote, when it has one, and otherwise every file is read again (its
//! unchanged chunks are still recognised by their ids and not stored twice).

use std::sync::Arc;
use std::time::Duration;

use coffer_core::config::{Config, FilesLocation, FilesSource};
use coffer_core::error::{Error, ErrorKind, Result};
use coffer_core::job::JobContext;
use coffer_core::lock::{self, LockKind, host_name};
use coffer_core::repository::Repository;
use coffer_core::storage::S3Objects;
use coffer_files::backup::{Filters, SnapshotOptions, take_snapshot};
use coffer_files::chunk_id;
use coffer_files::s3source::take_s3_snapshot;
use coffer_files::snapshot::{self, SnapshotManifest, SourceKind, StoredStats};
use coffer_files::store::ChunkStore;
use tracing::{Instrument, info, info_span, warn};

/// What to snapshot.
#[derive(Debug, Clone, Default)]
pub struct FilesOptions {
    /// Only the source of this name (every `[[files]]` source when `None`).
    pub source: Option<String>,
    /// Read every file, whatever the parent snapshot says.
    pub full_scan: bool,
}

/// The sources a run covers: all, or the one named (a configuration error naming the known
/// names when there is none of that name, or no `[[files]]` at all).
pub fn selected_sources<'c>(
    config: &'c Config,
    only: Option<&str>,
) -> Result<Vec<&'c FilesSource>> {
    if config.files.is_empty() {
        return Err(Error::config(format!(
            "no [[files]] source in {}",
            config.path.display()
        )));
    }
    match only {
        None => Ok(config.files.iter().collect()),
        Some(name) => config
            .files
            .iter()
            .find(|s| s.name == name)
            .map(|s| vec![s])
            .ok_or_else(|| {
                let known: Vec<&str> = config.files.iter().map(|s| s.name.as_str()).collect();
                Error::config(format!(
                    "no [[files]] source named {name:?} (there are: {})",
                    known.join(", ")
                ))
            }),
    }
}

/// Takes one snapshot of each selected source, in order. A source that fails does not stop the
/// others; the run then fails with every failure named, after the others' snapshots are stored.
pub async fn run_files_backup(
    config: &Config,
    repository: &Arc<Repository>,
    job: &JobContext,
    options: &FilesOptions,
    lock_wait: Duration,
) -> Result<Vec<SnapshotManifest>> {
    let sources = selected_sources(config, options.source.as_deref())?;
    let state_dir = config.persistent_state_dir()?;
    let recipient = config.repository.recipient()?;
    repository.ensure_initialized().await?;
    let mut taken = Vec::new();
    let mut failures: Vec<(String, Error)> = Vec::new();
    for source in sources {
        let span = info_span!("backup.files", source = %source.name, id = tracing::field::Empty);
        let result = async {
            let guard = lock::acquire(
                repository,
                LockKind::Shared,
                "backup files",
                lock_wait,
                &job.clock,
                &job.cancel,
            )
            .await?;
            let locked = guard.job(job);
            let result = snapshot_source(
                repository,
                &locked,
                source,
                options.full_scan,
                &state_dir,
                recipient.as_ref(),
                config.stall_timeout,
            )
            .await;
            guard.finish(result).await
        }
        .instrument(span)
        .await;
        match result {
            Ok(manifest) => taken.push(manifest),
            Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                warn!(source = %source.name, error = %e, "file snapshot failed");
                failures.push((source.name.clone(), e));
            }
        }
    }
    match failures.len() {
        0 => Ok(taken),
        1 => {
            let (name, e) = failures.pop().expect("one failure");
            Err(e.context(format!("files source {name:?}")))
        }
        _ => {
            let kind = failures[0].1.kind();
            let text: Vec<String> = failures
                .iter()
                .map(|(name, e)| format!("{name:?}: {e}"))
                .collect();
            Err(Error::new(
                kind,
                format!(
                    "{} files sources failed: {}",
                    failures.len(),
                    text.join("; ")
                ),
            ))
        }
    }
}

async fn snapshot_source(
    repository: &Arc<Repository>,
    job: &JobContext,
    source: &FilesSource,
    full_scan: bool,
    state_dir: &std::path::Path,
    recipient: Option<&age::x25519::Recipient>,
    stall_timeout: Duration,
) -> Result<SnapshotManifest> {
    let started_at = job.clock.now();
    let id = snapshot::new_snapshot_id(started_at);
    tracing::Span::current().record("id", tracing::field::display(&id));
    let storage = repository.storage();
    let key = chunk_id::load_or_create(storage, state_dir, recipient).await?;
    let mut store = ChunkStore::open(storage, key, recipient.cloned()).await?;
    if recipient.is_some() {
        // This host cannot decrypt listings: it keeps its own plain copy of the last one.
        let local = chunk_id::local_key_path(state_dir, storage)
            .with_file_name("listings")
            .join(&source.name);
        store = store.with_local_copies(local)?;
    }
    let existing = snapshot::list(repository).await?;
    let parent = snapshot::newest(&existing, Some(&source.name));
    let parent = match parent {
        Some(p)
            if recipient.is_some() && !p.snapshot.listing.iter().all(|id| store.has_local(id)) =>
        {
            info!(
                parent = %p.id,
                "the repository is encrypted and this host has no copy of the last listing: every file is read (unchanged chunks are still not stored again)"
            );
            None
        }
        other => other,
    };
    let filters = Filters::new(&source.include.patterns, &source.exclude.patterns)?;
    let snapshot_options = SnapshotOptions {
        name: Some(source.name.clone()),
        full_scan,
        fail_on_unreadable: source.fail_on_unreadable,
    };
    let (kind, location, summary) = match &source.location {
        FilesLocation::Folder(path) => {
            let summary = take_snapshot(
                &mut store,
                path,
                &filters,
                parent.map(|p| &p.snapshot),
                &snapshot_options,
            )
            .await?;
            (SourceKind::Folder, path.display().to_string(), summary)
        }
        FilesLocation::S3(s3) => {
            let objects = S3Objects::new(s3.clone()).with_stall_timeout(stall_timeout);
            let summary = take_s3_snapshot(
                &mut store,
                &objects,
                &filters,
                parent.map(|p| &p.snapshot),
                &snapshot_options,
            )
            .await?;
            (SourceKind::S3, objects.url(), summary)
        }
    };
    job.cancel.check()?;
    let finished_at = job.clock.now();
    let manifest = SnapshotManifest {
        format_version: snapshot::SNAPSHOT_FORMAT_VERSION,
        id,
        started_at,
        finished_at,
        duration_seconds: (finished_at.as_millisecond() - started_at.as_millisecond()).max(0)
            as f64
            / 1000.0,
        coffer_version: env!("CARGO_PKG_VERSION").to_string(),
        host: host_name(),
        source: source.name.clone(),
        source_kind: kind,
        location,
        parent: parent.map(|p| p.id.clone()),
        full_scan,
        stored: StoredStats::from(store.stats()),
        snapshot: summary,
        extra: Default::default(),
    };
    snapshot::write(repository, &manifest, &job.cancel).await?;
    // Only now: until the manifest is stored the parent is still the last snapshot.
    store.forget_local_except(&manifest.snapshot.listing.iter().copied().collect());
    info!(
        id = %manifest.id,
        entries = manifest.snapshot.entries,
        read = manifest.snapshot.read_files,
        reused = manifest.snapshot.reused_files,
        new_bytes = manifest.stored.new_bytes,
        skipped = manifest.snapshot.skipped_count,
        "file snapshot stored"
    );
    Ok(manifest)
}

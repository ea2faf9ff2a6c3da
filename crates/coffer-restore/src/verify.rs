//! `backup verify`: read every artifact of a backup back from storage and prove it intact.

use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use coffer_core::dumpscan::DumpScanner;
use coffer_core::job::JobContext;
use coffer_core::lock::{self, LockKind};
use coffer_core::manifest::Manifest;
use coffer_core::pipeline::{self, ArtifactReader, ArtifactRecord};
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind, Result};
use serde::Serialize;
use tokio_util::io::SyncIoBridge;
use tracing::{Instrument, info, info_span};

/// How far an artifact was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckDepth {
    /// Size and SHA-256 of the stored bytes only (encrypted, no identity given).
    Digest,
    /// Digest, then decrypted and decompressed to the end.
    Decoded,
    /// Decoded, and the dump's tables, row counts and data digests equal the manifest's.
    Expectations,
}

/// The outcome for one artifact.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactCheck {
    /// Object key.
    pub key: String,
    /// Whether it passed.
    pub ok: bool,
    /// How deep the check went.
    pub depth: CheckDepth,
    /// What was wrong, if anything.
    pub error: Option<String>,
}

/// The outcome for a backup.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Backup id.
    pub backup_id: String,
    /// One entry per artifact.
    pub artifacts: Vec<ArtifactCheck>,
}

impl VerifyReport {
    /// Whether every artifact passed.
    pub fn ok(&self) -> bool {
        self.artifacts.iter().all(|a| a.ok)
    }
}

/// `backup verify ID`: resolves `id` (`latest` too) and reads back every artifact of that
/// backup ([`verify_backup`]), all under a shared repository lock (`verify`; see
/// [`read_locked`]), so no prune deletes the backup while it is read.
pub async fn verify_id(
    repository: &Arc<Repository>,
    id: &str,
    identity: Option<&age::x25519::Identity>,
    job: &JobContext,
    lock_wait: Duration,
) -> Result<(Manifest, VerifyReport)> {
    read_locked(repository, "verify", lock_wait, job, async {
        let manifest = repository.resolve(id).await?;
        let report = verify_backup(repository, &manifest, identity).await?;
        Ok((manifest, report))
    })
    .await
}

/// Runs `work`, which only reads the repository, under a shared repository lock for `purpose`:
/// waits at most `lock_wait` while a prune holds the exclusive one ([`ErrorKind::Locked`],
/// exit 7, naming the holder), releases it however `work` ends, and stops `work` (dropping it:
/// it holds nothing that needs undoing) when `job` is cancelled or the lock is lost, with the
/// error that says which.
pub async fn read_locked<T>(
    repository: &Arc<Repository>,
    purpose: &str,
    lock_wait: Duration,
    job: &JobContext,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let guard = lock::acquire(
        repository,
        LockKind::Shared,
        purpose,
        lock_wait,
        &job.clock,
        &job.cancel,
    )
    .await?;
    let stop = guard.cancel().clone();
    let result = tokio::select! {
        result = work => result,
        () = stop.cancelled() => Err(stop
            .check()
            .err()
            .unwrap_or_else(|| Error::new(ErrorKind::Interrupted, "stopped"))),
    };
    guard.finish(result).await
}

/// Reads back every artifact of `manifest`. With `identity`, encrypted artifacts are decrypted
/// too; without, their stored bytes are still checked against the recorded digest. The caller
/// holds a shared repository lock ([`verify_id`] and the daemon's verify job take one).
pub async fn verify_backup(
    repository: &Repository,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
) -> Result<VerifyReport> {
    let span = info_span!("backup.verify", id = %manifest.id);
    async {
        let mut artifacts = Vec::new();
        for record in &manifest.artifacts {
            let check = verify_artifact(repository, manifest, record, identity).await;
            let (ok, depth, error) = match check {
                Ok(depth) => (true, depth, None),
                // A missing object or a bad byte is a finding, not a failure of the command.
                Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::NotFound) => {
                    (false, CheckDepth::Digest, Some(e.to_string()))
                }
                Err(e) => return Err(e),
            };
            info!(key = %record.key, ok, "artifact checked");
            artifacts.push(ArtifactCheck {
                key: record.key.clone(),
                ok,
                depth,
                error,
            });
        }
        Ok(VerifyReport {
            backup_id: manifest.id.clone(),
            artifacts,
        })
    }
    .instrument(span)
    .await
}

async fn verify_artifact(
    repository: &Repository,
    manifest: &Manifest,
    record: &ArtifactRecord,
    identity: Option<&age::x25519::Identity>,
) -> Result<CheckDepth> {
    if record.encrypted && identity.is_none() {
        pipeline::verify_stored(repository.storage(), record).await?;
        return Ok(CheckDepth::Digest);
    }
    match decode_artifact(repository, manifest, record, identity).await {
        // Decoding usually trips over damage before the end, where the digest is checked; the
        // digest is the authoritative finding, so name it when it is what differs.
        Err(e) if e.kind() == ErrorKind::Integrity => {
            match pipeline::verify_stored(repository.storage(), record).await {
                Err(digest) => Err(digest),
                Ok(()) => Err(e),
            }
        }
        other => other,
    }
}

async fn decode_artifact(
    repository: &Repository,
    manifest: &Manifest,
    record: &ArtifactRecord,
    identity: Option<&age::x25519::Identity>,
) -> Result<CheckDepth> {
    let object = coffer_core::pipeline::open_artifact(repository.storage(), record).await?;
    let record_owned = record.clone();
    let identity = identity.cloned();
    let is_dump = record.name == "dump.sql";
    let expected = manifest.expectations.clone();
    tokio::task::spawn_blocking(move || -> Result<CheckDepth> {
        let raw = SyncIoBridge::new(object);
        let mut reader = ArtifactReader::new(Box::new(raw), &record_owned, identity.as_ref())?;
        let mut scanner = is_dump.then(DumpScanner::new);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|e| decode_error(&record_owned.key, e))?;
            if n == 0 {
                break;
            }
            if let Some(scanner) = &mut scanner {
                scanner.feed(&buf[..n]);
            }
        }
        let Some(scanner) = scanner else { return Ok(CheckDepth::Decoded) };
        let facts = scanner.finish();
        if facts.expectations != expected {
            return Err(Error::integrity(format!(
                "{}: the dump's tables, row counts or data digests differ from the manifest's expectations{}",
                record_owned.key,
                first_difference(&expected, &facts.expectations)
            )));
        }
        Ok(CheckDepth::Expectations)
    })
    .await
    .map_err(|e| Error::other(format!("verification task failed: {e}")))?
}

/// Keeps integrity errors as they are; anything else while decoding means undecodable data.
fn decode_error(key: &str, err: std::io::Error) -> Error {
    let err = Error::from(err);
    match err.kind() {
        ErrorKind::Integrity | ErrorKind::Storage | ErrorKind::NotFound => err,
        _ => Error::integrity(format!("{key}: cannot be decoded: {err}")),
    }
}

fn first_difference(
    expected: &coffer_core::manifest::Expectations,
    actual: &coffer_core::manifest::Expectations,
) -> String {
    for db in &expected.databases {
        let Some(found) = actual.databases.iter().find(|d| d.name == db.name) else {
            return format!(" (database {} is missing)", db.name);
        };
        for table in &db.tables {
            match found.tables.iter().find(|t| t.name == table.name) {
                None => return format!(" (table {}.{} is missing)", db.name, table.name),
                Some(t) if t.rows != table.rows => {
                    return format!(
                        " (table {}.{}: {} rows in the dump, {} recorded)",
                        db.name, table.name, t.rows, table.rows
                    );
                }
                Some(t) if t.sha256 != table.sha256 => {
                    return format!(" (table {}.{}: data digest differs)", db.name, table.name);
                }
                Some(_) => {}
            }
        }
    }
    String::new()
}

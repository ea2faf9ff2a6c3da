//! One run of a `[[config_backup]]` table: read every file, store changed contents, and write a
//! version only when a content changed.
//!
//! Order of writes, so a version never names what is not stored: the chunks (packs, then the
//! index file naming them, by [`ChunkStore::flush`]), then the version manifest, then the git
//! mirror's commit. A run that fails before the manifest leaves at most unreferenced chunks.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use coffer_core::config::{Config, ConfigBackup};
use coffer_core::error::{Error, Result};
use coffer_core::job::JobContext;
use coffer_core::repository::Repository;
use coffer_files::chunk_id;
use coffer_files::chunker::Chunker;
use coffer_files::store::ChunkStore;
use jiff::Timestamp;
use serde::Serialize;

use crate::mask::Masker;
use crate::paths::Unreadable;
use crate::version::{Change, ChangeKind, FORMAT_VERSION, FileRecord, Version};

/// What one run of one table did.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    /// The table's name.
    pub name: String,
    /// The version written, if a content changed (`None`: nothing changed, nothing written).
    pub version: Option<String>,
    /// The paths that changed (empty when no version was written).
    pub changes: Vec<Change>,
    /// How many files the table holds now.
    pub files: usize,
    /// Paths that could not be read (reported, not fatal).
    pub unreadable: Vec<Unreadable>,
    /// Whether the repository stores the contents in clear (no age recipient configured).
    pub unencrypted: bool,
    /// The git mirror's new commit, when one is configured and a version was written.
    pub mirror_commit: Option<String>,
}

/// The warning every run without an age recipient gives: `.env` files hold secrets.
pub const UNENCRYPTED_WARNING: &str = "no encryption recipient ([repository] encryption_recipient): configuration versions, which often hold secrets, are stored in clear";

static CAPTURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The future of [`capture_all`]: boxed and `Send`, so the daemon can run it on any worker.
pub type CaptureAll<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<CaptureReport>>> + Send + 'a>>;

/// Runs every `[[config_backup]]` table once, in order.
pub fn capture_all<'a>(
    config: &'a Config,
    repository: &'a Repository,
    ctx: &'a JobContext,
) -> CaptureAll<'a> {
    Box::pin(async move {
        if config.config_backup.is_empty() {
            return Err(Error::config("no [[config_backup]] table is configured"));
        }
        // One capture at a time in this process (the daemon's schedule and its poll), so one
        // change is never taken as two versions.
        let _one_at_a_time = CAPTURING.lock().await;
        let mut reports = Vec::new();
        for table in &config.config_backup {
            reports.push(capture(config, repository, table, ctx).await?);
        }
        Ok(reports)
    })
}

/// Every version of table `name` in the repository, oldest first, each checked.
pub async fn versions(repository: &Repository, name: &str) -> Result<Vec<Version>> {
    let prefix = format!("{}{name}/", crate::version::PREFIX);
    let mut versions = Vec::new();
    for object in repository.storage().list(&prefix).await? {
        let Some(file) = object.key.strip_prefix(&prefix) else {
            continue;
        };
        let Some(id) = file.strip_suffix(".json") else {
            // Signatures (`ID.json.minisig`) sit beside their manifests.
            continue;
        };
        if !crate::version::is_valid_version_id(id) {
            return Err(Error::integrity(format!(
                "{} is not named like a configuration version",
                object.key
            )));
        }
        let bytes = repository.get_verified(&object.key).await?;
        versions.push(Version::from_json(&bytes, name, id)?);
    }
    // Ids are made to the second; the recorded time orders versions of the same second.
    versions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(versions)
}

/// Runs one table once: a new version when a file's content changed, appeared or disappeared
/// since the newest version, else nothing.
pub async fn capture(
    config: &Config,
    repository: &Repository,
    table: &ConfigBackup,
    ctx: &JobContext,
) -> Result<CaptureReport> {
    use tracing::Instrument;
    let span = tracing::info_span!("backup.config", name = %table.name);
    capture_table(config, repository, table, ctx)
        .instrument(span)
        .await
}

async fn capture_table(
    config: &Config,
    repository: &Repository,
    table: &ConfigBackup,
    ctx: &JobContext,
) -> Result<CaptureReport> {
    let recipient = config.repository.recipient()?;
    if recipient.is_none() {
        tracing::warn!(name = %table.name, "{UNENCRYPTED_WARNING}");
    }
    repository.ensure_initialized().await?;
    let previous = versions(repository, &table.name).await?;
    let newest = previous.last();
    let state_dir = config.persistent_state_dir()?;
    let key =
        chunk_id::load_or_create(repository.storage(), &state_dir, recipient.as_ref()).await?;
    let mut store = ChunkStore::open(repository.storage(), key, recipient.clone()).await?;

    let (paths, mut unreadable) = crate::paths::expand(table)?;
    let keep_contents = table.git_mirror.is_some();
    let mut files = Vec::new();
    let mut contents = BTreeMap::new();
    for path in paths {
        ctx.cancel.check()?;
        match read_file(&mut store, &path, keep_contents).await {
            Ok((record, content)) => {
                if let Some(content) = content {
                    contents.insert(path.clone(), content);
                }
                files.push(record);
            }
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "cannot read a configuration file");
                unreadable.push(Unreadable {
                    path: path.clone(),
                    error: e.to_string(),
                });
                // Not a deletion: the version keeps what was last read of it.
                if let Some(old) = newest.and_then(|v| v.file(&path)) {
                    files.push(old.clone());
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);

    let changes = changes(newest.map(|v| v.files.as_slice()).unwrap_or(&[]), &files);
    let mut report = CaptureReport {
        name: table.name.clone(),
        version: None,
        changes: Vec::new(),
        files: files.len(),
        unreadable: unreadable.clone(),
        unencrypted: recipient.is_none(),
        mirror_commit: None,
    };
    if changes.is_empty() {
        tracing::info!(files = files.len(), "no configuration file changed");
        // A mirror that missed the newest version (its commit failed, or the mirror is new)
        // catches up now: nothing changed, so the files just read are that version's.
        if let (Some(mirror), Some(newest)) = (&table.git_mirror, newest)
            && crate::git::mirrored_version(mirror)?.as_deref() != Some(newest.id.as_str())
        {
            let commit = mirror_version(table, mirror, newest, contents)?;
            report.mirror_commit = Some(commit);
        }
        return Ok(report);
    }
    store.flush().await?;

    let created_at = ctx.clock.now();
    let version = Version {
        format_version: FORMAT_VERSION,
        id: new_id_after(created_at, newest),
        name: table.name.clone(),
        created_at,
        created_by: format!("coffer {}", env!("CARGO_PKG_VERSION")),
        encrypted: recipient.is_some(),
        files,
        changes,
        unreadable,
    };
    ctx.cancel.check()?;
    repository
        .put_signed(
            &Version::key(&version.name, &version.id),
            bytes::Bytes::from(version.to_json()),
        )
        .await?;
    tracing::info!(version = %version.id, changed = version.changes.len(), "configuration version stored");
    report.version = Some(version.id.clone());
    report.changes = version.changes.clone();

    if let Some(mirror) = &table.git_mirror {
        report.mirror_commit = Some(mirror_version(table, mirror, &version, contents)?);
    }
    Ok(report)
}

/// Commits `version` to the table's git mirror, the contents masked.
fn mirror_version(
    table: &ConfigBackup,
    mirror: &std::path::Path,
    version: &Version,
    contents: BTreeMap<String, Vec<u8>>,
) -> Result<String> {
    let masker = Masker::new(&table.mask_keys.patterns)?;
    let masked = contents
        .into_iter()
        .map(|(path, content)| {
            let masked = masker.mask(&content);
            (path, masked)
        })
        .collect();
    crate::git::commit_version(mirror, version, &masked).map_err(|e| {
        e.context(format!(
            "version {} is stored; mirroring it to {}",
            version.id,
            mirror.display()
        ))
    })
}

/// A fresh id, later than the newest version's so ids sort like versions.
fn new_id_after(at: Timestamp, newest: Option<&Version>) -> String {
    let id = crate::version::new_version_id(at);
    match newest {
        Some(newest) if newest.id >= id => {
            // Same second (or a clock set back): the next second keeps ids in version order.
            let later = newest.created_at.max(at) + jiff::SignedDuration::from_secs(1);
            let bumped = crate::version::new_version_id(later);
            if bumped > newest.id {
                bumped
            } else {
                new_id_after(later, Some(newest))
            }
        }
        _ => id,
    }
}

/// Reads one file, storing its chunks; its record, and its content when `keep` (the mirror).
async fn read_file(
    store: &mut ChunkStore<'_>,
    path: &str,
    keep: bool,
) -> Result<(FileRecord, Option<Vec<u8>>)> {
    // Metadata and content from the same open file: a rename in between cannot mix two files.
    let file =
        std::fs::File::open(path).map_err(|e| Error::other(format!("opening {path}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::other(format!("reading the metadata of {path}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::other(format!("{path} is not a regular file")));
    }
    let mtime =
        Timestamp::new(meta.mtime(), meta.mtime_nsec() as i32).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let mut content = keep.then(Vec::new);
    for chunk in Chunker::new(file) {
        let chunk = chunk.map_err(|e| e.context(format!("reading {path}")))?;
        size += chunk.data.len() as u64;
        let (id, _) = store.write(&chunk.data).await?;
        chunks.push(id.to_hex());
        if let Some(content) = &mut content {
            content.extend_from_slice(&chunk.data);
        }
    }
    Ok((
        FileRecord {
            path: path.to_string(),
            size,
            mode: meta.mode() & 0o7777,
            mtime,
            uid: meta.uid(),
            gid: meta.gid(),
            chunks,
        },
        content,
    ))
}

/// The paths whose content differs between two sorted file lists.
pub fn changes(before: &[FileRecord], after: &[FileRecord]) -> Vec<Change> {
    let before: BTreeMap<&str, &FileRecord> = before.iter().map(|f| (f.path.as_str(), f)).collect();
    let after_map: BTreeMap<&str, &FileRecord> =
        after.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut changes = Vec::new();
    let mut all: Vec<&str> = before.keys().chain(after_map.keys()).copied().collect();
    all.sort_unstable();
    all.dedup();
    for path in all {
        let change = match (before.get(path), after_map.get(path)) {
            (None, Some(_)) => ChangeKind::Added,
            (Some(_), None) => ChangeKind::Deleted,
            (Some(a), Some(b)) if a.chunks != b.chunks => ChangeKind::Modified,
            _ => continue,
        };
        changes.push(Change {
            path: path.to_string(),
            change,
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, chunks: &[&str], mode: u32) -> FileRecord {
        FileRecord {
            path: path.into(),
            size: 1,
            mode,
            mtime: Timestamp::UNIX_EPOCH,
            uid: 0,
            gid: 0,
            chunks: chunks.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn only_contents_count_as_changes() {
        let before = [
            record("/a", &["1"], 0o644),
            record("/b", &["2"], 0o644),
            record("/c", &["3"], 0o644),
        ];
        let after = [
            // A new mode (or time) alone is no change.
            record("/a", &["1"], 0o600),
            record("/b", &["2", "9"], 0o644),
            record("/d", &[], 0o644),
        ];
        let got: Vec<(String, ChangeKind)> = changes(&before, &after)
            .into_iter()
            .map(|c| (c.path, c.change))
            .collect();
        assert_eq!(
            got,
            [
                ("/b".to_string(), ChangeKind::Modified),
                ("/c".to_string(), ChangeKind::Deleted),
                ("/d".to_string(), ChangeKind::Added),
            ]
        );
        assert!(changes(&after, &after).is_empty());
    }

    #[test]
    fn a_version_in_the_same_second_gets_a_later_id() {
        let at: Timestamp = "2026-12-02T18:00:00.5Z".parse().unwrap();
        let newest = Version {
            format_version: FORMAT_VERSION,
            id: "20261202T180000Z-config-ffff".into(),
            name: "config".into(),
            created_at: at,
            created_by: String::new(),
            encrypted: false,
            files: vec![],
            changes: vec![],
            unreadable: vec![],
        };
        let id = new_id_after(at, Some(&newest));
        assert!(id > newest.id, "{id}");
        assert!(crate::version::is_valid_version_id(&id));
        let earlier: Timestamp = "2026-12-02T17:00:00Z".parse().unwrap();
        assert!(
            new_id_after(earlier, Some(&newest)) > newest.id,
            "a clock set back"
        );
    }
}

//! Snapshot manifests: what a file snapshot is, as `snapshots/ID.json`.
//!
//! A snapshot exists only once its manifest is stored, and the manifest is written last: after
//! the listing and every chunk it names are in packs and index files
//! ([`crate::backup::take_snapshot`] flushes the store before it returns). The manifest is
//! written create-if-absent and signed like a backup's
//! ([`Repository::write_once_signed`]), and read back with the same checks
//! ([`Repository::get_verified`]): the repository marker, and with a verify key its signature.
//!
//! File snapshots have their own prefix rather than sharing `manifests/` with the database
//! backups, because they have nothing of a database backup (no server, no artifacts of their
//! own, no binlog coordinates) and the catalog of database backups, which every status and
//! restore reads, stays as small as it was.

use std::collections::BTreeMap;

use coffer_core::cancel::Cancel;
use coffer_core::error::{Error, Result};
use coffer_core::manifest::{is_valid_backup_id, new_id};
use coffer_core::repository::{LATEST, Repository};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::store::WriteStats;
use crate::tree::SnapshotSummary;

/// Where snapshot manifests are stored.
pub const SNAPSHOTS: &str = "snapshots/";
/// The snapshot manifest format this coffer writes and the newest it reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// The kind word in snapshot ids (`20261202T030000Z-files-3fa9`).
pub const SNAPSHOT_KIND: &str = "files";
/// How many manifests are read at once when listing.
const READ_AHEAD: usize = 8;

/// Where a snapshot's files came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A local folder.
    Folder,
    /// A bucket and prefix on an S3-compatible server.
    S3,
}

/// One file snapshot, as recorded in `snapshots/ID.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// [`SNAPSHOT_FORMAT_VERSION`].
    pub format_version: u32,
    /// Time-sortable id: `YYYYMMDDTHHMMSSZ-files-XXXX`.
    pub id: String,
    /// When the snapshot started (UTC).
    pub started_at: Timestamp,
    /// When its last chunk was stored (UTC).
    pub finished_at: Timestamp,
    /// `finished_at - started_at`, in seconds.
    pub duration_seconds: f64,
    /// The coffer version that wrote it.
    pub coffer_version: String,
    /// The host that took it.
    pub host: String,
    /// The `[[files]]` source's name.
    pub source: String,
    /// What the source is.
    pub source_kind: SourceKind,
    /// The folder (absolute path) or `s3://bucket/prefix` the snapshot was taken of.
    pub location: String,
    /// The snapshot whose unchanged files were taken without reading them, if any.
    pub parent: Option<String>,
    /// Whether every file was read, whatever the parent said.
    pub full_scan: bool,
    /// What this snapshot added to the repository: blobs, plain and stored bytes, packs.
    pub stored: StoredStats,
    /// The listing and what it holds.
    pub snapshot: SnapshotSummary,
    /// Fields this coffer does not know (written by a newer one), kept when re-serialized.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// What a snapshot added to the repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredStats {
    /// Chunks stored as new blobs.
    pub new_chunks: u64,
    /// Chunks the repository already had.
    pub deduplicated_chunks: u64,
    /// Plain bytes of the new chunks.
    pub new_bytes: u64,
    /// Their bytes as stored (compressed, encrypted).
    pub stored_bytes: u64,
    /// Pack files written.
    pub packs: u64,
}

impl From<WriteStats> for StoredStats {
    fn from(stats: WriteStats) -> Self {
        Self {
            new_chunks: stats.stored,
            deduplicated_chunks: stats.deduplicated,
            new_bytes: stats.raw_bytes,
            stored_bytes: stats.stored_bytes,
            packs: stats.packs,
        }
    }
}

/// A new snapshot id for a snapshot started at `at`.
pub fn new_snapshot_id(at: Timestamp) -> String {
    new_id(SNAPSHOT_KIND, at)
}

/// Whether `id` has the shape of a snapshot id (`…-files-XXXX`), as opposed to a database
/// backup's.
pub fn is_snapshot_id(id: &str) -> bool {
    is_valid_backup_id(id) && id.contains(&format!("-{SNAPSHOT_KIND}-"))
}

/// The key of snapshot `id`'s manifest.
pub fn manifest_key(id: &str) -> String {
    format!("{SNAPSHOTS}{id}.json")
}

impl SnapshotManifest {
    /// Serializes for storage (pretty, so an operator can read it with `cat`).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        out.push(b'\n');
        out
    }

    /// Parses the manifest stored at `key`: a newer format, an id that is not the key's, or a
    /// malformed body is an integrity error naming the key.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let version: Version = serde_json::from_slice(bytes)
            .map_err(|e| Error::integrity(format!("{key}: not a snapshot manifest: {e}")))?;
        if version.format_version > SNAPSHOT_FORMAT_VERSION {
            return Err(Error::integrity(format!(
                "{key}: format_version {} is newer than this coffer reads \
                 ({SNAPSHOT_FORMAT_VERSION}); upgrade coffer",
                version.format_version
            )));
        }
        let manifest: SnapshotManifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::integrity(format!("{key}: malformed snapshot manifest: {e}")))?;
        // Storage is untrusted: the id becomes keys and file names.
        if !is_valid_backup_id(&manifest.id) || manifest_key(&manifest.id) != key {
            return Err(Error::integrity(format!(
                "{key}: holds the snapshot {:?}, not the one its name says",
                manifest.id
            )));
        }
        Ok(manifest)
    }
}

/// Stores `manifest`: the last step of a snapshot. Never replaces an existing one; nothing is
/// written once `cancel` has fired.
pub async fn write(
    repository: &Repository,
    manifest: &SnapshotManifest,
    cancel: &Cancel,
) -> Result<()> {
    repository
        .write_once_signed(&manifest_key(&manifest.id), manifest.to_json(), cancel)
        .await
}

/// Reads snapshot `id`'s manifest; a missing one is a not-found error naming the id.
pub async fn load(repository: &Repository, id: &str) -> Result<SnapshotManifest> {
    if !is_valid_backup_id(id) {
        return Err(Error::config(format!("{id:?} is not a snapshot id")));
    }
    let key = manifest_key(id);
    let bytes = repository.get_verified(&key).await.map_err(|e| {
        if e.kind() == coffer_core::error::ErrorKind::NotFound {
            Error::not_found(format!(
                "no snapshot {id} in {}",
                repository.storage().location()
            ))
        } else {
            e
        }
    })?;
    SnapshotManifest::from_json(&key, &bytes)
}

/// Removes snapshot `id`: its manifest first (so it is never listed half-removed), then its
/// signature. Its chunks stay until a prune finds no snapshot references them.
pub async fn remove(repository: &Repository, id: &str) -> Result<()> {
    if !is_valid_backup_id(id) {
        return Err(Error::config(format!("{id:?} is not a snapshot id")));
    }
    let key = manifest_key(id);
    repository.storage().delete(&key).await?;
    repository
        .storage()
        .delete(&coffer_core::signing::signature_key(&key))
        .await
}

/// Every snapshot, oldest first (by start time, then id). A manifest that cannot be read or
/// checked is an error, never skipped: a listing that hides a snapshot would let a prune delete
/// the chunks it needs.
pub async fn list(repository: &Repository) -> Result<Vec<SnapshotManifest>> {
    let objects = repository.storage().list(SNAPSHOTS).await?;
    let keys: Vec<String> = objects
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json"))
        .collect();
    let mut manifests = Vec::with_capacity(keys.len());
    for batch in keys.chunks(READ_AHEAD) {
        manifests.extend(
            futures_util::future::try_join_all(batch.iter().map(|key| read(repository, key)))
                .await?,
        );
    }
    manifests.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    Ok(manifests)
}

/// Reads and checks the manifest at `key`.
async fn read(repository: &Repository, key: &str) -> Result<SnapshotManifest> {
    let bytes = repository.get_verified(key).await?;
    SnapshotManifest::from_json(key, &bytes)
}

/// The newest snapshot of `source` (of any source when `None`) in `snapshots` (oldest first).
pub fn newest<'a>(
    snapshots: &'a [SnapshotManifest],
    source: Option<&str>,
) -> Option<&'a SnapshotManifest> {
    snapshots
        .iter()
        .rev()
        .find(|s| source.is_none_or(|name| s.source == name))
}

/// The snapshot an operator named: an id, or `latest` (the newest of `source`, else of any
/// source). The error says what was looked for.
pub fn resolve<'a>(
    snapshots: &'a [SnapshotManifest],
    id: &str,
    source: Option<&str>,
) -> Result<&'a SnapshotManifest> {
    if id == LATEST {
        return newest(snapshots, source).ok_or_else(|| match source {
            Some(name) => Error::not_found(format!("no snapshot of the files source {name:?}")),
            None => Error::not_found("no file snapshot in the repository"),
        });
    }
    let found = snapshots
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| Error::not_found(format!("no snapshot {id}")))?;
    if let Some(name) = source
        && found.source != name
    {
        return Err(Error::config(format!(
            "snapshot {id} is of the source {:?}, not {name:?}",
            found.source
        )));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, source: &str, at: &str) -> SnapshotManifest {
        let at: Timestamp = at.parse().unwrap();
        SnapshotManifest {
            format_version: SNAPSHOT_FORMAT_VERSION,
            id: id.into(),
            started_at: at,
            finished_at: at,
            duration_seconds: 0.0,
            coffer_version: "0.1.0".into(),
            host: "backup".into(),
            source: source.into(),
            source_kind: SourceKind::Folder,
            location: "/srv/app/storage".into(),
            parent: None,
            full_scan: false,
            stored: StoredStats::default(),
            snapshot: SnapshotSummary::new(source, "/srv/app/storage"),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn a_manifest_round_trips_and_keeps_fields_it_does_not_know() {
        let m = sample(
            "20261202T030000Z-files-0001",
            "storage",
            "2026-12-02T03:00:00Z",
        );
        let mut json: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        json["added_later"] = serde_json::json!({"x": 1});
        let bytes = serde_json::to_vec(&json).unwrap();
        let back = SnapshotManifest::from_json(&manifest_key(&m.id), &bytes).unwrap();
        assert_eq!(back.extra["added_later"], serde_json::json!({"x": 1}));
        let again: serde_json::Value = serde_json::from_slice(&back.to_json()).unwrap();
        assert_eq!(again, json);
    }

    #[test]
    fn a_manifest_under_another_name_or_with_a_bad_id_is_refused() {
        let m = sample(
            "20261202T030000Z-files-0001",
            "storage",
            "2026-12-02T03:00:00Z",
        );
        let err =
            SnapshotManifest::from_json("snapshots/20261202T030000Z-files-0002.json", &m.to_json())
                .unwrap_err();
        assert!(
            err.to_string().contains("not the one its name says"),
            "{err}"
        );
        let mut bad = m.clone();
        bad.id = "../../etc".into();
        let err =
            SnapshotManifest::from_json("snapshots/../../etc.json", &bad.to_json()).unwrap_err();
        assert!(
            err.to_string().contains("not the one its name says"),
            "{err}"
        );
    }

    #[test]
    fn a_newer_format_is_named_as_such() {
        let mut m = sample(
            "20261202T030000Z-files-0001",
            "storage",
            "2026-12-02T03:00:00Z",
        );
        m.format_version = SNAPSHOT_FORMAT_VERSION + 1;
        let err = SnapshotManifest::from_json(&manifest_key(&m.id), &m.to_json()).unwrap_err();
        assert!(err.to_string().contains("upgrade coffer"), "{err}");
    }

    #[test]
    fn latest_is_the_newest_of_the_named_source() {
        let snapshots = vec![
            sample(
                "20261201T030000Z-files-0001",
                "storage",
                "2026-12-01T03:00:00Z",
            ),
            sample(
                "20261201T040000Z-files-0002",
                "uploads",
                "2026-12-01T04:00:00Z",
            ),
            sample(
                "20261202T030000Z-files-0003",
                "storage",
                "2026-12-02T03:00:00Z",
            ),
        ];
        assert_eq!(
            resolve(&snapshots, LATEST, None).unwrap().id,
            "20261202T030000Z-files-0003"
        );
        assert_eq!(
            resolve(&snapshots, LATEST, Some("uploads")).unwrap().id,
            "20261201T040000Z-files-0002"
        );
        assert!(resolve(&snapshots, LATEST, Some("avatars")).is_err());
        let err = resolve(&snapshots, "20261201T030000Z-files-0001", Some("uploads")).unwrap_err();
        assert!(err.to_string().contains("not \"uploads\""), "{err}");
    }
}

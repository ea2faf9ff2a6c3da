//! Manifests: what a backup is, written last, after every artifact is stored.
//!
//! The schema is documented in `docs/FORMAT.md`; readers refuse a `format_version` newer than
//! [`FORMAT_VERSION`] rather than misreading it, and ignore fields they do not know, so an old
//! reader can list backups written by a newer coffer of the same format version.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::ArtifactRecord;

/// The manifest format this coffer writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The kind of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// A logical dump of whole databases at one consistent moment.
    Full,
    /// One closed binary log file, archived over the replication protocol (the incremental backup).
    Binlog,
    /// A piece of the binary log the server is still writing, shipped by `coffer binlog stream`
    /// so the recovery point stays fresh; superseded (and removed) once the whole file is
    /// archived as a `binlog` backup.
    Segment,
    /// A kind this coffer does not know (written by a newer one): listed, never used.
    #[serde(other)]
    Unknown,
}

impl BackupKind {
    /// The name used in ids, keys and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Binlog => "binlog",
            Self::Segment => "segment",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backup, as recorded in `manifests/ID.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Schema version; see [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Time-sortable id: `YYYYMMDDTHHMMSSZ-KIND-XXXX`.
    pub id: String,
    /// What kind of backup this is.
    pub kind: BackupKind,
    /// When the backup started (UTC).
    pub started_at: Timestamp,
    /// When the last artifact was stored (UTC).
    pub finished_at: Timestamp,
    /// `finished_at - started_at`, in seconds.
    pub duration_seconds: f64,
    /// The coffer version that wrote it.
    pub coffer_version: String,
    /// The server that was backed up.
    pub source: SourceInfo,
    /// Binary log coordinates of the snapshot, when the server writes a binary log.
    pub binlog: Option<BinlogCoordinates>,
    /// Databases included.
    pub databases: Vec<String>,
    /// Stored objects, in the order a restore reads them.
    pub artifacts: Vec<ArtifactRecord>,
    /// What a restore of this backup must reproduce.
    pub expectations: Expectations,
    /// For a `binlog` backup: which file it is and what it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_file: Option<ArchivedBinlog>,
    /// For a full backup taken with `[source] allow_incomplete = true` by an account that could
    /// not see everything: what the dump may lack, one entry per database and kind of object
    /// (`triggers of app (needs TRIGGER on app.* or *.*)`). Empty (and absent) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_be_missing: Vec<String>,
}

/// A summary of an archived binlog file; its full transaction index is the `index.json` artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedBinlog {
    /// File name on the server (`mysql-bin.000042`).
    pub file: String,
    /// Server id in the file's format description event.
    pub server_id: u32,
    /// First event time (Unix seconds).
    pub first_event_time: Option<i64>,
    /// Last event time (Unix seconds): of any event, a rotate or stop event included.
    pub last_event_time: Option<i64>,
    /// Commit time of the last transaction (Unix seconds): the recovery point this file gives.
    /// Absent in manifests of coffer before 0.2, whose readers fall back to `last_event_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit_time: Option<i64>,
    /// File size: the position after its last event.
    pub end_position: u64,
    /// Committed transactions in the file.
    pub transactions: u64,
    /// GTID of the first transaction.
    pub first_gtid: Option<String>,
    /// GTID of the last transaction.
    pub last_gtid: Option<String>,
    /// The file the server continued in.
    pub next_file: Option<String>,
    /// For a `segment` backup: the file offset its bytes start at (0 for the first segment,
    /// which holds the file's magic bytes); its bytes end at `end_position`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_start: Option<u64>,
}

/// The source server as the backup saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Host as configured.
    pub host: String,
    /// Port as configured.
    pub port: u16,
    /// `SELECT VERSION()`.
    pub server_version: String,
    /// `@@server_id`.
    pub server_id: u64,
    /// The dump tool and its version line.
    pub dump_tool: String,
}

/// Where in the binary log the snapshot sits: replaying from here reaches later points in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogCoordinates {
    /// Binlog file name (`mysql-bin.000042`).
    pub file: String,
    /// Position in that file.
    pub position: u64,
    /// GTID position (`domain-server-seq[,…]`), when the server reports one.
    pub gtid_position: Option<String>,
}

/// What a restore must reproduce, read from the dump stream itself (so from the same snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectations {
    /// One entry per database, in dump order.
    pub databases: Vec<DatabaseExpectations>,
}

/// The objects and data of one database in a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseExpectations {
    /// Database name.
    pub name: String,
    /// Base tables with their data.
    pub tables: Vec<TableExpectation>,
    /// Views.
    pub views: Vec<String>,
    /// Stored procedures and functions.
    pub routines: Vec<String>,
    /// Triggers.
    pub triggers: Vec<String>,
    /// Scheduled events.
    pub events: Vec<String>,
}

/// A table's data as it is in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableExpectation {
    /// Table name.
    pub name: String,
    /// Rows in the dump.
    pub rows: u64,
    /// SHA-256 over the table's rows as the dump renders them, in primary-key order, each row
    /// tuple followed by a newline (see `docs/FORMAT.md`).
    pub sha256: String,
}

impl Manifest {
    /// A manifest of a backup that finishes now: format, times, duration and version filled in,
    /// nothing stored yet. The job adds its artifacts and what it knows, then writes it last.
    pub fn finished_now(
        id: &str,
        kind: BackupKind,
        started_at: Timestamp,
        source: SourceInfo,
    ) -> Manifest {
        Self::finished(id, kind, started_at, Timestamp::now(), source)
    }

    /// A manifest of a backup that finished at `finished_at` (a job's clock): as
    /// [`Manifest::finished_now`] otherwise.
    pub fn finished(
        id: &str,
        kind: BackupKind,
        started_at: Timestamp,
        finished_at: Timestamp,
        source: SourceInfo,
    ) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            id: id.to_string(),
            kind,
            started_at,
            finished_at,
            duration_seconds: (finished_at.as_millisecond() - started_at.as_millisecond()) as f64
                / 1000.0,
            coffer_version: env!("CARGO_PKG_VERSION").to_string(),
            source,
            binlog: None,
            databases: Vec::new(),
            artifacts: Vec::new(),
            expectations: Expectations::default(),
            binlog_file: None,
            may_be_missing: Vec::new(),
        }
    }

    /// Serializes for storage (pretty, so an operator can read it with `cat`).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        out.push(b'\n');
        out
    }

    /// Parses a stored manifest, refusing a format newer than this coffer understands.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let newer = |version: u32| {
            Error::integrity(format!(
                "{key}: format_version {version} is newer than this coffer reads ({FORMAT_VERSION}); upgrade coffer"
            ))
        };
        // One parse for the manifests this coffer wrote (every listing parses them all); the
        // version alone only when that fails, so a newer format is named as such.
        let parsed = serde_json::from_slice::<Manifest>(bytes);
        let manifest = match parsed {
            Ok(manifest) if manifest.format_version > FORMAT_VERSION => {
                return Err(newer(manifest.format_version));
            }
            Ok(manifest) if manifest.kind != BackupKind::Unknown => manifest,
            parsed => {
                let version: Version = serde_json::from_slice(bytes)
                    .map_err(|e| Error::integrity(format!("{key}: not a coffer manifest: {e}")))?;
                if version.format_version > FORMAT_VERSION {
                    return Err(newer(version.format_version));
                }
                // A kind this coffer does not know may give its fields other meanings: it is
                // listed by its header, as `unknown`, and nothing else of it is read.
                Self::of_unknown_kind(bytes).ok_or_else(|| {
                    let why = parsed
                        .err()
                        .map_or("no id or start time".into(), |e| e.to_string());
                    Error::integrity(format!("{key}: malformed manifest: {why}"))
                })?
            }
        };
        // Storage is untrusted: every name in it is checked before anything uses it.
        crate::names::check_manifest(key, &manifest)?;
        Ok(manifest)
    }

    /// The header of a manifest whose `kind` this coffer does not know: its id and times (what
    /// a listing shows), nothing stored, nothing expected. `None` for a known kind.
    fn of_unknown_kind(bytes: &[u8]) -> Option<Manifest> {
        #[derive(Deserialize)]
        struct Header {
            format_version: u32,
            id: String,
            kind: BackupKind,
            started_at: Timestamp,
            #[serde(default)]
            finished_at: Option<serde_json::Value>,
            #[serde(default)]
            coffer_version: Option<serde_json::Value>,
        }
        let header: Header = serde_json::from_slice(bytes).ok()?;
        if header.kind != BackupKind::Unknown {
            return None;
        }
        let finished_at = header
            .finished_at
            .and_then(|v| serde_json::from_value::<Timestamp>(v).ok())
            .unwrap_or(header.started_at);
        let source = SourceInfo {
            host: String::new(),
            port: 0,
            server_version: String::new(),
            server_id: 0,
            dump_tool: String::new(),
        };
        let mut manifest =
            Manifest::finished_now(&header.id, BackupKind::Unknown, header.started_at, source);
        manifest.format_version = header.format_version;
        manifest.finished_at = finished_at;
        manifest.duration_seconds =
            (finished_at.as_millisecond() - header.started_at.as_millisecond()).max(0) as f64
                / 1000.0;
        manifest.coffer_version = header
            .coffer_version
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Some(manifest)
    }

    /// Total bytes on storage.
    pub fn stored_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.stored_size).sum()
    }

    /// Total bytes before compression.
    pub fn size_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size).sum()
    }
}

/// What "latest" means everywhere (`backup show latest`, `restore db --latest`, the drill,
/// `status`): the full backup that started last. `manifests` may be in any order; ties on the
/// start time go to the greater id.
pub fn newest_full(manifests: &[Manifest]) -> Option<&Manifest> {
    manifests
        .iter()
        .filter(|m| m.kind == BackupKind::Full)
        .max_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)))
}

/// [`newest_full`] as a fold over a listing: keeps `m` in `newest` if it is a full backup newer
/// than the one held.
pub fn keep_newest_full(newest: &mut Option<Manifest>, m: Manifest) {
    if m.kind == BackupKind::Full
        && newest
            .as_ref()
            .is_none_or(|n| (n.started_at, &n.id) < (m.started_at, &m.id))
    {
        *newest = Some(m);
    }
}

/// Makes a new time-sortable backup id: `20261126T174643Z-full-3fa9`. The suffix keeps two
/// backups started in the same second apart.
pub fn new_backup_id(kind: BackupKind, at: Timestamp) -> String {
    new_id(kind.as_str(), at)
}

/// Makes a new time-sortable id for anything stored by kind and time (backups, file snapshots,
/// configuration versions): `STAMP-KIND-XXXX`, as [`new_backup_id`]. `kind` must be made of
/// lowercase letters so the id stays [`is_valid_backup_id`].
pub fn new_id(kind: &str, at: Timestamp) -> String {
    debug_assert!(kind.bytes().all(|b| b.is_ascii_lowercase()));
    let stamp = at.strftime("%Y%m%dT%H%M%SZ");
    let mixed = u64::from(at.subsec_nanosecond().unsigned_abs())
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(std::process::id()).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let noise = (mixed >> 48) & 0xffff;
    format!("{stamp}-{kind}-{noise:04x}")
}

/// Whether `id` has the shape of a backup id (and so is safe to use in a key).
pub fn is_valid_backup_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let at: Timestamp = "2026-11-26T17:46:43Z".parse().unwrap();
        Manifest {
            format_version: FORMAT_VERSION,
            id: new_backup_id(BackupKind::Full, at),
            kind: BackupKind::Full,
            started_at: at,
            finished_at: at,
            duration_seconds: 0.0,
            coffer_version: "0.1.0".into(),
            source: SourceInfo {
                host: "db".into(),
                port: 3306,
                server_version: "10.11".into(),
                server_id: 1,
                dump_tool: "mariadb-dump".into(),
            },
            binlog: Some(BinlogCoordinates {
                file: "mysql-bin.000001".into(),
                position: 4,
                gtid_position: None,
            }),
            databases: vec!["app".into()],
            artifacts: vec![],
            expectations: Expectations::default(),
            binlog_file: None,
            may_be_missing: Vec::new(),
        }
    }

    #[test]
    fn what_may_be_missing_is_recorded_only_when_something_is() {
        let manifest = sample();
        let json = String::from_utf8(manifest.to_json()).unwrap();
        assert!(!json.contains("may_be_missing"), "{json}");
        // A manifest written before the field existed reads as complete.
        assert!(
            Manifest::from_json("m", json.as_bytes())
                .unwrap()
                .may_be_missing
                .is_empty()
        );
        let mut incomplete = sample();
        incomplete.may_be_missing = vec!["triggers of app (needs TRIGGER on app.* or *.*)".into()];
        let json = incomplete.to_json();
        assert!(String::from_utf8_lossy(&json).contains("\"may_be_missing\""));
        assert_eq!(Manifest::from_json("m", &json).unwrap(), incomplete);
    }

    #[test]
    fn ids_sort_by_time_and_are_key_safe() {
        let a = new_backup_id(BackupKind::Full, "2026-11-26T17:46:43Z".parse().unwrap());
        let b = new_backup_id(BackupKind::Full, "2026-11-26T17:46:44Z".parse().unwrap());
        assert!(a.starts_with("20261126T174643Z-full-"));
        assert!(a < b);
        assert!(is_valid_backup_id(&a));
        assert!(!is_valid_backup_id("../x"));
    }

    #[test]
    fn manifest_roundtrips_and_tolerates_unknown_fields() {
        let manifest = sample();
        let json = manifest.to_json();
        assert_eq!(Manifest::from_json("m", &json).unwrap(), manifest);
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value["added_by_a_later_coffer"] = serde_json::json!(true);
        assert_eq!(
            Manifest::from_json("m", &serde_json::to_vec(&value).unwrap()).unwrap(),
            manifest
        );
    }

    #[test]
    fn newer_format_is_refused_by_name() {
        let mut value: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        value["format_version"] = serde_json::json!(FORMAT_VERSION + 1);
        let err = Manifest::from_json("manifests/x.json", &serde_json::to_vec(&value).unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("manifests/x.json") && err.to_string().contains("upgrade")
        );
    }
}

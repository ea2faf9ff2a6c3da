//! The binlog archive as a restore sees it: each archived binlog file once, either whole (a
//! `binlog` backup, the file as the server closed it) or, while the server is still writing it,
//! as the chain of `segment` backups shipped by `coffer binlog stream`.
//!
//! Several writers can leave overlapping records behind (a stream restarted after a crash, an
//! incremental run racing a stream, a crash between archiving a whole file and removing its
//! segments). This view resolves them the same way everywhere: a whole file wins over its
//! segments, and segments count only as an unbroken chain from the file's first byte.

use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::manifest::{ArchivedBinlog, BackupKind, Manifest};
use crate::pipeline::ArtifactRecord;

/// The name of the transaction index artifact stored beside every archived binlog or segment.
pub const INDEX_ARTIFACT: &str = "index.json";

/// A binlog file's number: names sort by their numeric suffix (`mysql-bin.000042` is 42).
pub fn binlog_sequence(file: &str) -> Option<u64> {
    file.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
}

/// What the archive reads of a backup: a whole [`Manifest`], or the compact [`ArchiveEntry`]
/// that a listing of any size can hold for every backup at once.
pub trait Piece {
    /// The backup id.
    fn id(&self) -> &str;
    /// Its kind.
    fn kind(&self) -> BackupKind;
    /// When it started.
    fn started_at(&self) -> Timestamp;
    /// The server it was taken from (`@@server_id`).
    fn server_id(&self) -> u64;
    /// For a full backup: the binlog file its snapshot's coordinates name.
    fn snapshot_file(&self) -> Option<&str>;
    /// For a binlog or segment backup: the file it holds and what of it.
    fn binlog_file(&self) -> Option<&ArchivedBinlog>;
    /// Every stored artifact: its key and its size on storage.
    fn stored_artifacts(&self) -> impl Iterator<Item = (&str, u64)>;
}

impl Piece for Manifest {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> BackupKind {
        self.kind
    }
    fn started_at(&self) -> Timestamp {
        self.started_at
    }
    fn server_id(&self) -> u64 {
        self.source.server_id
    }
    fn snapshot_file(&self) -> Option<&str> {
        self.binlog.as_ref().map(|c| c.file.as_str())
    }
    fn binlog_file(&self) -> Option<&ArchivedBinlog> {
        self.binlog_file.as_ref()
    }
    fn stored_artifacts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.artifacts
            .iter()
            .map(|a| (a.key.as_str(), a.stored_size))
    }
}

/// What the archive needs of one backup, and nothing else (no expectations, digests or
/// descriptions): what `coffer status` keeps of every backup of a repository of any size.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveEntry {
    id: Box<str>,
    kind: BackupKind,
    started_at: Timestamp,
    server_id: u64,
    snapshot_file: Option<Box<str>>,
    binlog_file: Option<Box<ArchivedBinlog>>,
    artifacts: Box<[(Box<str>, u64)]>,
}

impl ArchiveEntry {
    /// Whether the archive has any use for `manifest` (a full backup, a binlog or a segment).
    pub fn wanted(manifest: &Manifest) -> bool {
        matches!(
            manifest.kind,
            BackupKind::Full | BackupKind::Binlog | BackupKind::Segment
        )
    }
}

impl From<&Manifest> for ArchiveEntry {
    fn from(m: &Manifest) -> Self {
        Self {
            id: m.id.as_str().into(),
            kind: m.kind,
            started_at: m.started_at,
            server_id: m.source.server_id,
            snapshot_file: m.binlog.as_ref().map(|c| c.file.as_str().into()),
            // Without what the archive never reads (the first GTID, the next file's name):
            // an entry per backup is held for the whole catalog.
            binlog_file: m.binlog_file.as_ref().map(|b| {
                Box::new(ArchivedBinlog {
                    file: b.file.clone(),
                    first_gtid: None,
                    last_gtid: b.last_gtid.clone(),
                    next_file: None,
                    ..*b
                })
            }),
            artifacts: m
                .artifacts
                .iter()
                .map(|a| (a.key.as_str().into(), a.stored_size))
                .collect(),
        }
    }
}

impl Piece for ArchiveEntry {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> BackupKind {
        self.kind
    }
    fn started_at(&self) -> Timestamp {
        self.started_at
    }
    fn server_id(&self) -> u64 {
        self.server_id
    }
    fn snapshot_file(&self) -> Option<&str> {
        self.snapshot_file.as_deref()
    }
    fn binlog_file(&self) -> Option<&ArchivedBinlog> {
        self.binlog_file.as_deref()
    }
    fn stored_artifacts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.artifacts.iter().map(|(key, size)| (&**key, *size))
    }
}

/// One archived binlog file.
#[derive(Debug, Clone)]
pub struct ArchivedFile<'a, P = Manifest> {
    /// File name on the server.
    pub file: String,
    /// The server that wrote it (`@@server_id` as the backup saw it).
    pub server_id: u64,
    /// Its number ([`binlog_sequence`]).
    pub sequence: u64,
    /// Whether it is archived whole, as closed by the server; otherwise it is a prefix of a file
    /// the server was still writing, made of segments.
    pub whole: bool,
    /// The backups holding its bytes, in file order: one for a whole file.
    pub pieces: Vec<&'a P>,
    /// Bytes archived: the position after its last archived event.
    pub end_position: u64,
    /// First event time (Unix seconds).
    pub first_event_time: Option<i64>,
    /// Last archived event time (Unix seconds).
    pub last_event_time: Option<i64>,
    /// Commit time of the last archived transaction (Unix seconds), not of a rotate or stop
    /// event after it; the last event time for manifests that predate the field.
    pub last_commit_time: Option<i64>,
    /// GTID of the last archived transaction.
    pub last_gtid: Option<String>,
    /// When its first piece was archived.
    pub archived_at: Timestamp,
}

impl<P: Piece> ArchivedFile<'_, P> {
    /// The ids of the backups holding it.
    pub fn backup_ids(&self) -> Vec<&str> {
        self.pieces.iter().map(|m| m.id()).collect()
    }
}

impl ArchivedFile<'_> {
    /// The stored binlog bytes, in order: concatenated, they are the file from position 0 to
    /// [`ArchivedFile::end_position`].
    pub fn binlog_artifacts(&self) -> Result<Vec<ArtifactRecord>> {
        self.artifacts_named(&self.file)
    }

    /// The transaction index of each piece, in order.
    pub fn index_artifacts(&self) -> Result<Vec<ArtifactRecord>> {
        self.artifacts_named(INDEX_ARTIFACT)
    }

    fn artifacts_named(&self, name: &str) -> Result<Vec<ArtifactRecord>> {
        self.pieces
            .iter()
            .map(|m| {
                m.artifacts
                    .iter()
                    .find(|a| a.name == name)
                    .cloned()
                    .ok_or_else(|| {
                        Error::integrity(format!("{} backup {} has no {name}", m.kind, m.id))
                    })
            })
            .collect()
    }
}

/// Every archived binlog file, ordered by server id, then number.
pub fn archived_files<P: Piece>(manifests: &[P]) -> Vec<ArchivedFile<'_, P>> {
    let mut by_file: std::collections::BTreeMap<(u64, u64, &str), Vec<&P>> = Default::default();
    for m in manifests {
        if !matches!(m.kind(), BackupKind::Binlog | BackupKind::Segment) {
            continue;
        }
        let Some(summary) = m.binlog_file() else {
            continue;
        };
        let Some(sequence) = binlog_sequence(&summary.file) else {
            continue;
        };
        by_file
            .entry((m.server_id(), sequence, summary.file.as_str()))
            .or_default()
            .push(m);
    }
    by_file
        .into_iter()
        .filter_map(|((server_id, sequence, file), mut records)| {
            // Oldest first: of two whole copies the first one archived is kept.
            records.sort_by(|a, b| (a.started_at(), a.id()).cmp(&(b.started_at(), b.id())));
            let pieces = match records.iter().find(|m| m.kind() == BackupKind::Binlog) {
                Some(whole) => vec![*whole],
                None => segment_chain(&records),
            };
            let first = pieces.first()?;
            let last = pieces.last()?;
            fn summary<'a, P: Piece>(m: &&'a P) -> &'a ArchivedBinlog {
                m.binlog_file().expect("filtered on binlog_file")
            }
            Some(ArchivedFile {
                file: file.to_string(),
                server_id,
                sequence,
                whole: first.kind() == BackupKind::Binlog,
                end_position: summary(last).end_position,
                first_event_time: summary(first).first_event_time,
                last_event_time: pieces.iter().rev().find_map(|m| summary(m).last_event_time),
                last_commit_time: pieces.iter().rev().find_map(|m| {
                    let b = summary(m);
                    if b.transactions == 0 {
                        return None;
                    }
                    b.last_commit_time.or(b.last_event_time)
                }),
                last_gtid: pieces
                    .iter()
                    .rev()
                    .find_map(|m| summary(m).last_gtid.clone()),
                archived_at: first.started_at(),
                pieces,
            })
        })
        .collect()
}

/// The longest unbroken chain of segments from position 0; of two segments starting at the same
/// place the longer one is taken.
fn segment_chain<'a, P: Piece>(segments: &[&'a P]) -> Vec<&'a P> {
    let range = |m: &P| {
        let b = m.binlog_file().expect("filtered on binlog_file");
        (b.segment_start.unwrap_or(0), b.end_position)
    };
    let mut chain = Vec::new();
    let mut at = 0;
    while let Some(next) = segments
        .iter()
        .filter(|m| m.kind() == BackupKind::Segment && range(m).0 == at && range(m).1 > at)
        .max_by_key(|m| range(m).1)
    {
        at = range(next).1;
        chain.push(*next);
    }
    chain
}

/// An archived file whose stored bytes cannot be what its manifests promise: an artifact is
/// missing, or its size on storage differs from the recorded one (truncated, replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    /// Server id of the file.
    pub server_id: u64,
    /// Binlog file name.
    pub file: String,
    /// What is wrong, naming the object.
    pub why: String,
}

/// Checks every artifact of `files` against `stored` (a listing of the repository's `data/`):
/// a span is recoverable only as far as the sizes on storage show. Pure: the caller lists once.
pub fn damaged_files<P: Piece>(
    files: &[ArchivedFile<'_, P>],
    stored: &[crate::storage::ObjectMeta],
) -> Vec<DamagedFile> {
    let sizes: std::collections::HashMap<&str, u64> =
        stored.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let mut damaged = Vec::new();
    for file in files {
        let problem = file
            .pieces
            .iter()
            .flat_map(|m| m.stored_artifacts())
            .find_map(|(key, stored_size)| match sizes.get(key) {
                None => Some(format!("artifact {key} is missing")),
                Some(&size) if size != stored_size => Some(format!(
                    "artifact {key} is {size} bytes on storage, its manifest says {stored_size}"
                )),
                Some(_) => None,
            });
        if let Some(why) = problem {
            damaged.push(DamagedFile {
                server_id: file.server_id,
                file: file.file.clone(),
                why,
            });
        }
    }
    damaged
}

/// Segments that no longer count ([`Archive::superseded_segments`]).
pub fn superseded_segments(manifests: &[Manifest]) -> Vec<&Manifest> {
    Archive::new(manifests).superseded_segments()
}

/// A recoverable window: a full backup and the unbroken chain of archived binlogs after it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    /// The full backup that starts it.
    pub full_backup: String,
    /// From: the full backup's snapshot (its start).
    pub from: Timestamp,
    /// To: the newest archived event reachable without a gap (Unix seconds).
    pub to: Option<i64>,
}

/// The binlog archive of a repository as one value, resolved once from its manifests: the files
/// ([`archived_files`]), the chain a restore from a full backup replays, the windows those chains
/// make, what breaks them, and the segments that no longer count. Restores, status, retention and
/// the audit archive all ask it rather than walking the manifests themselves.
#[derive(Debug, Clone)]
pub struct Archive<'m, P = Manifest> {
    manifests: &'m [P],
    files: Vec<ArchivedFile<'m, P>>,
}

impl<'m, P: Piece> Archive<'m, P> {
    /// The archive the `manifests` describe.
    pub fn new(manifests: &'m [P]) -> Self {
        Self {
            manifests,
            files: archived_files(manifests),
        }
    }

    /// Every archived file, ordered by server id, then number.
    pub fn files(&self) -> &[ArchivedFile<'m, P>] {
        &self.files
    }

    /// The files of one server, oldest first.
    pub fn of_server(&self, server_id: u64) -> impl Iterator<Item = &ArchivedFile<'m, P>> {
        self.files.iter().filter(move |f| f.server_id == server_id)
    }

    /// The unbroken chain of files a restore of `full` rolls forward through: from the file its
    /// snapshot's coordinates name, each the next number of the same server, up to the first
    /// number missing or `damaged`, or the file the server was still writing (archived as
    /// segments: nothing after it is archived yet). Empty for a backup without coordinates or
    /// when its first file is not archived.
    pub fn chain_from(&self, full: &P, damaged: &[DamagedFile]) -> Vec<&ArchivedFile<'m, P>> {
        let mut chain = Vec::new();
        let Some(mut next) = full.snapshot_file().and_then(binlog_sequence) else {
            return chain;
        };
        for file in self.of_server(full.server_id()) {
            if file.sequence < next {
                continue;
            }
            let is_damaged = damaged
                .iter()
                .any(|d| d.server_id == file.server_id && d.file == file.file);
            if file.sequence > next || is_damaged {
                break;
            }
            chain.push(file);
            next += 1;
            if !file.whole {
                break;
            }
        }
        chain
    }

    /// Every recoverable window, in manifest order, each ending before the first `damaged` file
    /// of its chain (found by [`damaged_files`] from the sizes on storage): a window never
    /// promises more than the stored bytes can give.
    pub fn windows(&self, damaged: &[DamagedFile]) -> Vec<Window> {
        self.manifests
            .iter()
            .filter(|m| m.kind() == BackupKind::Full)
            .filter(|m| m.snapshot_file().and_then(binlog_sequence).is_some())
            .map(|full| Window {
                full_backup: full.id().to_string(),
                from: full.started_at(),
                to: self
                    .chain_from(full, damaged)
                    .iter()
                    .rev()
                    .find_map(|f| f.last_event_time),
            })
            .collect()
    }

    /// What breaks the archive's chain: files never archived (purged first), a server whose
    /// binlog numbering restarted, a change of server id. Each entry is one sentence.
    pub fn gaps(&self) -> Vec<String> {
        let mut files: Vec<&ArchivedFile<'m, P>> = self.files.iter().collect();
        files.sort_by_key(|f| (f.archived_at, f.sequence));
        let mut gaps = Vec::new();
        for pair in files.windows(2) {
            let (prev, file) = (pair[0], pair[1]);
            let (prev_name, name) = (&prev.file, &file.file);
            if prev.server_id != file.server_id {
                gaps.push(format!(
                    "server id changed from {} to {} between {prev_name} and {name}",
                    prev.server_id, file.server_id
                ));
            } else if file.sequence <= prev.sequence {
                gaps.push(format!(
                    "binlog numbering restarted: {name} was archived after {prev_name}"
                ));
            } else if file.sequence > prev.sequence + 1 {
                gaps.push(format!(
                    "binlogs between {prev_name} and {name} are missing from the archive (purged before they were archived)"
                ));
            }
        }
        gaps
    }

    /// Segments that no longer count: their file is archived whole, or they are not on the chain
    /// from the file's first byte (left by an interrupted stream). They can be removed.
    pub fn superseded_segments(&self) -> Vec<&'m P> {
        let kept: std::collections::BTreeSet<&str> =
            self.files.iter().flat_map(|f| f.backup_ids()).collect();
        self.manifests
            .iter()
            .filter(|m| m.kind() == BackupKind::Segment && !kept.contains(m.id()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ArchivedBinlog, SourceInfo};

    fn record(id: &str, kind: BackupKind, file: &str, range: (u64, u64), at: i64) -> Manifest {
        let started: Timestamp = Timestamp::from_second(at).unwrap();
        let mut m = Manifest::finished_now(
            id,
            kind,
            started,
            SourceInfo {
                host: "db".into(),
                port: 3306,
                server_version: "10.11".into(),
                server_id: 1,
                dump_tool: "t".into(),
            },
        );
        m.started_at = started;
        m.binlog_file = Some(ArchivedBinlog {
            file: file.into(),
            server_id: 1,
            first_event_time: Some(at),
            last_event_time: Some(at + 1),
            last_commit_time: None,
            end_position: range.1,
            transactions: 1,
            first_gtid: None,
            last_gtid: Some(format!("0-1-{at}")),
            next_file: None,
            segment_start: (kind == BackupKind::Segment).then_some(range.0),
        });
        m
    }

    #[test]
    fn segments_chain_from_the_first_byte_and_a_whole_file_wins() {
        use BackupKind::{Binlog, Segment};
        let manifests = vec![
            record("w1", Binlog, "bin.000001", (0, 500), 100),
            record("s1a", Segment, "bin.000001", (0, 200), 90),
            record("s2a", Segment, "bin.000002", (0, 300), 110),
            record("s2b", Segment, "bin.000002", (300, 450), 120),
            // A restarted stream shipped the same start again, further.
            record("s2b2", Segment, "bin.000002", (300, 600), 125),
            // Not on the chain: nothing ends at 700.
            record("s2x", Segment, "bin.000002", (700, 800), 130),
        ];
        let files = archived_files(&manifests);
        assert_eq!(files.len(), 2);
        assert!(files[0].whole);
        assert_eq!(files[0].backup_ids(), ["w1"]);
        assert_eq!(files[0].end_position, 500);
        assert!(!files[1].whole);
        assert_eq!(files[1].backup_ids(), ["s2a", "s2b2"]);
        assert_eq!(files[1].end_position, 600);
        assert_eq!(files[1].last_gtid.as_deref(), Some("0-1-125"));
        assert_eq!(files[1].first_event_time, Some(110));
        let superseded: Vec<&str> = superseded_segments(&manifests)
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(superseded, ["s1a", "s2b", "s2x"]);
    }

    #[test]
    fn a_chain_without_its_first_segment_holds_nothing() {
        let manifests = vec![record(
            "s",
            BackupKind::Segment,
            "bin.000003",
            (400, 900),
            1,
        )];
        assert!(archived_files(&manifests).is_empty());
        assert_eq!(binlog_sequence("mysql-bin.000042"), Some(42));
        assert_eq!(binlog_sequence("nodot"), None);
    }

    fn full(id: &str, file: &str, at: i64) -> Manifest {
        let mut m = record(id, BackupKind::Full, file, (0, 0), at);
        m.binlog_file = None;
        m.binlog = Some(crate::manifest::BinlogCoordinates {
            file: file.into(),
            position: 400,
            gtid_position: None,
        });
        m
    }

    #[test]
    fn a_window_runs_from_a_full_backup_to_the_first_gap_or_damage() {
        use BackupKind::{Binlog, Segment};
        let manifests = vec![
            full("f1", "bin.000001", 50),
            record("w1", Binlog, "bin.000001", (0, 500), 100),
            record("w2", Binlog, "bin.000002", (0, 500), 200),
            // bin.000003 was purged before it was archived.
            record("w4", Binlog, "bin.000004", (0, 500), 400),
            full("f4", "bin.000004", 390),
            record("s5", Segment, "bin.000005", (0, 300), 500),
            record("w6", Binlog, "bin.000006", (0, 500), 600),
        ];
        let archive = Archive::new(&manifests);
        let chain = |id: &str, damaged: &[DamagedFile]| -> Vec<String> {
            let full = manifests.iter().find(|m| m.id == id).unwrap();
            archive
                .chain_from(full, damaged)
                .iter()
                .map(|f| f.file.clone())
                .collect()
        };
        assert_eq!(chain("f1", &[]), ["bin.000001", "bin.000002"]);
        // The file still being written ends the chain: nothing after it counts yet.
        assert_eq!(chain("f4", &[]), ["bin.000004", "bin.000005"]);
        let damaged = [DamagedFile {
            server_id: 1,
            file: "bin.000002".into(),
            why: "truncated".into(),
        }];
        assert_eq!(chain("f1", &damaged), ["bin.000001"]);
        let windows = archive.windows(&damaged);
        assert_eq!(
            windows
                .iter()
                .map(|w| (w.full_backup.as_str(), w.to))
                .collect::<Vec<_>>(),
            [("f1", Some(101)), ("f4", Some(501))]
        );
        assert_eq!(
            archive.gaps(),
            [
                "binlogs between bin.000002 and bin.000004 are missing from the archive (purged before they were archived)"
            ]
        );
    }

    #[test]
    fn a_full_backup_without_coordinates_has_no_window_and_no_chain() {
        let mut lone = full("f", "bin.000001", 1);
        lone.binlog = None;
        let manifests = vec![
            lone,
            record("w1", BackupKind::Binlog, "bin.000001", (0, 9), 2),
        ];
        let archive = Archive::new(&manifests);
        assert!(archive.windows(&[]).is_empty());
        assert!(archive.chain_from(&manifests[0], &[]).is_empty());
        assert!(archive.gaps().is_empty());
    }

    #[test]
    fn the_compact_entries_make_the_archive_their_manifests_make() {
        use BackupKind::{Binlog, Segment};
        let mut manifests = vec![
            full("f1", "bin.000001", 50),
            record("w1", Binlog, "bin.000001", (0, 500), 100),
            record("s2a", Segment, "bin.000002", (0, 300), 110),
            record("s2b", Segment, "bin.000002", (300, 450), 120),
            record("w4", Binlog, "bin.000004", (0, 500), 400),
            full("f4", "bin.000004", 390),
        ];
        for (i, m) in manifests.iter_mut().enumerate() {
            m.artifacts = vec![ArtifactRecord {
                name: "a".into(),
                key: format!("data/{}/a", m.id),
                compression: "zstd".into(),
                encrypted: false,
                size: 10,
                stored_size: i as u64 + 1,
                sha256: String::new(),
            }];
        }
        let entries: Vec<ArchiveEntry> = manifests.iter().map(ArchiveEntry::from).collect();
        let (by_manifest, by_entry) = (Archive::new(&manifests), Archive::new(&entries));
        type Summary = (String, bool, u64, Option<i64>, Option<String>, Timestamp);
        fn summary<P: Piece>(files: &[ArchivedFile<'_, P>]) -> Vec<Summary> {
            files
                .iter()
                .map(|f| {
                    (
                        f.file.clone(),
                        f.whole,
                        f.end_position,
                        f.last_commit_time,
                        f.last_gtid.clone(),
                        f.archived_at,
                    )
                })
                .collect()
        }
        assert_eq!(summary(by_manifest.files()), summary(by_entry.files()));
        // One artifact short on storage: both see the same damage, windows and gaps.
        let stored: Vec<crate::storage::ObjectMeta> = manifests
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(i, m)| crate::storage::ObjectMeta {
                key: format!("data/{}/a", m.id),
                size: i as u64 + 1,
                last_modified: None,
            })
            .collect();
        let damaged = damaged_files(by_manifest.files(), &stored);
        assert_eq!(damaged, damaged_files(by_entry.files(), &stored));
        assert_eq!(damaged.len(), 1);
        assert_eq!(by_manifest.windows(&damaged), by_entry.windows(&damaged));
        assert_eq!(by_manifest.gaps(), by_entry.gaps());
    }
}

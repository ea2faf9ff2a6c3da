//! `binlog find`: the archived transactions that changed a table, so an operator can restore to
//! the position just before an accidental `DELETE`.
//!
//! Every archived binlog file whose event times can overlap the requested period is read back
//! (each piece's digest verified as it streams, decrypted, decompressed) and scanned by
//! [`coffer_core::binlog_events::EventScanner`], whose transaction boundaries are those of the
//! binlog index that point-in-time restores use: a match's `start_position` is a valid
//! `--at-position` that stops right before it.

use std::io::Read;

use coffer_core::archive::archived_files;
use coffer_core::binlog_events::{ChangeKind, EventScanner, TableFilter, TransactionChanges};
use coffer_core::manifest::Manifest;
use coffer_core::pipeline::{ArtifactReader, ArtifactRecord};
use coffer_core::repository::Repository;
use coffer_core::{Error, Result};
use jiff::Timestamp;
use serde::Serialize;
use tokio_util::io::SyncIoBridge;

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct FindFilter {
    /// The table, in any database unless `database` is set (names compare ASCII
    /// case-insensitively).
    pub table: String,
    /// Only this database.
    pub database: Option<String>,
    /// Only changes of this kind.
    pub kind: Option<ChangeKind>,
    /// Only transactions committed at or after this moment (binlog times have whole seconds:
    /// compared with the second it falls in).
    pub since: Option<Timestamp>,
    /// Only transactions committed at or before this moment (same granularity).
    pub until: Option<Timestamp>,
}

impl FindFilter {
    /// Reads `--table` as `db.table` (split at the first dot) or a bare `table`; an explicit
    /// `--database` must agree with a qualified table.
    pub fn new(table: &str, database: Option<&str>) -> Result<Self> {
        let (qualifier, name) = match table.split_once('.') {
            Some((db, name)) => (Some(db), name),
            None => (None, table),
        };
        if name.is_empty() || qualifier.is_some_and(str::is_empty) {
            return Err(Error::config(format!(
                "--table {table:?} is not a table name (want \"invoices\" or \"app.invoices\")"
            )));
        }
        let database = match (qualifier, database) {
            (Some(q), Some(d)) if q != d => {
                return Err(Error::config(format!(
                    "--table {table:?} and --database {d:?} name different databases"
                )));
            }
            (q, d) => q.or(d).map(String::from),
        };
        Ok(Self {
            table: name.to_string(),
            database,
            ..Default::default()
        })
    }

    fn tables(&self) -> TableFilter {
        TableFilter {
            database: self.database.clone(),
            table: Some(self.table.clone()),
        }
    }

    fn accepts_time(&self, second: i64) -> bool {
        self.since.is_none_or(|s| second >= s.as_second())
            && self.until.is_none_or(|u| second <= u.as_second())
    }
}

/// One transaction's change of one kind to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    /// Binlog file name.
    pub file: String,
    /// Position of the transaction's first event: `--at-position FILE:START` restores everything
    /// before it.
    pub start_position: u64,
    /// Position just after its last event.
    pub end_position: u64,
    /// Its GTID (`domain-server-sequence`), when the server writes them.
    pub gtid: Option<String>,
    /// Header time of its last event (whole seconds), RFC 3339 UTC in JSON.
    pub commit_time: Timestamp,
    /// `insert`, `update` or `delete`.
    pub kind: ChangeKind,
    /// `db.table`, or the bare table when the binlog names no database for it.
    pub table: String,
    /// Rows changed, when the binlog holds them as row events; `null` for a statement.
    pub rows: Option<u64>,
}

/// Every matching transaction in the archive, in file order (files by number, then position).
pub async fn find(
    repository: &Repository,
    manifests: &[Manifest],
    filter: &FindFilter,
    identity: Option<&age::x25519::Identity>,
) -> Result<Vec<Match>> {
    let mut files = archived_files(manifests);
    files.sort_by_key(|f| (f.sequence, f.archived_at));
    let mut matches = Vec::new();
    for file in &files {
        // A file can only hold commits between its first and last event times.
        let since = filter.since.map(|s| s.as_second());
        let until = filter.until.map(|u| u.as_second());
        if since.is_some_and(|s| file.last_event_time.is_some_and(|last| last < s))
            || until.is_some_and(|u| file.first_event_time.is_some_and(|first| first > u))
        {
            continue;
        }
        let pieces = file.binlog_artifacts()?;
        matches.extend(scan_file(repository, &file.file, &pieces, identity, filter).await?);
    }
    Ok(matches)
}

/// Scans one binlog file stored as `pieces` (one artifact for a file archived whole, several
/// segments concatenated in order for a file the server was still writing).
pub async fn scan_file(
    repository: &Repository,
    file_name: &str,
    pieces: &[ArtifactRecord],
    identity: Option<&age::x25519::Identity>,
    filter: &FindFilter,
) -> Result<Vec<Match>> {
    let found = scan_changes(repository, file_name, pieces, identity, filter.tables()).await?;
    let mut matches = Vec::new();
    for tx in found {
        let t = &tx.transaction;
        if !filter.accepts_time(t.commit_time) {
            continue;
        }
        let commit_time = Timestamp::from_second(t.commit_time).map_err(|e| {
            Error::integrity(format!(
                "{file_name}: bad commit time {}: {e}",
                t.commit_time
            ))
        })?;
        for change in &tx.changes {
            if filter.kind.is_some_and(|k| k != change.kind) {
                continue;
            }
            matches.push(Match {
                file: file_name.to_string(),
                start_position: t.start_position,
                end_position: t.end_position,
                gtid: t.gtid.clone(),
                commit_time,
                kind: change.kind,
                table: match &change.database {
                    Some(db) => format!("{db}.{}", change.table),
                    None => change.table.clone(),
                },
                rows: change.rows,
            });
        }
    }
    Ok(matches)
}

/// Every committed transaction in one archived binlog file (its pieces concatenated) with the
/// changes it made to tables `tables` accepts, in file order.
pub async fn scan_changes(
    repository: &Repository,
    file_name: &str,
    pieces: &[ArtifactRecord],
    identity: Option<&age::x25519::Identity>,
    tables: TableFilter,
) -> Result<Vec<TransactionChanges>> {
    let mut scanner = EventScanner::new(tables);
    let mut found = Vec::new();
    for record in pieces {
        let object = coffer_core::pipeline::open_artifact(repository.storage(), record).await?;
        let record = record.clone();
        let identity = identity.cloned();
        // The scanner crosses piece boundaries: segments continue each other's events.
        let (back, changes) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut reader = ArtifactReader::new(
                Box::new(SyncIoBridge::new(object)),
                &record,
                identity.as_ref(),
            )?;
            let mut buffer = vec![0u8; 256 * 1024];
            let mut changes = Vec::new();
            loop {
                let n = reader.read(&mut buffer).map_err(Error::from)?;
                if n == 0 {
                    break;
                }
                scanner.feed(&buffer[..n]);
                changes.extend(scanner.drain());
            }
            Ok((scanner, changes))
        })
        .await
        .map_err(|e| Error::other(format!("binlog scan task failed: {e}")))??;
        scanner = back;
        found.extend(changes);
    }
    found.extend(
        scanner
            .finish()
            .map_err(|e| Error::integrity(format!("{file_name}: {e}")))?,
    );
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_read_with_or_without_a_database() {
        let f = FindFilter::new("app.invoices", None).unwrap();
        assert_eq!(
            (f.database.as_deref(), f.table.as_str()),
            (Some("app"), "invoices")
        );
        let f = FindFilter::new("invoices", Some("app")).unwrap();
        assert_eq!(
            (f.database.as_deref(), f.table.as_str()),
            (Some("app"), "invoices")
        );
        let f = FindFilter::new("invoices", None).unwrap();
        assert_eq!(f.database, None);
        assert!(FindFilter::new("app.invoices", Some("other")).is_err());
        assert!(FindFilter::new(".invoices", None).is_err());
        assert!(FindFilter::new("", None).is_err());
    }

    #[test]
    fn times_compare_by_the_second() {
        let mut f = FindFilter::new("t", None).unwrap();
        f.since = Some("2025-01-01T00:00:10.5Z".parse().unwrap());
        f.until = Some("2025-01-01T00:00:20Z".parse().unwrap());
        let at = |s: &str| s.parse::<Timestamp>().unwrap().as_second();
        assert!(f.accepts_time(at("2025-01-01T00:00:10Z")));
        assert!(f.accepts_time(at("2025-01-01T00:00:20Z")));
        assert!(!f.accepts_time(at("2025-01-01T00:00:09Z")));
        assert!(!f.accepts_time(at("2025-01-01T00:00:21Z")));
    }
}

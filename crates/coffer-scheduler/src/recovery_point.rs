//! The recovery point: how far behind the source the binlog archive is. Its age — seconds
//! between the newest transaction committed on the server and the newest one archived — is what
//! an operator would lose if the source vanished now.

use coffer_core::archive::{Archive, ArchivedFile, DamagedFile, Piece};
use coffer_core::binlog::BinlogIndexer;
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::repository::Repository;
use coffer_core::{Error, Result};
use serde::Serialize;

use crate::archiver::{BinlogSource, gtid_binlog_pos};

/// The archive against the server.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryPoint {
    /// Commit time (Unix seconds) of the newest archived transaction of this server.
    pub archived_commit_time: Option<i64>,
    /// Its GTID.
    pub archived_gtid: Option<String>,
    /// The archived file holding it, and whether that file is archived whole.
    pub archived_file: Option<String>,
    /// `@@gtid_binlog_pos` on the server.
    pub server_gtid_position: String,
    /// Commit time of the newest transaction on the server, when it had to be read (only when
    /// the archive lacks something).
    pub server_commit_time: Option<i64>,
    /// Whether every transaction the server has committed is archived.
    pub fully_archived: bool,
    /// `server_commit_time - archived_commit_time`, 0 when fully archived; `None` when it cannot
    /// be told (nothing archived yet).
    pub age_seconds: Option<i64>,
}

/// Whether every GTID in a server's `gtid_binlog_pos` is at or below what the archive holds in
/// the same domain.
fn covered<P: Piece>(server_pos: &str, archived: &[&ArchivedFile<'_, P>]) -> bool {
    let parse = |g: &str| -> Option<(u32, u64)> {
        let mut parts = g.trim().split('-');
        let domain = parts.next()?.parse().ok()?;
        let _server = parts.next()?;
        let seq = parts.next()?.parse().ok()?;
        Some((domain, seq))
    };
    server_pos
        .split(',')
        .filter(|g| !g.trim().is_empty())
        .all(|g| {
            let Some((domain, seq)) = parse(g) else {
                return false;
            };
            archived
                .iter()
                .filter_map(|f| f.last_gtid.as_deref().and_then(parse))
                .any(|(d, s)| d == domain && s >= seq)
        })
}

/// Measures the recovery point of `config`'s source against `repository`.
///
/// `archive` and `damaged` (its files whose stored bytes are not what their manifests promise)
/// are the repository as the caller just listed it, so a status lists and builds it once.
pub async fn recovery_point<P: Piece + Sync>(
    config: &Config,
    repository: &Repository,
    job: &JobContext,
    archive: &Archive<'_, P>,
    damaged: &[DamagedFile],
) -> Result<RecoveryPoint> {
    let source = BinlogSource::connect(config, repository, job).await?;
    let server_id = source.server.server_id;
    // Only as far as the sizes on storage show: a damaged file and what follows it are not a
    // recovery point.
    let first_damaged = damaged
        .iter()
        .filter(|d| d.server_id == server_id)
        .filter_map(|d| archive.of_server(server_id).find(|f| f.file == d.file))
        .map(|f| f.sequence)
        .min();
    let archived: Vec<&ArchivedFile<'_, P>> = archive
        .of_server(server_id)
        .filter(|f| first_damaged.is_none_or(|first| f.sequence < first))
        .collect();
    let newest = archived
        .iter()
        .filter(|f| f.last_gtid.is_some())
        .max_by_key(|f| (f.sequence, f.end_position));
    let mut conn = coffer_core::client::connect(&source.endpoint).await?;
    let server_pos = gtid_binlog_pos(&mut conn).await?;
    drop(conn);
    let mut point = RecoveryPoint {
        archived_commit_time: newest.and_then(|f| f.last_commit_time),
        archived_gtid: newest.and_then(|f| f.last_gtid.clone()),
        archived_file: newest.map(|f| f.file.clone()),
        server_gtid_position: server_pos.clone(),
        server_commit_time: None,
        fully_archived: covered(&server_pos, &archived),
        age_seconds: None,
    };
    if point.fully_archived {
        point.age_seconds = Some(0);
        return Ok(point);
    }
    // Read the server's newest transaction from the tail of its binlogs, newest file first,
    // from where the archive's copy of that file ends (so only unarchived bytes are fetched).
    // Every file, not the newest few: a source that restarted (or crashed) several times has
    // opened a file per start, each holding no transaction.
    let binlogs = source.compare_binlogs(&archived, false).await?;
    for file in binlogs.on_server.iter().rev() {
        let from = archived
            .iter()
            .find(|f| &f.file == file)
            .map_or(4, |f| f.end_position.max(4));
        if let Some(time) = newest_commit_after(&source, file, from).await? {
            point.server_commit_time = Some(time);
            break;
        }
    }
    point.age_seconds = point
        .server_commit_time
        .zip(point.archived_commit_time)
        .map(|(server, archived)| (server - archived).max(0));
    Ok(point)
}

/// The commit time of the last transaction in `file` after `position`, read over the replication
/// protocol (`--raw --start-position`: the format description event, then events from there).
async fn newest_commit_after(
    source: &BinlogSource<'_>,
    file: &str,
    position: u64,
) -> Result<Option<i64>> {
    let scratch = coffer_core::scratch::dir("tail-")?;
    let local = source
        .fetch_closed_from(file, position, scratch.path())
        .await?;
    // Read in pieces, keeping only the newest commit time: the unarchived tail may be a whole
    // file of the server's, a million transactions.
    let mut indexer = BinlogIndexer::new();
    let mut newest = None;
    let fail = |e: std::io::Error| Error::other(format!("{}: {e}", local.display()));
    let mut tail = std::fs::File::open(&local).map_err(fail)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = std::io::Read::read(&mut tail, &mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        indexer.feed(&buf[..n]);
        if let Some(t) = indexer.drain_transactions().last() {
            newest = Some(t.commit_time);
        }
    }
    let index = indexer
        .finish()
        .map_err(|e| Error::integrity(format!("{file} from {position}: {e}")))?;
    Ok(index.transactions.last().map(|t| t.commit_time).or(newest))
}

#[cfg(test)]
mod tests {
    #[test]
    fn gtid_positions_are_compared_per_domain() {
        use coffer_core::manifest::{ArchivedBinlog, BackupKind, Manifest, SourceInfo};
        let mut m = Manifest::finished_now(
            "x",
            BackupKind::Binlog,
            jiff::Timestamp::UNIX_EPOCH,
            SourceInfo {
                host: "h".into(),
                port: 1,
                server_version: "v".into(),
                server_id: 1,
                dump_tool: "t".into(),
            },
        );
        m.binlog_file = Some(ArchivedBinlog {
            file: "b.000001".into(),
            server_id: 1,
            first_event_time: None,
            last_event_time: None,
            last_commit_time: None,
            end_position: 100,
            transactions: 1,
            first_gtid: None,
            last_gtid: Some("0-1-57".into()),
            next_file: None,
            segment_start: None,
        });
        let manifests = [m];
        let files = coffer_core::archive::archived_files(&manifests);
        let files: Vec<_> = files.iter().collect();
        assert!(super::covered("0-1-57", &files));
        assert!(super::covered("0-2-50", &files));
        assert!(!super::covered("0-1-58", &files));
        assert!(!super::covered("0-1-57,1-1-3", &files));
        assert!(super::covered("", &files));
    }
}

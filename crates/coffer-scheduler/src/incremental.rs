//! The incremental backup: archive every closed binary log of the source over the replication
//! protocol (the backup host reads nothing from the database host's disk).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::Stdio;

use coffer_core::binlog::BinlogIndexer;
use coffer_core::client::{self, DefaultsFile, Endpoint, Tool};
use coffer_core::config::Config;
use coffer_core::manifest::{ArchivedBinlog, BackupKind, Manifest, SourceInfo, new_backup_id};
use coffer_core::pipeline::{self, Encoding, Progress};
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind, Result};
use jiff::Timestamp;
use sqlx::Row;
use tracing::{Instrument, info, info_span, warn};

/// Archives the source's closed binlogs that the repository lacks, oldest first, one backup of
/// kind `binlog` each. The active binlog is rotated first (`FLUSH BINARY LOGS`) when it holds
/// transactions the archive lacks, so a run leaves nothing committed unarchived; a run with
/// nothing new changes nothing. Returns the new manifests.
pub async fn run_incremental_backup(
    config: &Config,
    repository: &Repository,
    progress: Progress,
) -> Result<Vec<Manifest>> {
    let span = info_span!("backup.incremental", source = %format!("{}:{}", config.source.host, config.source.port));
    async { incremental(config, repository, progress).await }
        .instrument(span)
        .await
}

/// Binlog names sort by their numeric suffix; the name before the dot is the server's base name.
fn sequence(file: &str) -> Option<u64> {
    file.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
}

async fn incremental(
    config: &Config,
    repository: &Repository,
    progress: Progress,
) -> Result<Vec<Manifest>> {
    let endpoint = Endpoint::from(&config.source);
    let mut conn = client::connect(&endpoint).await?;
    let server = client::server_info(&mut conn).await?;
    if !server.log_bin {
        return Err(Error::new(
            ErrorKind::Backup,
            format!("{endpoint} writes no binary log: enable log_bin for incremental backups"),
        ));
    }
    repository.ensure_initialized().await?;
    let archived: Vec<Manifest> = repository
        .list()
        .await?
        .into_iter()
        .filter(|m| m.kind == BackupKind::Binlog && m.source.server_id == server.server_id)
        .collect();
    let archived_files: BTreeSet<String> = archived
        .iter()
        .filter_map(|m| m.binlog_file.as_ref())
        .map(|b| b.file.clone())
        .collect();
    let archived_gtids: BTreeSet<String> = archived
        .iter()
        .filter_map(|m| m.binlog_file.as_ref()?.last_gtid.clone())
        .collect();

    let db_error = |what: &str, e: sqlx::Error| {
        Error::database(format!("{what}: {}", coffer_core::error_chain(&e)))
    };
    let gtid_row = sqlx::query("SELECT CAST(@@gtid_binlog_pos AS CHAR)")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| db_error("reading the GTID position", e))?;
    let gtid_pos: String = gtid_row
        .try_get(0)
        .map_err(|e| db_error("reading the GTID position", e))?;
    // Something is committed that no archived file ends with: rotate so it lands in a closed file.
    let unarchived = !gtid_pos.is_empty()
        && gtid_pos
            .split(',')
            .any(|g| !archived_gtids.contains(g.trim()));
    if unarchived {
        sqlx::query("FLUSH BINARY LOGS")
            .execute(&mut conn)
            .await
            .map_err(|e| db_error("rotating the binary log", e))?;
    }
    let rows = sqlx::query("SHOW BINARY LOGS")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| db_error("listing binary logs", e))?;
    drop(conn);
    let mut on_server = Vec::new();
    for row in rows {
        let name: Vec<u8> = row
            .try_get(0)
            .map_err(|e| db_error("listing binary logs", e))?;
        on_server.push(String::from_utf8_lossy(&name).into_owned());
    }
    // The last file is the one being written.
    let closed = &on_server[..on_server.len().saturating_sub(1)];
    let to_fetch: Vec<&String> = closed
        .iter()
        .filter(|f| !archived_files.contains(*f))
        .collect();

    // A file between the newest archived one and the oldest on the server was purged unarchived.
    let gap = archived_files
        .iter()
        .filter_map(|f| sequence(f))
        .max()
        .zip(on_server.first().and_then(|f| sequence(f)))
        .filter(|(last, first)| *first > last + 1);

    let tool = Tool::find(&["mariadb-binlog", "mysqlbinlog"])?;
    let encoding = Encoding {
        compression: config.repository.compression,
        recipient: config.repository.encryption_recipient.clone(),
    };
    let mut manifests = Vec::new();
    for file in to_fetch {
        let manifest = archive_one(
            config,
            repository,
            &endpoint,
            &server,
            &tool,
            &encoding,
            file,
            progress.clone(),
        )
        .await?;
        manifests.push(manifest);
    }
    info!(
        archived = manifests.len(),
        on_server = on_server.len(),
        "incremental backup done"
    );
    if let Some((last, first)) = gap {
        return Err(Error::new(
            ErrorKind::Backup,
            format!(
                "binlogs after sequence {last} up to {} were purged on the server before they were archived: point-in-time recovery has a gap there",
                first - 1
            ),
        ));
    }
    Ok(manifests)
}

#[allow(clippy::too_many_arguments)]
async fn archive_one(
    config: &Config,
    repository: &Repository,
    endpoint: &Endpoint,
    server: &client::ServerInfo,
    tool: &Tool,
    encoding: &Encoding,
    file: &str,
    progress: Progress,
) -> Result<Manifest> {
    let started_at = Timestamp::now();
    let id = new_backup_id(BackupKind::Binlog, started_at);
    let result: Result<Manifest> = async {
        // mariadb-binlog --raw writes files, not a stream: fetch into a private temp folder, then
        // store from there (the file is on local disk once, never in memory).
        let scratch = tempfile::Builder::new()
            .prefix("coffer-binlog-")
            .tempdir()
            .map_err(|e| Error::other(format!("creating a temp folder: {e}")))?;
        let defaults = DefaultsFile::new(endpoint)?;
        let output = tokio::process::Command::new(&tool.path)
            .arg(defaults.arg())
            .args(["--read-from-remote-server", "--raw"])
            .arg(format!("--result-file={}/", scratch.path().display()))
            .arg(file)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::other(format!("cannot start {}: {e}", tool.path.display())))?;
        drop(defaults);
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Error::new(
                ErrorKind::Backup,
                format!(
                    "fetching {file} failed ({}): {}",
                    output.status,
                    stderr.trim().replace('\n', " | ")
                ),
            ));
        }
        let local = scratch.path().join(file);
        let key = Repository::data_key(&id, &format!("{file}{}", encoding.suffix()));
        let file_name = file.to_string();
        let (record, index) = pipeline::store(
            repository.storage(),
            file,
            &key,
            encoding,
            progress,
            move |writer| {
                let mut input = std::fs::File::open(&local)
                    .map_err(|e| Error::other(format!("{}: {e}", local.display())))?;
                let mut indexer = BinlogIndexer::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = input.read(&mut buf).map_err(Error::from)?;
                    if n == 0 {
                        break;
                    }
                    indexer.feed(&buf[..n]);
                    writer.write_all(&buf[..n]).map_err(Error::from)?;
                }
                indexer
                    .finish()
                    .map_err(|e| Error::integrity(format!("{file_name}: {e}")))
            },
        )
        .await?;
        if !index.closed {
            // Not the active file, yet no rotate event: the server stopped abruptly while writing
            // it and started a new file on restart. It is complete as far as the server goes;
            // the index holds its whole transactions.
            warn!(
                file,
                "binlog ends without a rotate event: the server crashed while writing it"
            );
        }
        let index_json = serde_json_vec(&index);
        let index_key =
            Repository::data_key(&id, &format!("{file}.index.json{}", encoding.suffix()));
        let (index_record, ()) = pipeline::store(
            repository.storage(),
            "index.json",
            &index_key,
            encoding,
            Progress::default(),
            move |writer| writer.write_all(&index_json).map_err(Error::from),
        )
        .await?;
        let summary = ArchivedBinlog {
            file: file.to_string(),
            server_id: index.server_id,
            first_event_time: index.first_event_time,
            last_event_time: index.last_event_time,
            end_position: index.end_position,
            transactions: index.transactions.len() as u64,
            first_gtid: index.transactions.first().and_then(|t| t.gtid.clone()),
            last_gtid: index.transactions.last().and_then(|t| t.gtid.clone()),
            next_file: index.next_file.clone(),
        };
        let source = SourceInfo {
            host: config.source.host.clone(),
            port: config.source.port,
            server_version: server.version.clone(),
            server_id: server.server_id,
            dump_tool: tool.version.clone(),
        };
        let mut manifest = Manifest::finished_now(&id, BackupKind::Binlog, started_at, source);
        manifest.artifacts = vec![record, index_record];
        manifest.binlog_file = Some(summary);
        repository.write_manifest(&manifest).await?;
        info!(
            file,
            transactions = manifest.binlog_file.as_ref().map_or(0, |b| b.transactions),
            "binlog archived"
        );
        Ok(manifest)
    }
    .await;
    if result.is_err()
        && let Err(cleanup) = repository.remove_data(&id).await
    {
        warn!(error = %cleanup, "objects of the failed archive under data/{id}/ are left behind");
    }
    result
}

fn serde_json_vec(index: &coffer_core::binlog::BinlogIndex) -> Vec<u8> {
    let mut out = serde_json::to_vec(index).expect("an index always serializes");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn binlog_names_sort_by_sequence() {
        assert_eq!(super::sequence("mysql-bin.000042"), Some(42));
        assert_eq!(super::sequence("host-bin.1000000"), Some(1_000_000));
        assert_eq!(super::sequence("nodot"), None);
    }
}

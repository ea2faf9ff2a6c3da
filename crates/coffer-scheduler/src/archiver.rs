//! What the incremental backup and the continuous stream share: reading the source's binlog list,
//! fetching a binlog over the replication protocol, and storing a whole file or a segment of one
//! (bytes and transaction index) with its manifest written last.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use coffer_core::archive::{self, ArchivedFile, INDEX_ARTIFACT, Piece, binlog_sequence};
use coffer_core::binlog::{
    BinlogIndexer, IndexHeader, Transaction, TransactionSummary, TransactionWriter,
};
use coffer_core::client::{self, DefaultsFile, Endpoint, ServerInfo, Tool};
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::manifest::{ArchivedBinlog, BackupKind, Manifest, SourceInfo, new_backup_id};
use coffer_core::names;
use coffer_core::pipeline::{self, Encoding, Progress};
use coffer_core::process::Logged;
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind, Result};
use jiff::Timestamp;
use sqlx::Row;
use tracing::{info, warn};

/// The source server and everything needed to archive its binlogs into one repository.
pub struct BinlogSource<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// Where archives go.
    pub repository: &'a Repository,
    /// The job this source works for: its cancellation and clock.
    pub job: &'a JobContext,
    /// The source server's address and account.
    pub endpoint: Endpoint,
    /// What the server said about itself.
    pub server: ServerInfo,
    /// `mariadb-binlog` (or `mysqlbinlog`).
    pub tool: Tool,
    /// Compression and encryption of stored objects.
    pub encoding: Encoding,
}

/// The source's binlogs against the archive's.
#[derive(Debug, Clone)]
pub struct ServerBinlogs {
    /// Every binlog on the server, oldest first; the last is the one being written.
    pub on_server: Vec<String>,
    /// Files archived whole, for this server id.
    pub archived_whole: std::collections::BTreeSet<String>,
    /// `(newest archived number, oldest number on the server)` when files between them were
    /// purged on the server before they were archived.
    pub purged_gap: Option<(u64, u64)>,
}

impl ServerBinlogs {
    /// The sentence that reports [`ServerBinlogs::purged_gap`].
    pub fn gap_message(&self) -> Option<String> {
        self.purged_gap.map(|(last, first)| {
            format!(
                "binlogs after sequence {last} up to {} were purged on the server before they were archived: point-in-time recovery has a gap there",
                first - 1
            )
        })
    }
}

fn db_error(what: &str, e: sqlx::Error) -> Error {
    Error::database(format!("{what}: {}", coffer_core::error_chain(&e)))
}

impl<'a> BinlogSource<'a> {
    /// Connects to the source and checks it writes a binary log.
    pub async fn connect(
        config: &'a Config,
        repository: &'a Repository,
        job: &'a JobContext,
    ) -> Result<Self> {
        let endpoint = Endpoint::from(config.source()?).with_stall_timeout(config.stall_timeout);
        let mut conn = client::connect(&endpoint).await?;
        let server = client::server_info(&mut conn, &endpoint).await?;
        if !server.log_bin {
            return Err(Error::new(
                ErrorKind::Backup,
                format!("{endpoint} writes no binary log: enable log_bin to archive binlogs"),
            ));
        }
        Ok(Self {
            config,
            repository,
            job,
            endpoint,
            server,
            tool: Tool::find(&["mariadb-binlog", "mysqlbinlog"])?,
            encoding: Encoding {
                compression: config.repository.compression,
                recipient: config.repository.encryption_recipient.clone(),
            },
        })
    }

    /// This server's files in the archive (whole, or the segment chain of the active one).
    pub fn archived<'m, P: Piece>(&self, manifests: &'m [P]) -> Vec<ArchivedFile<'m, P>> {
        archive::archived_files(manifests)
            .into_iter()
            .filter(|f| f.server_id == self.server.server_id)
            .collect()
    }

    /// Reads the server's binlog list (after `FLUSH BINARY LOGS` when `rotate_if` says the
    /// server holds transactions the archive lacks) and compares it with the archive.
    pub async fn server_binlogs<P: Piece + Sync>(
        &self,
        manifests: &[P],
        rotate_unarchived: bool,
    ) -> Result<ServerBinlogs> {
        let archived = self.archived(manifests);
        let archived: Vec<&ArchivedFile<'_, P>> = archived.iter().collect();
        self.compare_binlogs(&archived, rotate_unarchived).await
    }

    /// [`BinlogSource::server_binlogs`] against this server's files of an archive already
    /// built (`archived`), so a caller holding one does not build it again.
    pub async fn compare_binlogs<P: Piece + Sync>(
        &self,
        archived: &[&ArchivedFile<'_, P>],
        rotate_unarchived: bool,
    ) -> Result<ServerBinlogs> {
        let archived_whole: std::collections::BTreeSet<String> = archived
            .iter()
            .filter(|f| f.whole)
            .map(|f| f.file.clone())
            .collect();
        let mut conn = client::connect(&self.endpoint).await?;
        if rotate_unarchived {
            let archived_gtids: std::collections::BTreeSet<&str> = archived
                .iter()
                .filter(|f| f.whole)
                .filter_map(|f| f.last_gtid.as_deref())
                .collect();
            let gtid_pos = gtid_binlog_pos(&mut conn).await?;
            // Something is committed that no archived file ends with: rotate so it lands in a
            // closed file.
            if gtid_pos
                .split(',')
                .map(str::trim)
                .any(|g| !g.is_empty() && !archived_gtids.contains(g))
            {
                sqlx::query("FLUSH BINARY LOGS")
                    .execute(&mut conn)
                    .await
                    .map_err(|e| db_error("rotating the binary log", e))?;
            }
        }
        let rows = sqlx::query("SHOW BINARY LOGS")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| db_error("listing binary logs", e))?;
        let mut on_server = Vec::new();
        for row in rows {
            let name: Vec<u8> = row
                .try_get(0)
                .map_err(|e| db_error("listing binary logs", e))?;
            on_server.push(String::from_utf8_lossy(&name).into_owned());
        }
        // A file between the newest archived one and the oldest on the server was purged
        // unarchived.
        let purged_gap = archived
            .iter()
            .map(|f| f.sequence)
            .max()
            .zip(on_server.first().and_then(|f| binlog_sequence(f)))
            .filter(|(last, first)| *first > last + 1);
        Ok(ServerBinlogs {
            on_server,
            archived_whole,
            purged_gap,
        })
    }

    /// Starts `mariadb-binlog --read-from-remote-server --raw` writing `first` (and, with
    /// `stop_never`, every later file as the server writes it) into `dir`. The returned guard
    /// keeps the password file alive as long as the child may read it.
    pub fn spawn_fetch(
        &self,
        first: &str,
        dir: &Path,
        stop_never: Option<u32>,
    ) -> Result<(tokio::process::Child, DefaultsFile)> {
        self.spawn_fetch_from(first, 4, dir, stop_never)
    }

    fn spawn_fetch_from(
        &self,
        first: &str,
        position: u64,
        dir: &Path,
        stop_never: Option<u32>,
    ) -> Result<(tokio::process::Child, DefaultsFile)> {
        // The name comes from the server; as an argument it must not read as an option.
        names::check_binlog_file(first)
            .map_err(|why| Error::new(ErrorKind::Backup, format!("the source lists {why}")))?;
        self.job.cancel.check()?;
        let defaults = DefaultsFile::new(&self.endpoint)?;
        let mut command =
            coffer_core::process::async_tool_command(&self.tool.path, stop_never.is_some());
        command
            .arg(defaults.arg())
            .args(["--read-from-remote-server", "--raw"])
            .arg(format!("--result-file={}/", dir.display()));
        if position > 4 {
            // The file then holds the format description event, then the events from here:
            // not a byte copy of the server's file, only good for reading events.
            command.arg(format!("--start-position={position}"));
        }
        if let Some(server_id) = stop_never {
            command
                .arg("--stop-never")
                .arg(format!("--stop-never-slave-server-id={server_id}"));
        }
        let child = command
            .arg(first)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .logged()
            .spawn()
            .map_err(|e| Error::other(format!("cannot start {}: {e}", self.tool.path.display())))?;
        Ok((child, defaults))
    }

    /// Fetches one closed binlog into `dir` and returns its path.
    pub async fn fetch_closed(&self, file: &str, dir: &Path) -> Result<PathBuf> {
        self.fetch_closed_from(file, 4, dir).await
    }

    /// Fetches a binlog's events from `position` to its current end into `dir` (after its format
    /// description event when `position` is past the start) and returns the local path.
    pub async fn fetch_closed_from(
        &self,
        file: &str,
        position: u64,
        dir: &Path,
    ) -> Result<PathBuf> {
        let (child, defaults) = self.spawn_fetch_from(file, position, dir, None)?;
        let group = coffer_core::process::Registered::new(child.id(), &self.job.cancel);
        // The fetch writes a file: its growth is its progress. A source that freezes mid-file
        // is stopped after stall_timeout_seconds instead of hanging the job.
        let watchdog = coffer_core::process::Watchdog::start(child.id(), self.config.stall_timeout);
        let (ticker, local) = (watchdog.ticker(), dir.join(file));
        let growth = tokio::spawn(async move {
            let mut seen = 0;
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let size = tokio::fs::metadata(&local).await.map_or(0, |m| m.len());
                if size != seen {
                    seen = size;
                    ticker.tick();
                }
            }
        });
        let output = child.wait_with_output().await;
        growth.abort();
        let output = output
            .map_err(|e| Error::other(format!("waiting for {}: {e}", self.tool.path.display())))?;
        drop(group);
        drop(defaults);
        self.job.cancel.check()?;
        if watchdog.stalled() {
            return Err(watchdog.error(ErrorKind::Backup, &format!("fetching {file}")));
        }
        if !output.status.success() {
            let stderr = coffer_core::process::tail_lines(&output.stderr, 5);
            return Err(Error::new(
                ErrorKind::Backup,
                format!("fetching {file} failed ({}): {}", output.status, stderr),
            ));
        }
        Ok(dir.join(file))
    }

    fn source_info(&self) -> SourceInfo {
        SourceInfo {
            host: self.endpoint.host.clone(),
            port: self.endpoint.port,
            server_version: self.server.version.clone(),
            server_id: self.server.server_id,
            dump_tool: self.tool.version.clone(),
        }
    }

    /// Archives a complete binlog file from local disk as a `binlog` backup: its bytes (indexed
    /// as they stream into storage), its index, then its manifest.
    pub async fn archive_whole(
        &self,
        file: &str,
        local: &Path,
        progress: Progress,
    ) -> Result<Manifest> {
        let started_at = self.job.clock.now();
        let id = new_backup_id(BackupKind::Binlog, started_at);
        let result = async {
            let key = Repository::data_key(&id, &format!("{file}{}", self.encoding.suffix()));
            let local = local.to_path_buf();
            let name = file.to_string();
            let (record, (header, transactions)) = pipeline::store(
                self.repository.storage(),
                file,
                &key,
                &self.encoding,
                progress,
                move |writer| {
                    // Transactions go to a spool file as they are indexed: a file of a million
                    // transactions has an index of about 100 MB.
                    let mut indexer = BinlogIndexer::new();
                    let mut spool = IndexSpool::new()?;
                    copy_range(&local, 0, None, writer, |chunk| {
                        indexer.feed(chunk);
                        spool.extend(indexer.drain_transactions())
                    })?;
                    let index = indexer
                        .finish()
                        .map_err(|e| Error::integrity(format!("{name}: {e}")))?;
                    let header = index.header();
                    spool.extend(index.transactions)?;
                    Ok((header, spool))
                },
            )
            .await?;
            if !header.closed {
                // Not the active file, yet no rotate event: the server stopped abruptly while
                // writing it and started a new file on restart. It is complete as far as the
                // server goes; the index holds its whole transactions.
                warn!(
                    file,
                    "binlog ends without a rotate event: the server crashed while writing it"
                );
            }
            self.finish(
                &id,
                BackupKind::Binlog,
                started_at,
                file,
                record,
                &header,
                transactions,
                None,
            )
            .await
        }
        .await;
        self.clean_up_failed(&id, &result).await;
        result
    }

    /// Archives bytes `start..end` of a binlog the server is still writing as a `segment`
    /// backup. `header` holds the file's header fields (`end_position` the range's end) and
    /// `transactions` the transactions inside the range.
    pub async fn archive_segment(
        &self,
        file: &str,
        local: &Path,
        start: u64,
        header: IndexHeader,
        transactions: IndexSpool,
    ) -> Result<Manifest> {
        let started_at = self.job.clock.now();
        let id = new_backup_id(BackupKind::Segment, started_at);
        let end = header.end_position;
        let result = async {
            let key = Repository::data_key(&id, &format!("{file}{}", self.encoding.suffix()));
            let local = local.to_path_buf();
            let (record, ()) = pipeline::store(
                self.repository.storage(),
                file,
                &key,
                &self.encoding,
                Progress::default(),
                move |writer| copy_range(&local, start, Some(end), writer, |_| Ok(())),
            )
            .await?;
            self.finish(
                &id,
                BackupKind::Segment,
                started_at,
                file,
                record,
                &header,
                transactions,
                Some(start),
            )
            .await
        }
        .await;
        self.clean_up_failed(&id, &result).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        id: &str,
        kind: BackupKind,
        started_at: Timestamp,
        file: &str,
        record: coffer_core::pipeline::ArtifactRecord,
        index: &IndexHeader,
        transactions: IndexSpool,
        segment_start: Option<u64>,
    ) -> Result<Manifest> {
        let summary = transactions.summary().clone();
        let header = index.clone();
        let index_key = Repository::data_key(
            id,
            &format!("{file}.{INDEX_ARTIFACT}{}", self.encoding.suffix()),
        );
        let (index_record, ()) = pipeline::store(
            self.repository.storage(),
            INDEX_ARTIFACT,
            &index_key,
            &self.encoding,
            Progress::default(),
            move |writer| transactions.write_index(&header, writer),
        )
        .await?;
        let mut manifest = Manifest::finished(
            id,
            kind,
            started_at,
            self.job.clock.now(),
            self.source_info(),
        );
        manifest.artifacts = vec![record, index_record];
        manifest.binlog_file = Some(ArchivedBinlog {
            file: file.to_string(),
            server_id: index.server_id,
            first_event_time: index.first_event_time,
            last_event_time: index.last_event_time,
            last_commit_time: summary.last.as_ref().map(|t| t.commit_time),
            end_position: index.end_position,
            transactions: summary.count,
            first_gtid: summary.first.as_ref().and_then(|t| t.gtid.clone()),
            last_gtid: summary.last.as_ref().and_then(|t| t.gtid.clone()),
            next_file: index.next_file.clone(),
            segment_start,
        });
        self.repository
            .write_manifest(&manifest, &self.job.cancel)
            .await?;
        info!(
            file,
            kind = %kind,
            transactions = summary.count,
            end_position = index.end_position,
            "binlog archived"
        );
        Ok(manifest)
    }

    async fn clean_up_failed<T>(&self, id: &str, result: &Result<T>) {
        if result.is_err()
            && let Err(cleanup) = self.repository.remove_data(id).await
        {
            warn!(error = %cleanup, "objects of the failed archive under data/{id}/ are left behind");
        }
    }

    /// Removes segments that a whole file or a longer chain has made redundant. Failures are
    /// logged, not returned: a leftover segment is harmless (the archive view ignores it).
    pub async fn remove_superseded_segments(&self) {
        let manifests = match self.repository.list().await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "listing the repository to remove superseded segments");
                return;
            }
        };
        for segment in archive::superseded_segments(&manifests) {
            match self.repository.remove_backup(&segment.id).await {
                Ok(()) => info!(id = %segment.id, "superseded segment removed"),
                Err(e) => warn!(id = %segment.id, error = %e, "removing a superseded segment"),
            }
        }
    }
}

/// `@@gtid_binlog_pos`: the last GTID the server wrote to its binary log, per domain.
pub async fn gtid_binlog_pos(conn: &mut sqlx::MySqlConnection) -> Result<String> {
    let row = sqlx::query("SELECT CAST(@@gtid_binlog_pos AS CHAR)")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("reading the GTID position", e))?;
    row.try_get(0)
        .map_err(|e| db_error("reading the GTID position", e))
}

/// Copies bytes `start..end` (to the end of the file when `end` is `None`) of a local file into
/// `out`, showing each chunk to `inspect` first.
fn copy_range(
    path: &Path,
    start: u64,
    end: Option<u64>,
    out: &mut impl Write,
    mut inspect: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let fail = |e: std::io::Error| Error::other(format!("{}: {e}", path.display()));
    let mut input = std::fs::File::open(path).map_err(fail)?;
    input.seek(SeekFrom::Start(start)).map_err(fail)?;
    let mut remaining = end.map(|e| e.saturating_sub(start));
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let want = remaining.map_or(buf.len(), |r| r.min(buf.len() as u64) as usize);
        if want == 0 {
            break;
        }
        let n = input.read(&mut buf[..want]).map_err(fail)?;
        if n == 0 {
            if remaining.is_some_and(|r| r > 0) {
                return Err(Error::other(format!(
                    "{}: ended {} bytes before position {}",
                    path.display(),
                    remaining.unwrap_or(0),
                    end.unwrap_or(0)
                )));
            }
            break;
        }
        inspect(&buf[..n])?;
        out.write_all(&buf[..n]).map_err(Error::from)?;
        if let Some(r) = remaining.as_mut() {
            *r -= n as u64;
        }
    }
    Ok(())
}

/// The transactions of one index artifact, spooled as they are indexed to a private scratch file
/// (0600) as the elements of the index's `transactions` array; only their summary (count, first,
/// last) stays in memory. The file goes away with the spool.
pub struct IndexSpool {
    writer: TransactionWriter<BufWriter<tempfile::NamedTempFile>>,
}

impl IndexSpool {
    /// An empty spool.
    pub fn new() -> Result<Self> {
        let file = coffer_core::scratch::file("index-", ".json")?;
        Ok(Self {
            writer: TransactionWriter::new(BufWriter::with_capacity(64 * 1024, file)),
        })
    }

    /// Appends transactions, in file order.
    pub fn extend(&mut self, transactions: impl IntoIterator<Item = Transaction>) -> Result<()> {
        for t in transactions {
            self.writer
                .push(&t)
                .map_err(|e| Error::other(format!("spooling a binlog index: {e}")))?;
        }
        Ok(())
    }

    /// Count, first and last of the transactions spooled so far.
    pub fn summary(&self) -> &TransactionSummary {
        self.writer.summary()
    }

    /// Writes the whole index artifact (`header` with the spooled transactions) into `out`.
    fn write_index(self, header: &IndexHeader, out: &mut impl Write) -> Result<()> {
        let fail = |e: std::io::Error| Error::other(format!("reading a spooled binlog index: {e}"));
        let (buffered, _) = self.writer.into_parts();
        let mut file = buffered.into_inner().map_err(|e| fail(e.into_error()))?;
        file.as_file_mut().seek(SeekFrom::Start(0)).map_err(fail)?;
        let mut spooled = std::io::BufReader::with_capacity(64 * 1024, file.as_file());
        coffer_core::binlog::write_index(out, header, &mut spooled).map_err(Error::from)
    }
}

//! Continuous binlog archiving (`coffer binlog stream`): a supervised
//! `mariadb-binlog --read-from-remote-server --raw --stop-never` writes the source's binlogs into
//! a private spool folder as the server writes them; every ship interval coffer archives each
//! file that has closed (as a `binlog` backup, exactly like the incremental backup) and ships the
//! new whole transactions of the file still being written (as a `segment` backup), so the
//! recovery point is at most about one interval old.
//!
//! No gap, no duplicate, across any disconnect: every session starts from what the repository
//! holds — the oldest file on the server that is not archived whole, and for the file that has
//! segments, the end of their chain — so bytes already shipped are downloaded again but never
//! stored again. Segments end on transaction boundaries. Once a file is archived whole its
//! segments are removed (the archive view ignores them even before that; see
//! [`coffer_core::archive`]).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_core::archive::binlog_sequence;
use coffer_core::binlog::{BinlogIndexer, IndexHeader};
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::lock::{self, LockKind};
use coffer_core::pipeline::Progress;
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind, Result};
use tracing::{Instrument, error, info, info_span, warn};

use crate::archiver::{BinlogSource, IndexSpool};

/// How the stream runs.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// How often closed files are archived and the active file's new transactions shipped.
    pub ship_interval: Duration,
    /// The replica server id presented to the source.
    pub server_id: u32,
    /// The longest wait between reconnection attempts (waits double from one second).
    pub max_backoff: Duration,
}

impl StreamOptions {
    /// The configured options (`[binlog]`), reconnecting at most every 30 seconds.
    pub fn from_config(config: &Config) -> Self {
        Self {
            ship_interval: config.binlog.ship_interval,
            server_id: config.binlog.stream_server_id,
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What a stream did, for its final log line and (later) the daemon's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Connections made to the source.
    pub sessions: u64,
    /// Closed files archived whole.
    pub files_archived: u64,
    /// Segments of active files shipped.
    pub segments_shipped: u64,
    /// Commit time (Unix seconds) of the newest transaction archived.
    pub newest_archived_commit: Option<i64>,
}

/// Streams the source's binlogs into the repository until `shutdown` completes, reconnecting
/// after every network or server failure. Returns only on shutdown, or on an error that a retry
/// cannot cure (a bad configuration).
///
/// Each shipment holds the repository's shared lock (`binlog stream`) while it writes, so a
/// prune (exclusive) never runs in the middle of one, and a stream that runs for months never
/// keeps a prune from running: a shipment due while a prune holds the lock waits at most
/// `lock_wait` or the ship interval, whichever is shorter, and is otherwise made at the next
/// interval (the spool keeps what arrives meanwhile). At start the stream waits at most
/// `lock_wait` for the repository to be free, and exits 7 naming the holder when it is not.
pub async fn run_binlog_stream(
    config: &Config,
    repository: &Arc<Repository>,
    job: &JobContext,
    options: &StreamOptions,
    shutdown: impl Future<Output = ()>,
    lock_wait: Duration,
) -> Result<StreamStats> {
    let source = config.source()?;
    let span = info_span!("binlog.stream", source = %format!("{}:{}", source.host, source.port));
    async {
        // Not while a prune runs: wait for it, or say who holds the repository.
        let guard = ShipLock {
            repository,
            job,
            wait: lock_wait,
        }
        .acquire()
        .await?;
        guard.finish(Ok(())).await?;
        let ship_lock = ShipLock {
            repository,
            job,
            wait: lock_wait.min(options.ship_interval),
        };
        stream(config, repository, job, options, shutdown, &ship_lock).await
    }
    .instrument(span)
    .await
}

/// How a shipment takes the repository's shared lock.
struct ShipLock<'a> {
    repository: &'a Arc<Repository>,
    job: &'a JobContext,
    wait: Duration,
}

impl ShipLock<'_> {
    async fn acquire(&self) -> Result<lock::LockGuard> {
        lock::acquire(
            self.repository,
            LockKind::Shared,
            "binlog stream",
            self.wait,
            &self.job.clock,
            &self.job.cancel,
        )
        .await
    }
}

async fn stream(
    config: &Config,
    repository: &Repository,
    job: &JobContext,
    options: &StreamOptions,
    shutdown: impl Future<Output = ()>,
    ship_lock: &ShipLock<'_>,
) -> Result<StreamStats> {
    tokio::pin!(shutdown);
    let mut stats = StreamStats::default();
    let mut backoff = Duration::from_secs(1);
    repository.ensure_initialized().await?;
    loop {
        let began = Instant::now();
        stats.sessions += 1;
        match session(
            config,
            repository,
            job,
            options,
            &mut shutdown,
            &mut stats,
            ship_lock,
        )
        .await
        {
            Ok(SessionEnd::Shutdown) => {
                info!(?stats, "binlog stream stopped");
                return Ok(stats);
            }
            Ok(SessionEnd::Disconnected(why)) => {
                warn!(reason = %why, "binlog stream disconnected; reconnecting")
            }
            Err(e) if matches!(e.kind(), ErrorKind::Config | ErrorKind::Refused) => {
                return Err(e);
            }
            Err(e) => error!(error = %e, "binlog stream failed; retrying"),
        }
        if began.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = &mut shutdown => {
                info!(?stats, "binlog stream stopped");
                return Ok(stats);
            }
        }
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

enum SessionEnd {
    Shutdown,
    Disconnected(String),
}

async fn session<F: Future<Output = ()>>(
    config: &Config,
    repository: &Repository,
    job: &JobContext,
    options: &StreamOptions,
    shutdown: &mut std::pin::Pin<&mut F>,
    stats: &mut StreamStats,
    ship_lock: &ShipLock<'_>,
) -> Result<SessionEnd> {
    let source = BinlogSource::connect(config, repository, job).await?;
    if u64::from(options.server_id) == source.server.server_id {
        return Err(Error::config(format!(
            "binlog.stream_server_id {} is the source's own server id: choose another",
            options.server_id
        )));
    }
    let manifests = repository.list().await?;
    let binlogs = source.server_binlogs(&manifests, false).await?;
    if let Some(gap) = binlogs.gap_message() {
        error!("{gap}");
    }
    // Start at the oldest file on the server not archived whole; resume each file's segment
    // chain where it ends.
    let Some(first) = binlogs
        .on_server
        .iter()
        .find(|f| !binlogs.archived_whole.contains(*f))
        .or(binlogs.on_server.last())
        .cloned()
    else {
        return Ok(SessionEnd::Disconnected(
            "the source lists no binary log".into(),
        ));
    };
    let shipped: BTreeMap<String, u64> = source
        .archived(&manifests)
        .iter()
        .filter(|f| !f.whole)
        .map(|f| (f.file.clone(), f.end_position))
        .collect();
    let spool = coffer_core::scratch::dir("stream-")?;
    let (mut child, defaults) =
        source.spawn_fetch(&first, spool.path(), Some(options.server_id))?;
    // A session can last weeks: keep only the end of what the client says.
    let stderr = child
        .stderr
        .take()
        .map(|pipe| tokio::spawn(coffer_core::process::read_tail(pipe)));
    info!(from = %first, interval_s = options.ship_interval.as_secs(), "streaming binlogs");
    let mut spooler = Spooler {
        lock: ship_lock,
        source: &source,
        dir: spool.path().to_path_buf(),
        tailers: BTreeMap::new(),
        resume_at: shipped,
        archived_whole: binlogs.archived_whole.clone(),
    };
    let mut ticker = tokio::time::interval(options.ship_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            _ = ticker.tick() => spooler.ship_unless_locked(stats).await?,
            status = child.wait() => {
                // The child wrote all it received before exiting: archive that, then reconnect.
                spooler.ship_unless_locked(stats).await?;
                let stderr = match stderr {
                    Some(task) => coffer_core::process::tail_lines(&task.await.unwrap_or_default(), 5),
                    None => String::new(),
                };
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                break SessionEnd::Disconnected(format!(
                    "{} exited ({status}): {}",
                    source.tool.path.display(),
                    stderr
                ));
            }
            () = shutdown.as_mut() => {
                let _ = child.kill().await;
                // The stream stops whatever the last shipment does: the shutdown future has
                // completed and must not be awaited again, and what it did not ship is still
                // on the source, for the next run to archive.
                if let Err(e) = spooler.ship(stats).await {
                    error!(error = %e, "the last shipment failed; the next run archives what it held");
                }
                break SessionEnd::Shutdown;
            }
        }
    };
    drop(defaults);
    Ok(end)
}

/// Follows the files in the spool folder.
struct Spooler<'a> {
    lock: &'a ShipLock<'a>,
    source: &'a BinlogSource<'a>,
    dir: PathBuf,
    tailers: BTreeMap<String, Tailer>,
    /// Per file, the bytes the repository held as segments when the session started; a file's
    /// tailer tracks them from there.
    resume_at: BTreeMap<String, u64>,
    archived_whole: BTreeSet<String>,
}

impl Spooler<'_> {
    /// [`Spooler::ship`], except that a repository a prune holds is not an error: what is due
    /// is shipped at the next interval.
    async fn ship_unless_locked(&mut self, stats: &mut StreamStats) -> Result<()> {
        match self.ship(stats).await {
            Err(e) if e.kind() == ErrorKind::Locked => {
                warn!(error = %e, "not shipping now: trying again at the next interval");
                Ok(())
            }
            other => other,
        }
    }

    /// Archives every closed file, ships the active file's new transactions, under the shared
    /// lock, taken at the first write and released at the end.
    async fn ship(&mut self, stats: &mut StreamStats) -> Result<()> {
        let mut held = None;
        let result = self.ship_holding(&mut held, stats).await;
        match held {
            Some(guard) => guard.finish(result).await,
            None => result,
        }
    }

    async fn ship_holding(
        &mut self,
        held: &mut Option<lock::LockGuard>,
        stats: &mut StreamStats,
    ) -> Result<()> {
        let mut files: Vec<(u64, String)> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::other(format!("{}: {e}", self.dir.display())))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                Some((binlog_sequence(&name)?, name))
            })
            .collect();
        files.sort();
        let mut archived_whole = false;
        for (i, (_, file)) in files.iter().enumerate() {
            let path = self.dir.join(file);
            let resumed_at = self.resume_at.get(file).copied().unwrap_or(0);
            let tailer = self
                .tailers
                .entry(file.clone())
                .or_insert_with(|| Tailer::new(resumed_at));
            let shipped = tailer.shipped;
            // A file followed by another is archived whole: its transactions need no keeping.
            tailer.catch_up(&path, i + 1 == files.len())?;
            // mariadb-binlog opens the next file only after writing the last event of this one
            // (the server's rotate, or after a crash the rotate it fakes when moving on).
            let complete = i + 1 < files.len() || tailer.indexer.snapshot().closed;
            if complete {
                if !self.archived_whole.contains(file) {
                    if held.is_none() {
                        *held = Some(self.lock.acquire().await?);
                    }
                    let manifest = self
                        .source
                        .archive_whole(file, &path, Progress::default())
                        .await?;
                    let summary = manifest.binlog_file.as_ref();
                    if summary.is_some_and(|b| b.end_position < shipped) {
                        warn!(
                            file,
                            shipped,
                            "the server's copy of this binlog is shorter than the segments shipped of it: the server lost its tail"
                        );
                    }
                    if let Some(t) = summary.and_then(|b| b.last_event_time) {
                        stats.newest_archived_commit = stats.newest_archived_commit.max(Some(t));
                    }
                    stats.files_archived += 1;
                    self.archived_whole.insert(file.clone());
                    archived_whole = true;
                }
                std::fs::remove_file(&path)
                    .map_err(|e| Error::other(format!("{}: {e}", path.display())))?;
                self.tailers.remove(file);
            } else if tailer.has_segment() {
                // The lock first: taking the segment empties what is pending.
                if held.is_none() {
                    *held = Some(self.lock.acquire().await?);
                }
                let Some((header, transactions)) = tailer.segment() else {
                    continue;
                };
                let start = tailer.shipped;
                let end = header.end_position;
                let last = header.last_event_time;
                self.source
                    .archive_segment(file, &path, start, header, transactions)
                    .await?;
                tailer.shipped_through(end);
                stats.segments_shipped += 1;
                stats.newest_archived_commit = stats.newest_archived_commit.max(last);
            }
        }
        if archived_whole {
            self.source.remove_superseded_segments().await;
        }
        Ok(())
    }
}

/// Indexes a spool file as it grows and keeps the transactions not yet shipped.
struct Tailer {
    indexer: BinlogIndexer,
    /// Bytes of the file already archived as segments.
    shipped: u64,
    /// Whole transactions after `shipped`, in file order, spooled to a scratch file (a first
    /// session may find a long active file): `None` until there is one.
    pending: Option<IndexSpool>,
}

impl Tailer {
    fn new(shipped: u64) -> Self {
        Self {
            indexer: BinlogIndexer::new(),
            shipped,
            pending: None,
        }
    }

    /// Feeds what the file gained since the last call, keeping its new transactions when `keep`.
    fn catch_up(&mut self, path: &Path, keep: bool) -> Result<()> {
        let fail = |e: std::io::Error| Error::other(format!("{}: {e}", path.display()));
        let mut file = std::fs::File::open(path).map_err(fail)?;
        file.seek(SeekFrom::Start(self.indexer.fed()))
            .map_err(fail)?;
        let mut buf = vec![0u8; 256 * 1024];
        let shipped = self.shipped;
        loop {
            let n = file.read(&mut buf).map_err(fail)?;
            if n == 0 {
                break;
            }
            self.indexer.feed(&buf[..n]);
            let new = self.indexer.drain_transactions();
            if !keep || new.is_empty() {
                continue;
            }
            let pending = match self.pending.as_mut() {
                Some(pending) => pending,
                None => self.pending.insert(IndexSpool::new()?),
            };
            pending.extend(new.into_iter().filter(|t| t.end_position > shipped))?;
        }
        Ok(())
    }

    /// The index of the next segment (its header fields and its transactions), taken out of the
    /// tailer: from `shipped` to the end of the last whole transaction, or `None` when no
    /// transaction completed since.
    /// Whether there are whole transactions to ship as a segment.
    fn has_segment(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| {
            let summary = p.summary();
            summary.first.is_some() && summary.last.is_some()
        })
    }

    fn segment(&mut self) -> Option<(IndexHeader, IndexSpool)> {
        let summary = self.pending.as_ref()?.summary();
        let (first, last) = (summary.first.as_ref()?, summary.last.as_ref()?);
        let header = self.indexer.snapshot();
        let header = IndexHeader {
            server_id: header.server_id,
            server_version: header.server_version.clone(),
            checksums: header.checksums,
            // The first segment starts with the file; later ones with their first transaction.
            first_event_time: if self.shipped == 0 {
                header.first_event_time
            } else {
                Some(first.commit_time)
            },
            last_event_time: Some(last.commit_time),
            end_position: last.end_position,
            next_file: None,
            closed: false,
        };
        Some((header, self.pending.take()?))
    }

    /// Every pending transaction went into the segment that ends at `end`.
    fn shipped_through(&mut self, end: u64) {
        self.shipped = end;
    }
}

//! Point-in-time recovery: the newest full backup before the target, then the archived binlogs
//! replayed from the full's coordinates to an exact stop position taken from the binlog indexes
//! (never a wall-clock time handed to `mariadb-binlog`, which reads it in its own zone).

use std::io::Read;
use std::process::Stdio;

use coffer_core::archive::{Archive, ArchivedFile, archived_files, binlog_sequence};
use coffer_core::binlog::BinlogIndex;
use coffer_core::cancel::Cancel;
use coffer_core::client::{DefaultsFile, Tool};
use coffer_core::manifest::{BackupKind, Manifest};
use coffer_core::names;
use coffer_core::pipeline::{ArtifactReader, ArtifactRecord, Progress};
use coffer_core::process::{self, Logged};
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind, Result};
use jiff::Timestamp;
use serde::Serialize;
use tokio_util::io::SyncIoBridge;
use tracing::info;

/// Where to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointInTime {
    /// Every transaction committed at or before this moment (binlog times have whole seconds).
    Time(Timestamp),
    /// Every event before this position of this file (a transaction's start position excludes it).
    Position {
        /// Binlog file name.
        file: String,
        /// Position in it.
        position: u64,
    },
    /// Up to and including this transaction.
    Gtid(String),
}

/// One archived binlog file to replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayFile {
    /// Binlog file name.
    pub file: String,
    /// The backups holding it: one `binlog` backup, or the `segment` backups of a file the
    /// server was still writing.
    pub backup_ids: Vec<String>,
    /// Its stored pieces, concatenated in this order.
    pub artifacts: Vec<ArtifactRecord>,
}

/// The binlog part of a point-in-time restore.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayPlan {
    /// Files in replay order; all replayed in one client session.
    pub files: Vec<ReplayFile>,
    /// Start position in the first file (the full backup's snapshot position).
    pub start_position: u64,
    /// Stop position in the last file: replay ends just before it.
    pub stop_position: u64,
    /// Commit time (Unix seconds) of the last transaction replayed, when known.
    pub last_commit_time: Option<i64>,
    /// GTID of the last transaction replayed, when known.
    pub last_gtid: Option<String>,
    /// The first GTID replayed in each domain (`domain-server-sequence`), when known from the
    /// binlog indexes: what a `gtid_strict_mode=ON` target must be behind to keep them.
    pub first_gtids: Vec<String>,
    /// `[restore] gtid_domain`: where the replay writes when the target cannot keep the
    /// source's GTIDs; `None` refuses such a replay.
    pub gtid_domain: Option<u32>,
}

/// How the replayed transactions get their GTIDs on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GtidHandling {
    /// The source's own GTIDs (domain, server id, sequence number), exactly.
    Kept,
    /// Renumbered by the target into this domain of their own, under the target's server id.
    Domain(u32),
}

impl std::fmt::Display for GtidHandling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kept => f.write_str("kept"),
            Self::Domain(n) => write!(f, "domain {n}"),
        }
    }
}

impl Serialize for GtidHandling {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a replay did with GTIDs: how they were written and the last one written on the target.
#[derive(Debug, Clone, Serialize)]
pub struct GtidOutcome {
    /// `kept` or `domain N`.
    pub gtids: GtidHandling,
    /// The target's newest GTID in the domain the replay wrote last, when it writes a binlog
    /// (else the source's last replayed GTID, when kept).
    pub last_gtid: Option<String>,
}

pub use coffer_core::archive::Window;

/// The windows as one line for messages, times in `tz`.
pub fn describe_windows(windows: &[Window], tz: &jiff::tz::TimeZone) -> String {
    if windows.is_empty() {
        return "no full backup with binlog coordinates: nothing is recoverable to a point in time"
            .into();
    }
    let show = |t: Timestamp| {
        t.to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    };
    let parts: Vec<String> = windows
        .iter()
        .map(|w| {
            let to =
                w.to.and_then(|s| Timestamp::from_second(s).ok())
                    .map_or("(no archived binlog yet)".to_string(), show);
            format!("{} .. {} (from {})", show(w.from), to, w.full_backup)
        })
        .collect();
    format!("recoverable windows: {}", parts.join("; "))
}

/// Reads the transaction index of an archived binlog (one per piece) as it streams in, handing
/// each transaction to `visit` with `state`, in file order; never holds more than one. Returns the
/// file's header fields (a `BinlogIndex` without transactions) and the state.
pub async fn load_index<S, F>(
    repository: &Repository,
    file: &ArchivedFile<'_>,
    identity: Option<&age::x25519::Identity>,
    state: S,
    visit: F,
) -> Result<(BinlogIndex, S)>
where
    S: Send + 'static,
    F: FnMut(&mut S, coffer_core::binlog::Transaction) + Send + 'static,
{
    let mut whole: Option<BinlogIndex> = None;
    let mut carried = (state, visit);
    for record in file.index_artifacts()? {
        let object = coffer_core::pipeline::open_artifact(repository.storage(), &record).await?;
        let identity = identity.cloned();
        let (mut state, mut visit) = carried;
        let (piece, state, visit) = tokio::task::spawn_blocking(move || -> Result<_> {
            let reader = ArtifactReader::new(
                Box::new(SyncIoBridge::new(object)),
                &record,
                identity.as_ref(),
            )?;
            let header = coffer_core::binlog::read_index(reader, |t| visit(&mut state, t))
                .map_err(|e| {
                    if e.is_io() {
                        // A failed read (a digest mismatch, storage) keeps its kind.
                        Error::from(std::io::Error::from(e))
                    } else {
                        Error::integrity(format!("{}: not a binlog index: {e}", record.key))
                    }
                })?;
            Ok((header.with_transactions(Vec::new()), state, visit))
        })
        .await
        .map_err(|e| Error::other(format!("index task failed: {e}")))??;
        carried = (state, visit);
        match whole.as_mut() {
            None => whole = Some(piece),
            Some(index) => {
                index.end_position = piece.end_position;
                index.last_event_time = piece.last_event_time.or(index.last_event_time);
            }
        }
    }
    let index = whole.ok_or_else(|| Error::integrity(format!("{} has no index", file.file)))?;
    Ok((index, carried.0))
}

/// Plans a point-in-time restore: which full backup, which binlogs, where to start and stop.
pub async fn plan(
    repository: &Repository,
    target: &PointInTime,
    identity: Option<&age::x25519::Identity>,
    tz: &jiff::tz::TimeZone,
) -> Result<(Manifest, ReplayPlan)> {
    let manifests = repository.list().await?;
    let windows = Archive::new(&manifests).windows(&[]);
    let refuse = |why: String| Error::config(format!("{why}; {}", describe_windows(&windows, tz)));
    let mut files = archived_files(&manifests);
    files.sort_by_key(|f| (f.sequence, f.archived_at));

    // Resolve the stop point to (file, position) and the transaction it ends with.
    let (stop_file, stop_position, last_commit_time, last_gtid) = match target {
        PointInTime::Position { file, position } => {
            let archived = files
                .iter()
                .find(|f| &f.file == file)
                .ok_or_else(|| refuse(format!("{file} is not in the binlog archive")))?;
            let end = archived.end_position;
            if *position < 4 || *position > end {
                return Err(refuse(format!(
                    "position {position} is outside {file} (4 .. {end})"
                )));
            }
            let stop = *position;
            let (_, last) = load_index(repository, archived, identity, None, move |last, t| {
                if t.end_position <= stop {
                    *last = Some(t);
                }
            })
            .await?;
            let last: Option<&coffer_core::binlog::Transaction> = last.as_ref();
            (
                file.clone(),
                *position,
                last.map(|t| t.commit_time),
                last.and_then(|t| t.gtid.clone()),
            )
        }
        PointInTime::Gtid(gtid) => {
            let mut found = None;
            for archived in files.iter().rev() {
                let wanted = gtid.clone();
                let (_, first) =
                    load_index(repository, archived, identity, None, move |first, t| {
                        if first.is_none() && t.gtid.as_deref() == Some(wanted.as_str()) {
                            *first = Some(t);
                        }
                    })
                    .await?;
                if let Some(t) = first.as_ref() {
                    found = Some((
                        archived.file.clone(),
                        t.end_position,
                        Some(t.commit_time),
                        t.gtid.clone(),
                    ));
                    break;
                }
            }
            found.ok_or_else(|| refuse(format!("GTID {gtid} is in no archived binlog")))?
        }
        PointInTime::Time(at) => {
            let at_second = at.as_second();
            let newest = files.iter().filter_map(|f| f.last_event_time).max();
            if newest.is_none_or(|n| at_second > n) {
                return Err(refuse(format!(
                    "{} is after the newest archived event",
                    at.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S %Z")
                )));
            }
            let mut found = None;
            for archived in &files {
                if archived
                    .first_event_time
                    .is_some_and(|first| first > at_second)
                {
                    break;
                }
                let (_, last) = load_index(repository, archived, identity, None, move |last, t| {
                    if t.commit_time <= at_second {
                        *last = Some(t);
                    }
                })
                .await?;
                if let Some(t) = last.as_ref() {
                    found = Some((
                        archived.file.clone(),
                        t.end_position,
                        Some(t.commit_time),
                        t.gtid.clone(),
                    ));
                } else if found.is_none() {
                    // Nothing committed yet by then in this file: stop at its start.
                    found = Some((archived.file.clone(), 4, None, None));
                }
            }
            found.ok_or_else(|| refuse("no archived binlog reaches back that far".to_string()))?
        }
    };

    // The newest full backup whose snapshot is at or before the stop point. Coordinates, not
    // clock times, decide: binlog times have whole seconds, backups start mid-second.
    let sequence = |file: &str| binlog_sequence(file).unwrap_or(0);
    let stop_key = (sequence(&stop_file), stop_position);
    let full = manifests
        .iter()
        .filter(|m| m.kind == BackupKind::Full)
        .filter(|m| {
            m.binlog
                .as_ref()
                .is_some_and(|c| (sequence(&c.file), c.position) <= stop_key)
        })
        .max_by_key(|m| m.binlog.as_ref().map(|c| (sequence(&c.file), c.position)))
        .ok_or_else(|| refuse("the target is before the first full backup".to_string()))?;
    let coords = full.binlog.as_ref().expect("filtered on coordinates");

    // Every file from the snapshot's to the stop file must be archived.
    let mut replay = Vec::new();
    let mut first = FirstGtids::default();
    let (first_seq, last_seq) = (sequence(&coords.file), sequence(&stop_file));
    for seq in first_seq..=last_seq {
        let archived = files
            .iter()
            .find(|f| f.sequence == seq && f.server_id == full.source.server_id)
            .ok_or_else(|| {
                Error::integrity(format!(
                    "binlog number {seq} after {} is missing from the archive: cannot roll forward",
                    full.id
                ))
            })?;
        let (from, to) = (
            (seq == first_seq).then_some(coords.position),
            (seq == last_seq).then_some(stop_position),
        );
        first = load_index(repository, archived, identity, first, move |first, t| {
            if from.is_some_and(|from| t.start_position < from)
                || to.is_some_and(|to| t.end_position > to)
            {
                return;
            }
            first.note(t.gtid.as_deref());
        })
        .await?
        .1;
        replay.push(ReplayFile {
            file: archived.file.clone(),
            backup_ids: archived
                .backup_ids()
                .into_iter()
                .map(String::from)
                .collect(),
            artifacts: archived.binlog_artifacts()?,
        });
    }
    let plan = ReplayPlan {
        files: replay,
        start_position: coords.position,
        stop_position,
        last_commit_time,
        last_gtid,
        first_gtids: first.list(),
        gtid_domain: None,
    };
    Ok((full.clone(), plan))
}

/// Plans replaying every archived binlog after `full`, to the newest archived transaction
/// reachable without a gap (as a drill does). `None` when there is nothing to replay: the source
/// wrote no binlog, or nothing is archived after the snapshot.
pub fn plan_to_newest(manifests: &[Manifest], full: &Manifest) -> Result<Option<ReplayPlan>> {
    let Some(coords) = full.binlog.as_ref() else {
        return Ok(None);
    };
    let archive = Archive::new(manifests);
    let chain = archive.chain_from(full, &[]);
    let Some(last) = chain.last() else {
        return Ok(None);
    };
    if chain.len() == 1 && last.end_position <= coords.position {
        return Ok(None);
    }
    let mut replay = Vec::new();
    for file in &chain {
        replay.push(ReplayFile {
            file: file.file.clone(),
            backup_ids: file.backup_ids().into_iter().map(String::from).collect(),
            artifacts: file.binlog_artifacts()?,
        });
    }
    Ok(Some(ReplayPlan {
        files: replay,
        start_position: coords.position,
        stop_position: last.end_position,
        last_commit_time: last.last_commit_time,
        last_gtid: last.last_gtid.clone(),
        first_gtids: Vec::new(),
        gtid_domain: None,
    }))
}

/// A replay ready to run: the plan's binlogs fetched (each digest verified as it was decoded)
/// into a private folder, checked for changes it must not make, with the `mariadb-binlog`
/// arguments that replay exactly the planned range. Made by [`prepare_replay`] before the target
/// is touched; the files are removed when it is dropped.
pub struct PreparedReplay {
    _scratch: tempfile::TempDir,
    args: Vec<String>,
    paths: Vec<std::path::PathBuf>,
    plan: ReplayPlan,
    /// The first GTID of each domain in the planned range, from decoding it.
    first_gtids: FirstGtids,
    /// Decided by [`decide_gtids`] before the target is touched; else at the replay.
    gtids: Option<GtidHandling>,
}

/// Decodes every file of `plan` (verifying each digest) into a private folder: `mariadb-binlog`
/// reads files. A file still being written when it was archived is several segments:
/// concatenated in order they are its first bytes.
async fn materialize(
    repository: &Repository,
    plan: &ReplayPlan,
    identity: Option<&age::x25519::Identity>,
    rename: Option<&(String, String)>,
) -> Result<PreparedReplay> {
    // Decrypted binlogs: private, and removed by the next run if this one is killed.
    let scratch = coffer_core::scratch::dir("replay-")?;
    for file in &plan.files {
        // The name comes from a manifest: one plain component, or someone is steering the write.
        names::check_binlog_file(&file.file).map_err(|why| {
            Error::integrity(format!("binlog archive: {why}; refusing to write it"))
        })?;
        let path = scratch.path().join(&file.file);
        let out = coffer_core::scratch::create_private(&path)
            .map_err(|e| Error::other(format!("{}: {e}", path.display())))?;
        for record in &file.artifacts {
            let object = coffer_core::pipeline::open_artifact(repository.storage(), record).await?;
            let record = record.clone();
            let identity = identity.cloned();
            let mut out = out
                .try_clone()
                .map_err(|e| Error::other(format!("{}: {e}", path.display())))?;
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut reader = ArtifactReader::new(
                    Box::new(SyncIoBridge::new(object)),
                    &record,
                    identity.as_ref(),
                )?;
                std::io::copy(&mut reader, &mut out).map_err(Error::from)?;
                Ok(())
            })
            .await
            .map_err(|e| Error::other(format!("binlog download task failed: {e}")))??;
        }
    }
    let mut args = vec![
        format!("--start-position={}", plan.start_position),
        format!("--stop-position={}", plan.stop_position),
    ];
    if let Some((from, to)) = rename {
        // mariadb-binlog splits its argument at `->`: a name holding it cannot be expressed.
        if from.contains("->") || to.contains("->") {
            return Err(Error::config(format!(
                "cannot replay binlogs from {from:?} into {to:?}: mariadb-binlog's --rewrite-db cannot express a name containing \"->\""
            )));
        }
        args.push(format!("--rewrite-db={from}->{to}"));
    }
    let paths = plan
        .files
        .iter()
        .map(|f| scratch.path().join(&f.file))
        .collect();
    Ok(PreparedReplay {
        _scratch: scratch,
        args,
        paths,
        plan: plan.clone(),
        first_gtids: FirstGtids::default(),
        gtids: None,
    })
}

/// Fetches and decodes the plan's binlogs once (verifying every digest) and checks, before the
/// target is touched, everything that makes the replay unsafe: changes to databases the backup
/// does not hold (`refuse_foreign_changes`) and, when restoring under another name (`rename`:
/// from, to), statements that name the original database (`check_replay_under_rename`).
pub async fn prepare_replay(
    repository: &Repository,
    plan: &ReplayPlan,
    identity: Option<&age::x25519::Identity>,
    own: &[String],
    rename: Option<(String, String)>,
) -> Result<PreparedReplay> {
    let mut prepared = materialize(repository, plan, identity, rename.as_ref()).await?;
    prepared.first_gtids = refuse_foreign_changes(&prepared, own).await?;
    if let Some(rename) = &rename {
        check_replay_under_rename(&prepared, rename).await?;
    }
    Ok(prepared)
}

/// Refuses a replay that would change databases the backup does not hold. The binlogs carry
/// every database the source writes; replaying them after restoring only some would apply the
/// others' changes again to a target that has them (or fail half-way on one that does not). Found
/// by scanning the planned range natively (row events by their table map, statements by the
/// database they name or run in), before the target is touched.
/// Returns the first GTID of each domain in the range, found on the way.
async fn refuse_foreign_changes(prepared: &PreparedReplay, own: &[String]) -> Result<FirstGtids> {
    let plan = &prepared.plan;
    let mut first = FirstGtids::default();
    let mut foreign = ForeignChanges::default();
    let last = plan.files.len().saturating_sub(1);
    for (i, (file, path)) in plan.files.iter().zip(&prepared.paths).enumerate() {
        let path = path.clone();
        let (start, stop) = (
            (i == 0).then_some(plan.start_position),
            (i == last).then_some(plan.stop_position),
        );
        let (name, own) = (file.file.clone(), own.to_vec());
        // Each transaction is looked at as the scanner yields it and then dropped: a file of a
        // million transactions costs one at a time, not all of them.
        (first, foreign) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut look = |tx: coffer_core::binlog_events::TransactionChanges| {
                let t = &tx.transaction;
                if start.is_some_and(|s| t.start_position < s)
                    || stop.is_some_and(|s| t.end_position > s)
                {
                    return;
                }
                first.note(t.gtid.as_deref());
                for change in &tx.changes {
                    let Some(db) = &change.database else { continue };
                    if own.iter().any(|o| o.eq_ignore_ascii_case(db)) {
                        continue;
                    }
                    let entry = foreign.entry(db.clone()).or_insert_with(|| {
                        (
                            0,
                            format!(
                                "{} {db}.{} at {name}:{}",
                                change.kind, change.table, t.start_position
                            ),
                        )
                    });
                    entry.0 += 1;
                }
            };
            // Which databases changed, not how many rows: the table map is enough.
            let mut scanner = coffer_core::binlog_events::EventScanner::new(Default::default())
                .without_row_counts();
            let mut input = std::fs::File::open(&path)
                .map_err(|e| Error::other(format!("{}: {e}", path.display())))?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = input.read(&mut buf).map_err(Error::from)?;
                if n == 0 {
                    break;
                }
                scanner.feed(&buf[..n]);
                scanner.drain().into_iter().for_each(&mut look);
            }
            scanner
                .finish()
                .map_err(|e| Error::integrity(format!("{}: {e}", path.display())))?
                .into_iter()
                .for_each(&mut look);
            Ok((first, foreign))
        })
        .await
        .map_err(|e| Error::other(format!("binlog scan task failed: {e}")))??;
    }
    if foreign.is_empty() {
        return Ok(first);
    }
    let list: Vec<String> = foreign
        .iter()
        .map(|(db, (n, first))| format!("`{db}` ({n} change(s), first: {first})"))
        .collect();
    Err(Error::refused(format!(
        "the binlogs to replay also change {}, which this backup does not hold ({}): replaying them would change those databases on the target again, or fail half-way where they are missing. Back up every database the source writes ([source] databases), or take a new full backup after the last such change",
        list.join(", "),
        own.join(", ")
    )))
}

/// Per database the backup does not hold: how many changes the replay would make, and the first.
type ForeignChanges = std::collections::BTreeMap<String, (u64, String)>;

/// Refuses a replay under another database name that would still act on the original database.
/// `--rewrite-db` renames the default database of each event and the database of row events, but
/// not a name written out inside a statement (`INSERT INTO app.invoices …`), which MIXED and
/// STATEMENT logging replay as text: such a statement would write into `app` itself. Decodes the
/// planned range once, without a server, and names the first such statement.
async fn check_replay_under_rename(
    prepared: &PreparedReplay,
    rename: &(String, String),
) -> Result<()> {
    let (args, paths) = (prepared.args.clone(), prepared.paths.clone());
    let tool = Tool::find(&["mariadb-binlog", "mysqlbinlog"])?;
    let from = rename.0.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        use std::io::BufRead;
        let mut decoder = process::tool_command(&tool.path)
            .args(&args)
            .args(&paths)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .logged()
            .spawn()
            .map_err(|e| Error::other(format!("cannot start {}: {e}", tool.path.display())))?;
        let stdout = decoder.stdout.take().expect("stdout is piped");
        let mut found = None;
        for line in std::io::BufReader::new(stdout).split(b'\n') {
            let line = line.map_err(Error::from)?;
            // Comments (`# at`, annotations) are not executed; base64 row images hold no dot.
            if !line.starts_with(b"#") && crate::full::names_database(&line, &from) {
                found = Some(String::from_utf8_lossy(&line).trim().chars().take(160).collect::<String>());
                break;
            }
        }
        let _ = decoder.kill();
        let _ = decoder.wait();
        match found {
            None => Ok(()),
            Some(statement) => Err(Error::refused(format!(
                "the binlogs to replay name database `{from}` inside statements (statement-based logging), which a replay under another name would run against `{from}` itself: restore under the original name into another server (--target), or use ROW logging on the source. First such statement: {statement}"
            ))),
        }
    })
    .await
    .map_err(|e| Error::other(format!("check task failed: {e}")))?
}

/// The first GTID replayed in each domain: domain → (server id, sequence number).
#[derive(Debug, Clone, Default)]
struct FirstGtids(std::collections::BTreeMap<u32, (u32, u64)>);

impl FirstGtids {
    /// Notes a replayed transaction's GTID (`domain-server-sequence`), in replay order.
    fn note(&mut self, gtid: Option<&str>) {
        if let Some((domain, server, seq)) = gtid.and_then(parse_gtid) {
            self.0.entry(domain).or_insert((server, seq));
        }
    }

    fn from_list(list: &[String]) -> Self {
        let mut first = Self::default();
        for gtid in list {
            first.note(Some(gtid));
        }
        first
    }

    fn list(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(d, (server, seq))| format!("{d}-{server}-{seq}"))
            .collect()
    }
}

/// `domain-server-sequence`.
fn parse_gtid(gtid: &str) -> Option<(u32, u32, u64)> {
    let mut parts = gtid.trim().splitn(3, '-');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// The highest sequence number of `domain` in a GTID list (`0-1-5,7-2-3`).
fn position_in(list: &str, domain: u32) -> Option<(String, u64)> {
    list.split(',')
        .filter_map(|g| parse_gtid(g).map(|p| (g.trim().to_string(), p)))
        .filter(|(_, (d, _, _))| *d == domain)
        .map(|(g, (_, _, seq))| (g, seq))
        .max_by_key(|(_, seq)| *seq)
}

/// What the target says about GTIDs, read before anything is written.
#[derive(Debug, Clone)]
struct TargetGtids {
    strict: bool,
    log_bin: bool,
    binlog_pos: String,
    current_pos: String,
    domain_id: u32,
}

async fn target_gtids(target: &coffer_core::client::Endpoint) -> Result<TargetGtids> {
    use sqlx::Row;
    let mut conn = coffer_core::client::connect(target).await?;
    let row = sqlx::query(
        "SELECT CAST(@@global.gtid_strict_mode AS SIGNED), CAST(@@global.log_bin AS SIGNED),          CAST(@@global.gtid_binlog_pos AS CHAR), CAST(@@global.gtid_current_pos AS CHAR),          CAST(@@global.gtid_domain_id AS UNSIGNED)",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| Error::database(format!("reading the GTID state of {target}: {e}")))?;
    let get = |e: sqlx::Error| Error::database(format!("reading the GTID state of {target}: {e}"));
    let strict: i64 = row.try_get(0).map_err(get)?;
    let log_bin: i64 = row.try_get(1).map_err(get)?;
    let binlog_pos: Option<String> = row.try_get(2).map_err(get)?;
    let current_pos: Option<String> = row.try_get(3).map_err(get)?;
    let domain_id: u64 = row.try_get(4).map_err(get)?;
    Ok(TargetGtids {
        strict: strict != 0,
        log_bin: log_bin != 0,
        binlog_pos: binlog_pos.unwrap_or_default(),
        current_pos: current_pos.unwrap_or_default(),
        domain_id: domain_id as u32,
    })
}

/// Chooses how the replay writes GTIDs. The source's are kept unless the target writes a binary
/// log with `gtid_strict_mode=ON` and is not behind the first replayed GTID of a domain: it would
/// refuse them (ERROR 1950). Before the dump is loaded (`dump_pending`), a target whose own
/// `gtid_domain_id` is one of the source's is not behind either: loading the dump writes
/// transactions of its own there. Then `gtid_domain` renumbers into a domain of their own, or
/// the replay is refused (a sentence naming why).
fn choose_gtids(
    first: &FirstGtids,
    target: &TargetGtids,
    gtid_domain: Option<u32>,
    dump_pending: bool,
    name: &str,
) -> Result<GtidHandling> {
    if !target.log_bin || !target.strict || first.0.is_empty() {
        return Ok(GtidHandling::Kept);
    }
    let mut blocked = Vec::new();
    for (&domain, &(server, seq)) in &first.0 {
        let position = [&target.binlog_pos, &target.current_pos]
            .into_iter()
            .filter_map(|list| position_in(list, domain))
            .max_by_key(|(_, seq)| *seq);
        match position {
            Some((gtid, at)) if at >= seq => blocked.push(format!(
                "its position in domain {domain} is {gtid}, not before the first replayed GTID {domain}-{server}-{seq}"
            )),
            _ if dump_pending && target.domain_id == domain => blocked.push(format!(
                "its own gtid_domain_id is {domain}, the source's, so loading the dump gives it GTIDs there (its position now: {}) that the first replayed one, {domain}-{server}-{seq}, cannot follow",
                position.map_or("none".to_string(), |(g, _)| g)
            )),
            _ => {}
        }
    }
    if blocked.is_empty() {
        return Ok(GtidHandling::Kept);
    }
    match gtid_domain {
        Some(n) if first.0.contains_key(&n) => Err(Error::config(format!(
            "[restore] gtid_domain = {n} is a domain of the source's own GTIDs: renumbering into it would give other transactions the source's GTIDs; choose a domain neither server uses"
        ))),
        Some(n) => Ok(GtidHandling::Domain(n)),
        None => Err(Error::refused(format!(
            "target {name} has gtid_strict_mode=ON and {}: it would refuse the source's GTIDs (ERROR 1950), and renumbering them in the source's domain would give other transactions the source's GTIDs. Set [restore] gtid_domain = N (a domain neither server uses) to replay them into a domain of their own, or restore into a target without strict mode or with a gtid_domain_id of its own",
            blocked.join("; ")
        ))),
    }
}

/// Decides, before the target is touched (the dump not loaded yet), how the replay writes GTIDs
/// (see `choose_gtids`), and records it for [`replay_binlogs`]. A refusal is exit 9.
pub async fn decide_gtids(
    prepared: &mut PreparedReplay,
    target: &coffer_core::client::Endpoint,
) -> Result<GtidHandling> {
    let state = target_gtids(target).await?;
    let name = format!("{}:{}", target.host, target.port);
    let handling = choose_gtids(
        &prepared.first_gtids,
        &state,
        prepared.plan.gtid_domain,
        true,
        &name,
    )?;
    prepared.gtids = Some(handling);
    Ok(handling)
}

/// What [`decide_gtids`] would decide for `plan` (from the first GTIDs its indexes name), for
/// `--dry-run`: reads the target, changes nothing.
pub async fn preview_gtids(
    plan: &ReplayPlan,
    target: &coffer_core::client::Endpoint,
) -> Result<GtidHandling> {
    let state = target_gtids(target).await?;
    let name = format!("{}:{}", target.host, target.port);
    choose_gtids(
        &FirstGtids::from_list(&plan.first_gtids),
        &state,
        plan.gtid_domain,
        true,
        &name,
    )
}

/// Replays a prepared plan into the target in one client session (temporary tables can span
/// files), under the name the prepared rename gives, with GTIDs as [`decide_gtids`] chose
/// (decided here, from the target's state after the dump's load, when it was not called).
pub async fn replay_binlogs(
    prepared: &PreparedReplay,
    target: &coffer_core::client::Endpoint,
    cancel: &Cancel,
    progress: Progress,
) -> Result<GtidOutcome> {
    let plan = &prepared.plan;
    let handling = match prepared.gtids {
        Some(h) => h,
        None => {
            let state = target_gtids(target).await?;
            let name = format!("{}:{}", target.host, target.port);
            choose_gtids(
                &prepared.first_gtids,
                &state,
                plan.gtid_domain,
                false,
                &name,
            )?
        }
    };
    let (args, paths) = (prepared.args.clone(), prepared.paths.clone());
    let binlog_tool = Tool::find(&["mariadb-binlog", "mysqlbinlog"])?;
    let client_tool = Tool::find(&["mariadb", "mysql"])?;
    let defaults = DefaultsFile::new(target)?;
    info!(
        files = paths.len(),
        start = plan.start_position,
        stop = plan.stop_position,
        "replaying binlogs"
    );
    let cancel = cancel.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        cancel.check()?;
        let mut decoder = process::tool_command(&binlog_tool.path)
            .args(&args)
            .args(&paths)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .logged()
            .spawn()
            .map_err(|e| {
                Error::other(format!("cannot start {}: {e}", binlog_tool.path.display()))
            })?;
        let decoder_group = process::Registered::new(Some(decoder.id()), &cancel);
        let decoder_stderr = process::drain_tail(decoder.stderr.take().expect("stderr is piped"));
        let mut stdout = decoder.stdout.take().expect("stdout is piped");
        let mut client = process::tool_command(&client_tool.path)
            .arg(defaults.arg())
            .args(["--binary-mode", "--max-allowed-packet=1G"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .logged()
            .spawn()
            .map_err(|e| {
                Error::other(format!("cannot start {}: {e}", client_tool.path.display()))
            })?;
        let client_group = process::Registered::new(Some(client.id()), &cancel);
        let client_stderr = process::drain_tail(client.stderr.take().expect("stderr is piped"));
        let mut stdin = client.stdin.take().expect("stdin is piped");
        // A broken pipe here means the client stopped early; its own exit status says why.
        let copied = copy_replay(&mut stdout, &mut stdin, handling);
        drop(stdin);
        drop(stdout);
        let client_status = client
            .wait()
            .map_err(|e| Error::other(format!("waiting for the client: {e}")))?;
        let decoder_status = decoder
            .wait()
            .map_err(|e| Error::other(format!("waiting for mariadb-binlog: {e}")))?;
        drop((client_group, decoder_group));
        drop(defaults);
        cancel.check()?;
        let client_err = client_stderr.join().unwrap_or_default();
        let decoder_err = decoder_stderr.join().unwrap_or_default();
        let tail = |bytes: &[u8]| process::tail_lines(bytes, 3);
        struct Done {
            status: std::process::ExitStatus,
            stderr: Vec<u8>,
        }
        let (client, decoded) = (
            Done {
                status: client_status,
                stderr: client_err,
            },
            Done {
                status: decoder_status,
                stderr: decoder_err,
            },
        );
        if !decoded.status.success() {
            return Err(Error::new(
                ErrorKind::Restore,
                format!(
                    "mariadb-binlog failed ({}): {}",
                    decoded.status,
                    tail(&decoded.stderr)
                ),
            ));
        }
        if !client.status.success() {
            return Err(Error::new(
                ErrorKind::Restore,
                format!(
                    "replaying binlogs failed ({}): {}",
                    client.status,
                    tail(&client.stderr)
                ),
            ));
        }
        copied.map_err(|e| Error::new(ErrorKind::Restore, format!("replaying binlogs: {e}")))?;
        Ok(())
    })
    .await
    .map_err(|e| Error::other(format!("replay task failed: {e}")))??;
    let bytes: u64 = plan
        .files
        .iter()
        .flat_map(|f| &f.artifacts)
        .map(|a| a.size)
        .sum();
    progress.add(bytes);
    // The last GTID written: the target's newest in the domain written last.
    let domain = match handling {
        GtidHandling::Kept => plan.last_gtid.as_deref().and_then(parse_gtid).map(|g| g.0),
        GtidHandling::Domain(n) => Some(n),
    };
    let written = match (domain, target_gtids(target).await) {
        (Some(d), Ok(state)) if state.log_bin => position_in(&state.binlog_pos, d).map(|g| g.0),
        _ => None,
    };
    let last_gtid = match handling {
        GtidHandling::Kept => written.or_else(|| plan.last_gtid.clone()),
        GtidHandling::Domain(_) => written,
    };
    info!(gtids = %handling, last_gtid = last_gtid.as_deref().unwrap_or("-"), "binlogs replayed");
    Ok(GtidOutcome {
        gtids: handling,
        last_gtid,
    })
}

/// The lines `mariadb-binlog` writes before a transaction to give it the source's GTID: its
/// domain and server id (when they change) and its sequence number (`/*M!100001 …` since
/// 10.11, `/*!100001 …` before).
const GTID_LINES: [&[u8]; 6] = [
    b"/*M!100001 SET @@session.gtid_domain_id=",
    b"/*M!100001 SET @@session.server_id=",
    b"/*M!100001 SET @@session.gtid_seq_no=",
    b"/*!100001 SET @@session.gtid_domain_id=",
    b"/*!100001 SET @@session.server_id=",
    b"/*!100001 SET @@session.gtid_seq_no=",
];

/// Copies decoded binlog SQL to the client. With GTIDs kept, as it is: each transaction keeps
/// the source's GTID. Renumbered into domain N: the session is put into that domain first and
/// the lines that set the source's domain, server id and sequence number are dropped, so the
/// target numbers the transactions itself, in a domain of their own. Returns the lines dropped.
fn copy_replay(
    input: &mut impl std::io::Read,
    output: &mut impl std::io::Write,
    handling: GtidHandling,
) -> std::io::Result<u64> {
    use std::io::{BufRead, Write};
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, input);
    let mut writer = std::io::BufWriter::with_capacity(256 * 1024, output);
    let GtidHandling::Domain(domain) = handling else {
        std::io::copy(&mut reader, &mut writer)?;
        writer.flush()?;
        return Ok(0);
    };
    writeln!(writer, "SET SESSION gtid_domain_id = {domain};")?;
    let mut line = Vec::with_capacity(4096);
    let mut dropped = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if GTID_LINES.iter().any(|p| line.starts_with(p)) {
            dropped += 1;
            continue;
        }
        writer.write_all(&line)?;
    }
    writer.flush()?;
    Ok(dropped)
}

/// Parses an operator's `--at`: RFC 3339 with an offset, or a wall-clock time in `tz`. A time in
/// a DST gap means the moment just after it; a time in a DST overlap means its first occurrence.
pub fn parse_at(text: &str, tz: &jiff::tz::TimeZone) -> Result<Timestamp> {
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    let civil: jiff::civil::DateTime = text.trim().replacen(' ', "T", 1).parse().map_err(|_| {
        Error::config(format!(
            "--at {text:?} is not a date and time (want \"2025-10-29 11:59:00\" or RFC 3339)"
        ))
    })?;
    let fail = |e: jiff::Error| Error::config(format!("--at {text:?}: {e}"));
    let ambiguous = tz.to_ambiguous_timestamp(civil);
    if let jiff::tz::AmbiguousOffset::Gap { before, after } = ambiguous.offset() {
        // The clock jumps from the gap's start (in `before`) to its end (in `after`) at one
        // instant, the transition: the first moment after the gap (03:00 EDT when New York
        // springs forward at 02:00 EST). Read with the later offset, the time lies before it;
        // with the earlier one, after it (jiff's "compatible" choice, an hour too late).
        let earliest = after.to_timestamp(civil).map_err(fail)?;
        let latest = before.to_timestamp(civil).map_err(fail)?;
        if let Some(transition) = tz
            .following(earliest)
            .next()
            .map(|t| t.timestamp())
            .filter(|t| *t <= latest)
        {
            return Ok(transition);
        }
    }
    // Unambiguous, or in a fold: the first occurrence.
    ambiguous.compatible().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtids_are_kept_or_moved_into_a_domain_of_their_own() {
        let input = b"# at 4\n/*M!100001 SET @@session.gtid_domain_id=0*//*!*/;\n/*!100001 SET @@session.server_id=640*//*!*/;\n/*M!100001 SET @@session.gtid_seq_no=8*//*!*/;\nINSERT INTO t VALUES ('/*M!100001 SET @@session.gtid_seq_no=9')\nBINLOG '\nAAAA\n'/*!*/;";
        let mut kept = Vec::new();
        assert_eq!(
            copy_replay(&mut &input[..], &mut kept, GtidHandling::Kept).unwrap(),
            0
        );
        assert_eq!(kept, input);
        let mut moved = Vec::new();
        let dropped = copy_replay(&mut &input[..], &mut moved, GtidHandling::Domain(7)).unwrap();
        assert_eq!(dropped, 3);
        assert_eq!(
            String::from_utf8(moved).unwrap(),
            "SET SESSION gtid_domain_id = 7;\n# at 4\nINSERT INTO t VALUES ('/*M!100001 SET @@session.gtid_seq_no=9')\nBINLOG '\nAAAA\n'/*!*/;"
        );
    }

    #[test]
    fn strict_targets_keep_gtids_only_when_behind() {
        let first = FirstGtids::from_list(&["0-640-4".into()]);
        let target = |strict, pos: &str, domain_id| TargetGtids {
            strict,
            log_bin: true,
            binlog_pos: pos.into(),
            current_pos: String::new(),
            domain_id,
        };
        let choose = |t: &TargetGtids, domain| choose_gtids(&first, t, domain, true, "t:1");
        // Not strict: kept, whatever the position.
        assert_eq!(
            choose(&target(false, "0-641-9", 0), None).unwrap(),
            GtidHandling::Kept
        );
        // Strict, behind, its own history elsewhere: kept.
        assert_eq!(
            choose(&target(true, "0-641-3,1-641-20", 1), None).unwrap(),
            GtidHandling::Kept
        );
        // Strict and ahead: refused without gtid_domain, renumbered with it.
        let refused = choose(&target(true, "0-641-6", 1), None).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Refused);
        assert!(
            refused.to_string().contains("0-641-6") && refused.to_string().contains("gtid_domain"),
            "{refused}"
        );
        assert_eq!(
            choose(&target(true, "0-641-6", 1), Some(7)).unwrap(),
            GtidHandling::Domain(7)
        );
        // The dump's load would write into the source's domain: not behind either.
        assert!(choose(&target(true, "", 0), None).is_err());
        assert_eq!(
            choose_gtids(&first, &target(true, "", 0), None, false, "t:1").unwrap(),
            GtidHandling::Kept
        );
        // A domain the source uses is no domain of their own.
        assert_eq!(
            choose(&target(true, "0-641-6", 1), Some(0))
                .unwrap_err()
                .kind(),
            ErrorKind::Config
        );
        assert_eq!(position_in("0-1-5,7-2-3", 7), Some(("7-2-3".into(), 3)));
    }

    #[test]
    fn at_is_read_in_the_operators_zone() {
        let riyadh = jiff::tz::TimeZone::get("Asia/Riyadh").unwrap();
        let at = parse_at("2025-10-29 11:59:00", &riyadh).unwrap();
        assert_eq!(at.to_string(), "2025-10-29T08:59:00Z");
        let explicit = parse_at("2025-10-29T11:59:00+05:30", &riyadh).unwrap();
        assert_eq!(explicit.to_string(), "2025-10-29T06:29:00Z");
        assert!(
            parse_at("yesterday", &riyadh)
                .unwrap_err()
                .to_string()
                .contains("yesterday")
        );
    }

    #[test]
    fn dst_gap_and_overlap_are_resolved_as_documented() {
        let new_york = jiff::tz::TimeZone::get("America/New_York").unwrap();
        let at = |text: &str, tz: &jiff::tz::TimeZone| parse_at(text, tz).unwrap().to_string();
        // 02:30 does not exist on 2030-03-10 (02:00 EST jumps to 03:00 EDT): the moment just
        // after the gap, 03:00 EDT, not 03:30.
        assert_eq!(at("2030-03-10 02:30:00", &new_york), "2030-03-10T07:00:00Z");
        // Every time in the gap, its first and last second too, is that same moment.
        assert_eq!(at("2025-03-09 02:00:00", &new_york), "2025-03-09T07:00:00Z");
        assert_eq!(at("2025-03-09 02:59:59", &new_york), "2025-03-09T07:00:00Z");
        // Just outside the gap, nothing moves.
        assert_eq!(at("2025-03-09 01:59:59", &new_york), "2025-03-09T06:59:59Z");
        assert_eq!(at("2025-03-09 03:00:00", &new_york), "2025-03-09T07:00:00Z");
        // 01:30 happens twice on 2025-11-02: the first (EDT, UTC-4), not the second (05:30
        // EST would be 06:30Z).
        assert_eq!(at("2025-11-02 01:30:00", &new_york), "2025-11-02T05:30:00Z");
        assert_eq!(at("2025-11-02 01:00:00", &new_york), "2025-11-02T05:00:00Z");
        assert_eq!(at("2030-11-03 01:30:00", &new_york), "2030-11-03T05:30:00Z");
        assert_eq!(at("2025-11-02 02:00:00", &new_york), "2025-11-02T07:00:00Z");

        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        // 2030-03-31: 02:00 CET jumps to 03:00 CEST; 02:30 means 03:00 CEST (01:00Z).
        assert_eq!(at("2030-03-31 02:30:00", &berlin), "2030-03-31T01:00:00Z");
        assert_eq!(at("2030-03-31 02:00:00", &berlin), "2030-03-31T01:00:00Z");
        assert_eq!(at("2030-03-31 01:59:59", &berlin), "2030-03-31T00:59:59Z");
        // 2030-10-27: 02:00–02:59 happens twice; 02:30 means the first, in CEST (00:30Z).
        assert_eq!(at("2030-10-27 02:30:00", &berlin), "2030-10-27T00:30:00Z");
        assert_eq!(at("2030-10-27 03:00:00", &berlin), "2030-10-27T02:00:00Z");
        // An explicit offset is taken as written, even one naming the gap's wall time.
        assert_eq!(
            at("2030-03-10T02:30:00-05:00", &new_york),
            "2030-03-10T07:30:00Z"
        );
    }
}

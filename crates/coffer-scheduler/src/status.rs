//! What `coffer status` reports, as a value: the newest backups, what each kind of backup holds,
//! the recovery point, the point-in-time window, the last drill, the locks held and every
//! scheduled job. The command prints it; the daemon refreshes the same value in the background
//! ([`crate::daemon::view`]) and serves it as `/metrics`.
//!
//! The pure parts — backups summed per kind ([`by_kind`]), the window chosen among the archive's
//! ([`point_in_time_window`]) — are functions of the manifests, tested without storage.

use std::collections::BTreeMap;

use coffer_core::archive::{Archive, ArchiveEntry, Window, damaged_files};
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::lock::{self, DEFAULT_STALE_AFTER, LockEntry, LockKind};
use coffer_core::manifest::{Manifest, keep_newest_full};
use coffer_core::repository::{DRILL_REPORTS, Repository};
use coffer_core::{Error, Result};
use coffer_verifier::report::{DrillReport, Verdict};
use jiff::Timestamp;
use serde::Serialize;

use crate::recovery_point::{RecoveryPoint, recovery_point};

/// The repository and the source, as `coffer status` sees them. Serialized, it is the JSON of
/// `coffer status --json`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Where the repository is.
    pub repository: String,
    /// Backups listed (every kind).
    pub backups: usize,
    /// The newest full backup ("latest").
    pub newest_full_backup: Option<NewestFull>,
    /// The binlog file archived last.
    pub newest_archived_binlog: Option<NewestBinlog>,
    /// The archive against the source; `None` when the source could not be asked.
    pub recovery_point: Option<RecoveryPoint>,
    /// Why the source could not be asked.
    pub source_error: Option<String>,
    /// That failure itself, for its exit code.
    #[serde(skip)]
    pub source_failure: Option<Error>,
    /// Each scheduled job: its last run as the daemon recorded it, and when it is next due.
    pub jobs: Vec<JobStatus>,
    /// When this status was taken (the job clock's now): every age in it is as of then.
    pub generated_at: Timestamp,
    /// The listed backups of each kind (`full`, `binlog`, `segment`), by kind name.
    pub by_kind: Vec<KindSummary>,
    /// The newest point-in-time window; `None` when no full backup can be rolled forward by an
    /// archived binlog.
    pub point_in_time_window: Option<PointInTimeWindow>,
    /// The newest stored drill report.
    pub last_drill: Option<LastDrill>,
    /// Every lock under `locks/`, stale ones included (marked), oldest first.
    pub locks: Vec<HeldLock>,
    /// Each configured `[[files]]` source and its newest snapshot.
    pub file_snapshots: Vec<NewestSnapshot>,
}

/// A `[[files]]` source's newest snapshot, in short.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewestSnapshot {
    /// The source's name.
    pub source: String,
    /// How many snapshots of it the repository holds.
    pub snapshots: usize,
    /// The newest one's id; `None` when there is none yet.
    pub id: Option<String>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// Seconds from then to the status's time.
    pub age_seconds: Option<i64>,
    /// Files it holds.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Entries it could not record.
    pub skipped: u64,
}

/// The backups of one kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindSummary {
    /// `full`, `binlog`, `segment`, …
    pub kind: String,
    /// How many are listed.
    pub backups: usize,
    /// Bytes they take on storage (their artifacts' stored sizes).
    pub stored_bytes: u64,
    /// The one that finished last.
    pub newest_id: Option<String>,
    /// When it finished: the kind's last success.
    pub last_success: Option<Timestamp>,
    /// How long it took (its manifest's `duration_seconds`: finished minus started).
    pub last_duration_seconds: Option<f64>,
}

/// The newest point-in-time window: from the oldest full backup whose archived binlog chain
/// reaches as far as any does, to the newest event that chain holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointInTimeWindow {
    /// The full backup the window starts from.
    pub full_backup: String,
    /// Its start (the snapshot's time): the earliest point a restore can reach.
    pub start: Timestamp,
    /// The newest archived event reachable from it without a gap: the latest point.
    pub end: Timestamp,
    /// What breaks the archive anywhere (binlogs never archived, numbering restarts, changes of
    /// server id, damaged files), counted; `coffer binlog window` names each.
    pub gaps: usize,
}

/// The newest stored drill report, in short.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastDrill {
    /// Its id (`YYYYMMDDTHHMMSSZ-drill-XXXX`).
    pub id: String,
    /// `pass` or `fail`.
    pub verdict: Verdict,
    /// The full backup it restored.
    pub backup_id: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// The report's recovery time: seconds from the start of the restore to the end of the
    /// binlog replay (`None` when the restore did not get that far).
    pub recovery_time_seconds: Option<f64>,
}

/// One lock object under `locks/`, as `coffer lock list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldLock {
    /// The lock's id.
    pub id: String,
    /// `shared` or `exclusive` (an unreadable lock counts as exclusive).
    pub kind: LockKind,
    /// What its holder does (`backup full`, `prune`); `None` when unreadable.
    pub purpose: Option<String>,
    /// The holder's host.
    pub host: Option<String>,
    /// The holder's process id there.
    pub pid: Option<u32>,
    /// When it was taken.
    pub created: Option<Timestamp>,
    /// When its holder last refreshed it.
    pub heartbeat: Option<Timestamp>,
    /// Whether it is stale (the next locker takes it over).
    pub stale: bool,
    /// Why it is stale, or why it cannot be read.
    pub note: Option<String>,
}

impl From<&LockEntry> for HeldLock {
    fn from(entry: &LockEntry) -> Self {
        let record = entry.record.as_ref();
        HeldLock {
            id: entry.id.clone(),
            kind: entry.kind(),
            purpose: record.map(|r| r.purpose.clone()),
            host: record.map(|r| r.host.clone()),
            pid: record.map(|r| r.pid),
            created: record.map(|r| r.created),
            heartbeat: record.map(|r| r.heartbeat),
            stale: entry.is_stale(),
            note: entry.stale.clone().or_else(|| entry.problem.clone()),
        }
    }
}

impl From<&DrillReport> for LastDrill {
    fn from(report: &DrillReport) -> Self {
        LastDrill {
            id: report.id.clone(),
            verdict: report.verdict,
            backup_id: report.backup_id.clone(),
            started_at: report.started_at,
            finished_at: report.finished_at,
            recovery_time_seconds: report.recovery_time_seconds,
        }
    }
}

/// The `manifests` summed per kind, in kind-name order; the newest of a kind is the one that
/// finished last (ties to the greater id).
pub fn by_kind(manifests: &[Manifest]) -> Vec<KindSummary> {
    let mut totals = KindTotals::default();
    for m in manifests {
        totals.add(m);
    }
    totals.finish()
}

/// [`by_kind`] as a fold: backups are added one at a time, as a listing hands them out.
#[derive(Debug, Default)]
pub struct KindTotals {
    kinds: BTreeMap<&'static str, KindSummary>,
}

impl KindTotals {
    /// Counts one backup.
    pub fn add(&mut self, m: &Manifest) {
        let summary = self
            .kinds
            .entry(m.kind.as_str())
            .or_insert_with(|| KindSummary {
                kind: m.kind.as_str().to_string(),
                backups: 0,
                stored_bytes: 0,
                newest_id: None,
                last_success: None,
                last_duration_seconds: None,
            });
        summary.backups += 1;
        summary.stored_bytes += m.stored_bytes();
        let newer = match (summary.last_success, &summary.newest_id) {
            (Some(at), Some(id)) => (at, id.as_str()) < (m.finished_at, m.id.as_str()),
            _ => true,
        };
        if newer {
            summary.newest_id = Some(m.id.clone());
            summary.last_success = Some(m.finished_at);
            summary.last_duration_seconds = Some(m.duration_seconds);
        }
    }

    /// The summaries, in kind-name order.
    pub fn finish(self) -> Vec<KindSummary> {
        self.kinds.into_values().collect()
    }
}

/// Of the archive's `windows`, the newest: the latest end any reaches, from the earliest start
/// that reaches it (ties to the greater full backup id). Windows without an archived event yet
/// give no point in time and are passed over. `gaps` is copied into the result.
pub fn point_in_time_window(windows: &[Window], gaps: usize) -> Option<PointInTimeWindow> {
    let end = windows.iter().filter_map(|w| w.to).max()?;
    let end = Timestamp::from_second(end).ok()?;
    let from = windows
        .iter()
        .filter(|w| w.to == Some(end.as_second()))
        .min_by(|a, b| (a.from, &b.full_backup).cmp(&(b.from, &a.full_backup)))?;
    Some(PointInTimeWindow {
        full_backup: from.full_backup.clone(),
        start: from.from,
        end,
        gaps,
    })
}

/// The newest drill report stored under `reports/drills/`: ids begin with their start time, so
/// the greatest key is the newest; only that one is read (and verified, with a verify key).
async fn last_drill(repository: &Repository) -> Result<Option<LastDrill>> {
    let newest = repository
        .storage()
        .list(DRILL_REPORTS)
        .await?
        .into_iter()
        .filter(|o| o.key.ends_with(".json"))
        .max_by(|a, b| a.key.cmp(&b.key));
    let Some(object) = newest else {
        return Ok(None);
    };
    let bytes = repository.get_verified(&object.key).await?;
    let report: DrillReport = serde_json::from_slice(&bytes)
        .map_err(|e| Error::integrity(format!("{}: not a drill report: {e}", object.key)))?;
    Ok(Some(LastDrill::from(&report)))
}

/// A scheduled job as `coffer status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// `full`, `incremental`, …
    pub job: String,
    /// The cron expression, or `continuous`.
    pub schedule: String,
    /// When it is next due (a cron job).
    pub next_run: Option<jiff::Timestamp>,
    /// Its last run, when the daemon has run it.
    pub last_run: Option<crate::daemon::state::JobState>,
}

/// The newest full backup and how old it is.
#[derive(Debug, Clone, Serialize)]
pub struct NewestFull {
    /// Its id.
    pub id: String,
    /// When it finished.
    pub finished_at: Timestamp,
    /// Seconds since then.
    pub age_seconds: i64,
}

/// The binlog file archived last.
#[derive(Debug, Clone, Serialize)]
pub struct NewestBinlog {
    /// File name.
    pub file: String,
    /// Archived whole (closed) rather than as segments of the active file.
    pub whole: bool,
    /// Bytes archived.
    pub end_position: u64,
    /// Time of its last event (any event).
    pub last_event_time: Option<i64>,
    /// Commit time of its last transaction.
    pub last_commit_time: Option<i64>,
}

/// Reads the repository (failing on its errors) and asks the source for the recovery point
/// (recording, not failing on, the source's errors), at the job clock's now. Manifests come
/// through [`Repository::for_each_manifest`] (cached, so a long-lived caller, the daemon, reads
/// each one once), and only an [`ArchiveEntry`] of each is kept.
pub async fn status(config: &Config, repository: &Repository, job: &JobContext) -> Result<Status> {
    let now = job.clock.now();
    // One pass over the catalog, keeping of each backup only what the archive needs: the
    // memory of a status does not grow with what the manifests hold.
    let mut entries: Vec<ArchiveEntry> = Vec::new();
    let mut kinds = KindTotals::default();
    let mut newest: Option<Manifest> = None;
    let backups = repository
        .for_each_manifest(|m| {
            kinds.add(&m);
            if ArchiveEntry::wanted(&m) {
                entries.push(ArchiveEntry::from(&m));
            }
            keep_newest_full(&mut newest, m);
            Ok(())
        })
        .await?;
    entries.shrink_to_fit();
    let archive = Archive::new(&entries);
    // The sizes on storage, listed once and let go: a truncated or missing artifact ends its
    // window and the recovery point.
    let damaged = {
        let stored = repository.storage().list("data/").await?;
        damaged_files(archive.files(), &stored)
    };
    let window = point_in_time_window(
        &archive.windows(&damaged),
        archive.gaps().len() + damaged.len(),
    );
    let last_drill = last_drill(repository).await?;
    let locks = lock::list(repository, &job.clock, DEFAULT_STALE_AFTER)
        .await?
        .iter()
        .map(HeldLock::from)
        .collect();
    let newest_file = archive
        .files()
        .iter()
        .max_by_key(|f| (f.archived_at, f.sequence));
    // A configuration of file backups alone has no database to ask.
    let (point, failure) = if config.source.is_none() {
        (None, None)
    } else {
        match recovery_point(config, repository, job, &archive, &damaged).await {
            Ok(point) => (Some(point), None),
            Err(e) => (None, Some(e)),
        }
    };
    let snapshots = if config.files.is_empty() {
        Vec::new()
    } else {
        coffer_files::snapshot::list(repository).await?
    };
    let file_snapshots = config
        .files
        .iter()
        .map(|source| {
            let newest = coffer_files::snapshot::newest(&snapshots, Some(&source.name));
            NewestSnapshot {
                source: source.name.clone(),
                snapshots: snapshots.iter().filter(|s| s.source == source.name).count(),
                id: newest.map(|s| s.id.clone()),
                finished_at: newest.map(|s| s.finished_at),
                age_seconds: newest.map(|s| now.as_second() - s.finished_at.as_second()),
                files: newest.map_or(0, |s| s.snapshot.files + s.snapshot.hardlinks),
                bytes: newest.map_or(0, |s| s.snapshot.bytes),
                skipped: newest.map_or(0, |s| s.snapshot.skipped_count),
            }
        })
        .collect();
    let mut jobs = Vec::new();
    for (job, when) in &config.schedule.jobs {
        let (schedule, next_run) = match when {
            coffer_core::config::When::Cron(s) => (s.expression().to_string(), s.next_after(now)),
            coffer_core::config::When::Continuous => ("continuous".to_string(), None),
        };
        jobs.push(JobStatus {
            job: job.as_str().to_string(),
            schedule,
            next_run,
            last_run: crate::daemon::state::load(repository, *job).await?,
        });
    }
    Ok(Status {
        jobs,
        repository: repository.storage().location(),
        backups,
        newest_full_backup: newest.map(|m| NewestFull {
            id: m.id,
            finished_at: m.finished_at,
            age_seconds: now.as_second() - m.finished_at.as_second(),
        }),
        newest_archived_binlog: newest_file.map(|f| NewestBinlog {
            file: f.file.clone(),
            whole: f.whole,
            end_position: f.end_position,
            last_event_time: f.last_event_time,
            last_commit_time: f.last_commit_time,
        }),
        recovery_point: point,
        source_error: failure.as_ref().map(ToString::to_string),
        source_failure: failure,
        generated_at: now,
        by_kind: kinds.finish(),
        point_in_time_window: window,
        last_drill,
        locks,
        file_snapshots,
    })
}

#[cfg(test)]
mod tests {
    use coffer_core::archive::Window;
    use coffer_core::manifest::{BackupKind, Manifest, SourceInfo};
    use coffer_core::pipeline::ArtifactRecord;
    use jiff::Timestamp;

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn backup(
        id: &str,
        kind: BackupKind,
        started: &str,
        finished: &str,
        stored: &[u64],
    ) -> Manifest {
        let mut m = Manifest::finished(
            id,
            kind,
            at(started),
            at(finished),
            SourceInfo {
                host: "db".into(),
                port: 3306,
                server_version: "10.11".into(),
                server_id: 1,
                dump_tool: "mariadb-dump".into(),
            },
        );
        m.artifacts = stored
            .iter()
            .enumerate()
            .map(|(i, &stored_size)| ArtifactRecord {
                name: format!("part{i}"),
                key: format!("data/{id}/part{i}"),
                compression: "zstd".into(),
                encrypted: false,
                size: stored_size * 4,
                stored_size,
                sha256: String::new(),
            })
            .collect();
        m
    }

    fn window(full: &str, from: &str, to: Option<&str>) -> Window {
        Window {
            full_backup: full.into(),
            from: at(from),
            to: to.map(|t| at(t).as_second()),
        }
    }

    #[test]
    fn backups_are_summed_per_kind_and_the_newest_is_the_one_that_finished_last() {
        let manifests = [
            backup(
                "f1",
                BackupKind::Full,
                "2026-11-01T02:00:00Z",
                "2026-11-01T02:10:00Z",
                &[1000, 24],
            ),
            backup(
                "b1",
                BackupKind::Binlog,
                "2026-11-01T03:00:00Z",
                "2026-11-01T03:00:02Z",
                &[300],
            ),
            // Started before f1 finished, finished after: the newest full by finish time.
            backup(
                "f0",
                BackupKind::Full,
                "2026-11-01T02:05:00Z",
                "2026-11-01T02:20:30Z",
                &[2000],
            ),
            backup(
                "b2",
                BackupKind::Binlog,
                "2026-11-01T04:00:00Z",
                "2026-11-01T04:00:01Z",
                &[],
            ),
        ];
        let kinds = by_kind(&manifests);
        assert_eq!(
            kinds,
            [
                KindSummary {
                    kind: "binlog".into(),
                    backups: 2,
                    stored_bytes: 300,
                    newest_id: Some("b2".into()),
                    last_success: Some(at("2026-11-01T04:00:01Z")),
                    last_duration_seconds: Some(1.0),
                },
                KindSummary {
                    kind: "full".into(),
                    backups: 2,
                    stored_bytes: 3024,
                    newest_id: Some("f0".into()),
                    last_success: Some(at("2026-11-01T02:20:30Z")),
                    last_duration_seconds: Some(930.0),
                },
            ]
        );
        assert!(by_kind(&[]).is_empty());
    }

    #[test]
    fn the_window_runs_from_the_oldest_full_that_reaches_the_newest_archived_event() {
        let windows = [
            // An older full whose chain stops at a gap.
            window("f1", "2026-11-01T02:00:00Z", Some("2026-11-02T01:00:00Z")),
            window("f2", "2026-11-02T02:00:00Z", Some("2026-11-04T09:30:00Z")),
            window("f3", "2026-11-03T02:00:00Z", Some("2026-11-04T09:30:00Z")),
            // The newest full: no binlog archived after it yet.
            window("f4", "2026-11-04T02:00:00Z", None),
        ];
        assert_eq!(
            point_in_time_window(&windows, 1),
            Some(PointInTimeWindow {
                full_backup: "f2".into(),
                start: at("2026-11-02T02:00:00Z"),
                end: at("2026-11-04T09:30:00Z"),
                gaps: 1,
            })
        );
    }

    #[test]
    fn no_archived_binlog_means_no_point_in_time_window() {
        assert_eq!(point_in_time_window(&[], 0), None);
        let only_fulls = [window("f1", "2026-11-01T02:00:00Z", None)];
        assert_eq!(point_in_time_window(&only_fulls, 0), None);
    }

    #[test]
    fn a_tie_on_the_start_goes_to_the_greater_full_backup_id() {
        let windows = [
            window("f-a", "2026-11-01T02:00:00Z", Some("2026-11-01T05:00:00Z")),
            window("f-b", "2026-11-01T02:00:00Z", Some("2026-11-01T05:00:00Z")),
        ];
        let chosen = point_in_time_window(&windows, 0).unwrap();
        assert_eq!(chosen.full_backup, "f-b");
    }
}

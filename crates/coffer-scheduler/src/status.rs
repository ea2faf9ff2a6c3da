//! What `coffer status` reports, as a value: the newest backups and the recovery point. The
//! command prints it; the daemon will serve it (`/metrics`, `GET /up`) from the same function.

use coffer_core::archive::archived_files;
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::manifest::newest_full;
use coffer_core::repository::Repository;
use coffer_core::{Error, Result};
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
/// (recording, not failing on, the source's errors), at the job clock's now.
pub async fn status(config: &Config, repository: &Repository, job: &JobContext) -> Result<Status> {
    let now = job.clock.now();
    let manifests = repository.list().await?;
    let files = archived_files(&manifests);
    let newest_file = files.iter().max_by_key(|f| (f.archived_at, f.sequence));
    let (point, failure) = match recovery_point(config, repository, job).await {
        Ok(point) => (Some(point), None),
        Err(e) => (None, Some(e)),
    };
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
        backups: manifests.len(),
        newest_full_backup: newest_full(&manifests).map(|m| NewestFull {
            id: m.id.clone(),
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
    })
}

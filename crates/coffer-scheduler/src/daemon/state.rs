//! The last run of every job, kept in the repository (`state/JOB.json`) so a restarted or
//! replacement backup host knows what ran when, and catches up what it missed.

use coffer_core::config::JobName;
use coffer_core::repository::Repository;
use coffer_core::{Error, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Where job state lives in the repository.
pub const STATE_PREFIX: &str = "state/";

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did its work.
    Succeeded,
    /// Every attempt failed.
    Failed,
    /// It was stopped (shutdown).
    Cancelled,
}

/// One job's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// The job.
    pub job: String,
    /// When its last run started.
    pub last_started: Timestamp,
    /// When its last run ended.
    pub last_finished: Timestamp,
    /// How it ended.
    pub outcome: Outcome,
    /// Attempts it took (1 without retries).
    pub attempts: u32,
    /// What it said: a summary, or the last error.
    pub message: String,
    /// When it last succeeded, if ever.
    pub last_success: Option<Timestamp>,
    /// Runs that failed after every retry, over the job's life.
    pub failures_total: u64,
    /// Due times skipped because the previous run was still going.
    pub skipped_total: u64,
}

fn key(job: JobName) -> String {
    format!("{STATE_PREFIX}{job}.json")
}

/// The recorded state of `job`, if it ever ran. An unreadable record is an error naming it: the
/// daemon must not guess that a job never ran.
pub async fn load(repository: &Repository, job: JobName) -> Result<Option<JobState>> {
    match repository.storage().get_bytes(&key(job)).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::integrity(format!("{}: not a job state: {e}", key(job)))),
        Err(e) if e.kind() == coffer_core::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records `state` (replacing the previous record).
pub async fn save(repository: &Repository, job: JobName, state: &JobState) -> Result<()> {
    let mut body = serde_json::to_vec_pretty(state).expect("a job state always serializes");
    body.push(b'\n');
    repository.storage().put(&key(job), body.into()).await
}

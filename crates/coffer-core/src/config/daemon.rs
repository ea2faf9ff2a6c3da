//! `[schedule]` (when each job runs) and `[daemon]` (how `coffer daemon` runs them).

use super::*;
use crate::schedule::Schedule;

/// A job the daemon schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobName {
    /// `backup run full`.
    Full,
    /// `backup run incremental`, or the supervised `binlog stream` when `"continuous"`.
    Incremental,
    /// `drill run`.
    Drill,
    /// `prune`.
    Prune,
    /// `backup verify` of the newest backup of each kind.
    Verify,
    /// `backup run files`: a snapshot of every `[[files]]` source.
    Files,
    /// `backup run config`: a version of every `[[config_backup]]` file whose content changed.
    Config,
}

impl JobName {
    /// Every job, in the order they are reported.
    pub const ALL: [JobName; 7] = [
        JobName::Full,
        JobName::Incremental,
        JobName::Drill,
        JobName::Prune,
        JobName::Verify,
        JobName::Files,
        JobName::Config,
    ];

    /// Whether the job reads the database, so needs a `[source]` section.
    pub fn needs_database(self) -> bool {
        matches!(self, JobName::Full | JobName::Incremental | JobName::Drill)
    }

    /// The key in `[schedule]` and the name in logs, state and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobName::Full => "full",
            JobName::Incremental => "incremental",
            JobName::Drill => "drill",
            JobName::Prune => "prune",
            JobName::Verify => "verify",
            JobName::Files => "files",
            JobName::Config => "config",
        }
    }
}

impl std::fmt::Display for JobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a job runs.
#[derive(Debug, Clone)]
pub enum When {
    /// At the times a cron expression names, in the configured zone.
    Cron(Box<Schedule>),
    /// All the time: the incremental job as a supervised `binlog stream`.
    Continuous,
}

/// The schedule of every scheduled job; a job not listed is not scheduled.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Each scheduled job and when.
    pub jobs: Vec<(JobName, When)>,
}

impl ScheduleConfig {
    /// When `job` runs, if it is scheduled.
    pub fn when(&self, job: JobName) -> Option<&When> {
        self.jobs.iter().find(|(j, _)| *j == job).map(|(_, w)| w)
    }
}

/// The runbook's schedule, used when the file has no `[schedule]` table: full backups daily at
/// 02:00, binlogs every 6 hours, pruning daily at 04:00, the drill on the first Sunday of the
/// month at 02:00 (in the maintenance window), no scheduled verify.
pub const RUNBOOK_SCHEDULE: [(JobName, &str); 4] = [
    (JobName::Full, "0 2 * * *"),
    (JobName::Incremental, "0 */6 * * *"),
    (JobName::Drill, "0 2 * * SUN#1"),
    (JobName::Prune, "0 4 * * *"),
];

/// How the daemon runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Where `GET /up` and `GET /metrics` are served.
    pub listen: std::net::SocketAddr,
    /// Jobs running at the same time, at most.
    pub max_concurrent_jobs: usize,
    /// Attempts after a failed run before it counts as failed.
    pub retries: u32,
    /// The wait before the first retry; each next one waits twice as long.
    pub retry_backoff: std::time::Duration,
    /// On SIGTERM, how long a running job may go on before it is cancelled.
    pub shutdown_grace: std::time::Duration,
    /// How long a job waits for the repository lock.
    pub lock_wait: std::time::Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 9187).into(),
            max_concurrent_jobs: 2,
            retries: 2,
            retry_backoff: std::time::Duration::from_secs(60),
            shutdown_grace: std::time::Duration::from_secs(60),
            lock_wait: std::time::Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    full: Option<String>,
    incremental: Option<String>,
    drill: Option<String>,
    prune: Option<String>,
    verify: Option<String>,
    files: Option<String>,
    config: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    listen: Option<String>,
    max_concurrent_jobs: Option<usize>,
    retries: Option<u32>,
    retry_backoff_seconds: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
    lock_wait_seconds: Option<u64>,
}

/// Resolves `[schedule]`: the runbook's schedule when the table is absent, else exactly the jobs
/// it lists, each expression checked now (a bad one names the job and the field). Without a
/// database the runbook's database jobs are left out, and listing one is an error; so is
/// listing `files` or `config` with nothing for it to back up.
pub(super) fn resolve_schedule(
    ld: &Loader<'_>,
    raw: Option<RawSchedule>,
    tz: &jiff::tz::TimeZone,
    sources: Sources,
) -> Result<ScheduleConfig> {
    let has_source = sources.database;
    let listed: Vec<(JobName, String)> = match raw {
        None => RUNBOOK_SCHEDULE
            .iter()
            .filter(|(job, _)| has_source || !job.needs_database())
            .map(|(job, expr)| (*job, expr.to_string()))
            .collect(),
        Some(raw) => [
            (JobName::Full, raw.full),
            (JobName::Incremental, raw.incremental),
            (JobName::Drill, raw.drill),
            (JobName::Prune, raw.prune),
            (JobName::Verify, raw.verify),
            (JobName::Files, raw.files),
            (JobName::Config, raw.config),
        ]
        .into_iter()
        .filter_map(|(job, expr)| expr.map(|e| (job, e)))
        .collect(),
    };
    let mut jobs = Vec::new();
    for (job, expression) in listed {
        let key = format!("schedule.{job}");
        if job.needs_database() && !has_source {
            return Err(ld.fail(
                &key,
                &"this job backs up or restores the database, which needs a [source] section",
            ));
        }
        if job == JobName::Files && !sources.files {
            return Err(ld.fail(&key, &"no [[files]] source to snapshot"));
        }
        if job == JobName::Config && !sources.config {
            return Err(ld.fail(&key, &"no [[config_backup]] table to version"));
        }
        let when = if expression.trim() == "continuous" {
            if job != JobName::Incremental {
                return Err(ld.fail(&key, &"only the incremental job can be \"continuous\""));
            }
            When::Continuous
        } else {
            let schedule = Schedule::parse(job.as_str(), &expression, tz.clone())
                .map_err(|e| ld.fail(&key, &e.problem))?;
            if schedule.ors_days() {
                tracing::warn!(
                    key,
                    expression,
                    "day of month and day of week are both set: cron runs when EITHER matches (for \"the first Sunday\" write SUN#1)"
                );
            }
            When::Cron(Box::new(schedule))
        };
        jobs.push((job, when));
    }
    Ok(ScheduleConfig { jobs })
}

/// What the file backs up, which decides the jobs it can schedule.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sources {
    /// A database (`[source]`, or the default one).
    pub(super) database: bool,
    /// `[[files]]` sources.
    pub(super) files: bool,
    /// `[[config_backup]]` tables.
    pub(super) config: bool,
}

/// Resolves `[daemon]`.
pub(super) fn resolve_daemon(ld: &Loader<'_>, raw: Option<RawDaemon>) -> Result<DaemonConfig> {
    let raw = raw.unwrap_or_default();
    let defaults = DaemonConfig::default();
    let listen = match raw.listen {
        Some(text) => text.parse().map_err(|_| {
            ld.fail(
                "daemon.listen",
                &format!("{text:?} is not an address like \"127.0.0.1:9187\""),
            )
        })?,
        None => defaults.listen,
    };
    let seconds = |value: Option<u64>, default: std::time::Duration| {
        value.map_or(default, std::time::Duration::from_secs)
    };
    let max_concurrent_jobs = match raw.max_concurrent_jobs {
        Some(0) => return Err(ld.fail("daemon.max_concurrent_jobs", &"must be at least 1")),
        Some(n) => n,
        None => defaults.max_concurrent_jobs,
    };
    Ok(DaemonConfig {
        listen,
        max_concurrent_jobs,
        retries: raw.retries.unwrap_or(defaults.retries),
        retry_backoff: seconds(raw.retry_backoff_seconds, defaults.retry_backoff),
        shutdown_grace: seconds(raw.shutdown_grace_seconds, defaults.shutdown_grace),
        lock_wait: seconds(raw.lock_wait_seconds, defaults.lock_wait),
    })
}

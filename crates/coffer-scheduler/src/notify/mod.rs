//! The daemon's alerts (`[[notify]]`): what happened, told once per change, to webhooks, Slack,
//! email and healthchecks.io-style ping URLs.
//!
//! - [`Event`]: a job failed, recovered, went stale or is on time again, a drill's result, a file
//!   system filling up or freed.
//! - [`Notifier`]: remembers per job (or path) and condition what it last told, so a job failing
//!   three runs in a row sends one failure and its next success one recovery. Drill results are
//!   sent at every run; healthchecks targets are pinged at every run (`/start`, the URL itself,
//!   `/fail`), as that convention wants.
//! - [`watch`]: every minute, staleness (a job whose last success is older than 1.5 × its
//!   interval) and disk use (90 % or more of the state directory's or a folder repository's file
//!   system) turned into events.
//!
//! Sending never holds up a job or the loop: each target has its own queue and task, every
//! delivery is bounded by a timeout (10 s), and a failed delivery is logged and counted, never
//! an error of the job. Payloads carry the event, the job, the host, the time and coffer's own
//! message (coffer's errors never contain a secret), never a target's URL or a configured value
//! other than a watched path.

mod deliver;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use coffer_core::clock::Clock;
use coffer_core::config::{JobName, NotifyConfig, NotifyEvent};
use coffer_core::{Error, Result};
use jiff::Timestamp;

use crate::daemon::state::{JobState, Outcome};

pub use watch::{DISK_FULL_PERCENT, WATCH_INTERVAL, used_percent, watch};

/// How long one delivery may take before it is given up (and logged).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest message a payload carries (10 KiB); longer ones are cut at a character boundary.
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024;

/// Something worth telling the operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A job failed after every retry.
    JobFailed {
        /// The job.
        job: JobName,
        /// Its last error.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A job that had failed succeeded.
    JobRecovered {
        /// The job.
        job: JobName,
    },
    /// A job's last success is older than 1.5 × its interval.
    Stale {
        /// The job.
        job: JobName,
        /// When it last succeeded, if ever.
        last_success: Option<Timestamp>,
    },
    /// A stale job succeeded again.
    Fresh {
        /// The job.
        job: JobName,
    },
    /// A recovery drill ended.
    DrillResult {
        /// Whether every item passed.
        passed: bool,
        /// The drill's summary (`drill ID passed`) or its error.
        summary: String,
    },
    /// A watched file system is [`DISK_FULL_PERCENT`] used or more.
    DiskFull {
        /// The watched folder.
        path: PathBuf,
        /// How much of its file system is used, as `df` counts it.
        percent_used: f64,
    },
    /// A watched file system that was full is below [`DISK_FULL_PERCENT`] again.
    DiskRecovered {
        /// The watched folder.
        path: PathBuf,
        /// How much of its file system is used now.
        percent_used: f64,
    },
}

impl Event {
    /// The subscription (`events` key) this event belongs to.
    pub fn kind(&self) -> NotifyEvent {
        match self {
            Event::JobFailed { .. } => NotifyEvent::Failure,
            Event::JobRecovered { .. } => NotifyEvent::Recovery,
            Event::Stale { .. } | Event::Fresh { .. } => NotifyEvent::Stale,
            Event::DrillResult { .. } => NotifyEvent::Drill,
            Event::DiskFull { .. } | Event::DiskRecovered { .. } => NotifyEvent::Disk,
        }
    }

    /// The `event` field of the JSON payload.
    pub fn name(&self) -> &'static str {
        match self {
            Event::JobFailed { .. } => "failure",
            Event::JobRecovered { .. } => "recovery",
            Event::Stale { .. } => "stale",
            Event::Fresh { .. } => "fresh",
            Event::DrillResult { .. } => "drill",
            Event::DiskFull { .. } => "disk_full",
            Event::DiskRecovered { .. } => "disk_recovered",
        }
    }

    /// The job it is about, if any.
    pub fn job(&self) -> Option<JobName> {
        match self {
            Event::JobFailed { job, .. }
            | Event::JobRecovered { job }
            | Event::Stale { job, .. }
            | Event::Fresh { job } => Some(*job),
            Event::DrillResult { .. } => Some(JobName::Drill),
            Event::DiskFull { .. } | Event::DiskRecovered { .. } => None,
        }
    }

    /// One line saying what happened on `host`: the email subject (after `[coffer] `) and the
    /// start of every text.
    pub fn headline(&self, host: &str) -> String {
        match self {
            Event::JobFailed { job, .. } => format!("{job} failed on {host}"),
            Event::JobRecovered { job } => format!("{job} recovered on {host}"),
            Event::Stale { job, .. } => format!("{job} is overdue on {host}"),
            Event::Fresh { job } => format!("{job} is on time again on {host}"),
            Event::DrillResult { passed: true, .. } => format!("drill passed on {host}"),
            Event::DrillResult { passed: false, .. } => format!("drill failed on {host}"),
            Event::DiskFull { percent_used, .. } => {
                format!("disk {percent_used:.0}% used on {host}")
            }
            Event::DiskRecovered { .. } => {
                format!("disk below {DISK_FULL_PERCENT:.0}% used on {host}")
            }
        }
    }

    /// The details after the headline, one per line.
    pub fn details(&self) -> String {
        match self {
            Event::JobFailed {
                message, attempts, ..
            } => format!(
                "after {attempts} attempt{}: {}",
                if *attempts == 1 { "" } else { "s" },
                truncate(message)
            ),
            Event::JobRecovered { .. } => "its last run succeeded".to_string(),
            Event::Stale {
                last_success: Some(t),
                ..
            } => format!("last success: {t}"),
            Event::Stale { .. } => "it never succeeded".to_string(),
            Event::Fresh { .. } => "it succeeded within its interval".to_string(),
            Event::DrillResult { summary, .. } => truncate(summary).to_string(),
            Event::DiskFull { path, percent_used }
            | Event::DiskRecovered { path, percent_used } => {
                format!("{}: {percent_used:.1}% used", path.display())
            }
        }
    }
}

/// `text` cut to [`MAX_MESSAGE_BYTES`] at a character boundary.
pub(crate) fn truncate(text: &str) -> &str {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// This host's name, for payloads: the kernel's host name, else `localhost`.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Sends events to the configured targets, each once per change. Cheap to clone; clones share
/// the targets and the memory of what was sent.
#[derive(Clone)]
pub struct Notifier(Arc<Inner>);

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("host", &self.0.host)
            .field("targets", &self.targets().len())
            .finish()
    }
}

struct Inner {
    host: String,
    clock: RwLock<Clock>,
    targets: RwLock<Arc<Vec<deliver::Target>>>,
    memory: Mutex<Memory>,
    shared: Arc<deliver::Shared>,
}

/// The last condition told for each job and path.
#[derive(Debug, Default)]
struct Memory {
    failing: HashMap<JobName, bool>,
    stale: HashMap<JobName, bool>,
    disk_full: HashMap<PathBuf, bool>,
}

/// Records `now` for `key` and says whether it differs from what was told before (`before`
/// when nothing was).
fn changed<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, bool>,
    key: K,
    now: bool,
    before: bool,
) -> bool {
    let was = map.insert(key, now).unwrap_or(before);
    was != now
}

impl Notifier {
    /// A notifier for `targets`, naming `host` in its payloads (see [`this_host`]). Each
    /// target's URL and addresses are checked; an error names the entry (`notify[1]`). Must be
    /// called inside a Tokio runtime: each target gets a task that delivers its queue in order.
    pub fn new(targets: &[NotifyConfig], host: impl Into<String>) -> Result<Notifier> {
        let shared = Arc::new(deliver::Shared::new()?);
        let built = deliver::build(targets, &shared)?;
        Ok(Notifier(Arc::new(Inner {
            host: host.into(),
            clock: RwLock::new(Clock::system()),
            targets: RwLock::new(Arc::new(built)),
            memory: Mutex::new(Memory::default()),
            shared,
        })))
    }

    /// Uses `clock` for the times in payloads (the daemon's clock).
    pub fn with_clock(self, clock: Clock) -> Self {
        *self.0.clock.write().unwrap_or_else(|e| e.into_inner()) = clock;
        self
    }

    /// Bounds each delivery by `timeout` instead of [`DELIVERY_TIMEOUT`].
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.0.shared.set_timeout(timeout);
        self
    }

    /// Replaces the targets (the configuration was reloaded), keeping the memory of what was
    /// sent, so a reload does not repeat an alert. On an error the old targets stay. Deliveries
    /// already queued for the old targets still go out.
    pub fn reconfigure(&self, targets: &[NotifyConfig]) -> Result<()> {
        let built = deliver::build(targets, &self.0.shared)?;
        *self.0.targets.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(built);
        Ok(())
    }

    /// Deliveries that failed (refused, timed out, an HTTP error status, a full queue) since
    /// the start; each was logged.
    pub fn failed_deliveries(&self) -> u64 {
        self.0.shared.failed.load(Ordering::Relaxed)
    }

    /// Deliveries that the target accepted since the start.
    pub fn delivered(&self) -> u64 {
        self.0.shared.delivered.load(Ordering::Relaxed)
    }

    fn targets(&self) -> Arc<Vec<deliver::Target>> {
        self.0
            .targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn now(&self) -> Timestamp {
        self.0.clock.read().unwrap_or_else(|e| e.into_inner()).now()
    }

    /// Sends `event` to every target subscribed to its kind, now, without looking at what was
    /// sent before. The decisions of [`Notifier::job_finished`], [`Notifier::staleness`] and
    /// [`Notifier::disk`] end here.
    pub fn send(&self, event: &Event) {
        let time = self.now();
        for target in self.targets().iter() {
            if !target.is_healthchecks() && target.config.wants(event.kind()) {
                target.enqueue(deliver::Message::event(target, event, &self.0.host, time));
            }
        }
    }

    /// A run of `job` got its slot and starts: healthchecks targets are pinged at `/start`.
    pub fn job_started(&self, job: JobName) {
        self.ping(job, deliver::Ping::Start);
    }

    /// A run of `job` ended as `state` says; `previous` is the state before it (as recorded,
    /// so a failure told before a restart is not told again). Decides the events: one failure
    /// when a job starts failing, one recovery when it succeeds again, a drill's result at
    /// every drill run (a drill's failure is told as its result, not as a failure), and the
    /// healthchecks ping of the run (none for a cancelled run: the check's grace decides).
    pub fn job_finished(&self, job: JobName, state: &JobState, previous: Option<&JobState>) {
        match state.outcome {
            Outcome::Succeeded => self.ping(job, deliver::Ping::Success(state.message.clone())),
            Outcome::Failed => self.ping(job, deliver::Ping::Fail(state.message.clone())),
            Outcome::Cancelled => return,
        }
        let failed = state.outcome == Outcome::Failed;
        if job == JobName::Drill {
            self.send(&Event::DrillResult {
                passed: !failed,
                summary: state.message.clone(),
            });
            return;
        }
        let was_failing = previous.is_some_and(|p| p.outcome == Outcome::Failed);
        let change = {
            let mut memory = self.0.memory.lock().unwrap_or_else(|e| e.into_inner());
            changed(&mut memory.failing, job, failed, was_failing)
        };
        if !change {
            return;
        }
        self.send(&if failed {
            Event::JobFailed {
                job,
                message: state.message.clone(),
                attempts: state.attempts,
            }
        } else {
            Event::JobRecovered { job }
        });
    }

    /// Whether `job` is stale now (its last success older than 1.5 × its interval): a
    /// [`Event::Stale`] when it becomes so, a [`Event::Fresh`] when it no longer is.
    pub fn staleness(&self, job: JobName, stale: bool, last_success: Option<Timestamp>) {
        let change = {
            let mut memory = self.0.memory.lock().unwrap_or_else(|e| e.into_inner());
            changed(&mut memory.stale, job, stale, false)
        };
        if change {
            self.send(&if stale {
                Event::Stale { job, last_success }
            } else {
                Event::Fresh { job }
            });
        }
    }

    /// How full the file system holding `path` is: a [`Event::DiskFull`] when it reaches
    /// [`DISK_FULL_PERCENT`], a [`Event::DiskRecovered`] when it is below again.
    pub fn disk(&self, path: &Path, percent_used: f64) {
        let full = percent_used >= DISK_FULL_PERCENT;
        let change = {
            let mut memory = self.0.memory.lock().unwrap_or_else(|e| e.into_inner());
            changed(&mut memory.disk_full, path.to_path_buf(), full, false)
        };
        if change {
            let path = path.to_path_buf();
            self.send(&if full {
                Event::DiskFull { path, percent_used }
            } else {
                Event::DiskRecovered { path, percent_used }
            });
        }
    }

    fn ping(&self, job: JobName, ping: deliver::Ping) {
        for target in self.targets().iter() {
            if target.is_healthchecks() && target.config.pings_for(job) {
                target.enqueue(deliver::Message::Ping(ping.clone()));
            }
        }
    }

    /// Completes when everything queued so far has been delivered or given up (each delivery
    /// is bounded by the timeout); for a clean shutdown and for tests.
    pub async fn flush(&self) {
        let waits: Vec<_> = self
            .targets()
            .iter()
            .filter_map(|target| {
                let (done, wait) = tokio::sync::oneshot::channel();
                target.queue.try_send(deliver::Message::Flush(done)).ok()?;
                Some(wait)
            })
            .collect();
        for wait in waits {
            let _ = wait.await;
        }
    }
}

/// An error about entry `index` of `[[notify]]`, found when building its target.
fn entry_error(index: usize, what: impl std::fmt::Display) -> Error {
    Error::config(format!("notify[{index}]: {what}"))
}

#[cfg(test)]
mod tests;

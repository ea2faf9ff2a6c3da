//! The loop on a manual clock, with a folder repository for its state and a runner that records
//! what it was asked to do.

use std::sync::Mutex;
use std::time::Duration;

use coffer_core::clock::Clock;
use coffer_core::schedule::Schedule;
use coffer_core::storage::LocalStorage;

use super::*;

/// Records each run's (job, clock time); a job can be made to fail a number of times, or to
/// block until released.
#[derive(Default)]
struct Recorder {
    runs: Mutex<Vec<(JobName, Timestamp)>>,
    fail_first: Mutex<BTreeMap<JobName, u32>>,
    blocked: Mutex<Option<Arc<tokio::sync::Notify>>>,
}

#[async_trait::async_trait]
impl Runner for Recorder {
    async fn run(&self, job: JobName, ctx: &JobContext) -> Result<String> {
        self.runs.lock().unwrap().push((job, ctx.clock.now()));
        let gate = self.blocked.lock().unwrap().clone();
        if let Some(gate) = gate {
            tokio::select! {
                () = gate.notified() => {}
                () = ctx.cancel.cancelled() => return Err(ctx.cancel.check().unwrap_err()),
            }
        }
        let mut fails = self.fail_first.lock().unwrap();
        if let Some(n) = fails.get_mut(&job)
            && *n > 0
        {
            *n -= 1;
            return Err(coffer_core::Error::storage("the repository is away"));
        }
        Ok(format!("{job} done"))
    }
}

impl Recorder {
    fn runs_of(&self, job: JobName) -> Vec<Timestamp> {
        self.runs
            .lock()
            .unwrap()
            .iter()
            .filter(|(j, _)| *j == job)
            .map(|(_, t)| *t)
            .collect()
    }
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

struct Harness {
    _dir: tempfile::TempDir,
    repository: Arc<Repository>,
    recorder: Arc<Recorder>,
    root: JobContext,
    stop: Arc<tokio::sync::Notify>,
}

impl Harness {
    fn new(now: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let repository = Arc::new(Repository::from_storage(Box::new(LocalStorage::new(
            dir.path().to_path_buf(),
        ))));
        Harness {
            _dir: dir,
            repository,
            recorder: Arc::new(Recorder::default()),
            root: JobContext {
                cancel: Default::default(),
                clock: Clock::manual(at(now)),
            },
            stop: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn daemon(&self, jobs: &[(JobName, &str)], settings: DaemonConfig) -> Daemon {
        let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let jobs = jobs
            .iter()
            .map(|(job, expr)| {
                (
                    *job,
                    When::Cron(Box::new(
                        Schedule::parse(job.as_str(), expr, tz.clone()).unwrap(),
                    )),
                )
            })
            .collect();
        Daemon::new(
            ScheduleConfig { jobs },
            settings,
            self.repository.clone(),
            self.recorder.clone(),
        )
    }

    /// Starts the daemon in the background.
    fn start(&self, daemon: Daemon) -> tokio::task::JoinHandle<Result<()>> {
        let (root, stop) = (self.root.clone(), self.stop.clone());
        tokio::spawn(async move { daemon.run(&root, stop.notified()).await })
    }

    /// Moves the clock and lets the daemon's tasks run.
    async fn advance_to(&self, to: &str) {
        self.root.clock.set(at(to));
        settle().await;
    }
}

/// Gives spawned tasks time to react (real time; the clock does not move).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

fn quick() -> DaemonConfig {
    DaemonConfig {
        retry_backoff: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(60),
        ..DaemonConfig::default()
    }
}

#[tokio::test]
async fn a_daily_job_runs_at_its_time_once_a_day() {
    let h = Harness::new("2026-12-01T00:30:00Z");
    let task = h.start(h.daemon(&[(JobName::Full, "0 2 * * *")], quick()));
    settle().await;
    assert!(h.recorder.runs_of(JobName::Full).is_empty(), "not due yet");
    // 02:00 in Berlin is 01:00 UTC.
    h.advance_to("2026-12-01T01:00:00Z").await;
    h.advance_to("2026-12-01T13:00:00Z").await;
    h.advance_to("2026-12-02T01:00:00Z").await;
    assert_eq!(
        h.recorder.runs_of(JobName::Full),
        [at("2026-12-01T01:00:00Z"), at("2026-12-02T01:00:00Z")]
    );
    let state = state::load(&h.repository, JobName::Full)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.outcome, Outcome::Succeeded);
    assert_eq!(state.message, "full done");
    h.stop.notify_one();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_run_still_going_when_the_next_is_due_makes_that_one_skipped_and_counted() {
    let h = Harness::new("2026-12-01T00:00:00Z");
    let gate = Arc::new(tokio::sync::Notify::new());
    *h.recorder.blocked.lock().unwrap() = Some(gate.clone());
    let task = h.start(h.daemon(&[(JobName::Incremental, "*/10 * * * * *")], quick()));
    settle().await;
    h.advance_to("2026-12-01T00:00:10Z").await;
    h.advance_to("2026-12-01T00:00:20Z").await;
    h.advance_to("2026-12-01T00:00:30Z").await;
    assert_eq!(h.recorder.runs_of(JobName::Incremental).len(), 1);
    *h.recorder.blocked.lock().unwrap() = None;
    gate.notify_one();
    settle().await;
    h.advance_to("2026-12-01T00:00:40Z").await;
    assert_eq!(h.recorder.runs_of(JobName::Incremental).len(), 2);
    let state = state::load(&h.repository, JobName::Incremental)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.outcome, Outcome::Succeeded);
    assert_eq!(state.skipped_total, 2, "the due times at :20 and :30");
    h.stop.notify_one();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn after_downtime_a_missed_job_runs_once_on_start() {
    let h = Harness::new("2026-12-05T09:00:00Z");
    // The last full ran four days ago: three due times were missed.
    let last = JobState {
        job: "full".into(),
        last_started: at("2026-12-01T01:00:00Z"),
        last_finished: at("2026-12-01T01:05:00Z"),
        outcome: Outcome::Succeeded,
        attempts: 1,
        message: "ok".into(),
        last_success: Some(at("2026-12-01T01:05:00Z")),
        failures_total: 0,
        skipped_total: 0,
    };
    state::save(&h.repository, JobName::Full, &last)
        .await
        .unwrap();
    let task = h.start(h.daemon(&[(JobName::Full, "0 2 * * *")], quick()));
    settle().await;
    assert_eq!(
        h.recorder.runs_of(JobName::Full),
        [at("2026-12-05T09:00:00Z")]
    );
    // The next is the next scheduled time, not another catch-up.
    h.advance_to("2026-12-05T20:00:00Z").await;
    assert_eq!(h.recorder.runs_of(JobName::Full).len(), 1);
    h.advance_to("2026-12-06T01:00:00Z").await;
    assert_eq!(h.recorder.runs_of(JobName::Full).len(), 2);
    h.stop.notify_one();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_failed_run_is_retried_with_backoff_before_it_counts_as_failed() {
    let h = Harness::new("2026-12-01T00:59:00Z");
    h.recorder
        .fail_first
        .lock()
        .unwrap()
        .insert(JobName::Prune, 2);
    h.recorder
        .fail_first
        .lock()
        .unwrap()
        .insert(JobName::Verify, 5);
    let task = h.start(h.daemon(
        &[
            (JobName::Prune, "0 2 * * *"),
            (JobName::Verify, "0 2 * * *"),
        ],
        quick(),
    ));
    settle().await;
    h.advance_to("2026-12-01T01:00:00Z").await; // attempt 1 of each
    h.advance_to("2026-12-01T01:01:00Z").await; // + 60 s: attempt 2
    h.advance_to("2026-12-01T01:03:00Z").await; // + 120 s: attempt 3
    h.advance_to("2026-12-01T01:10:00Z").await;
    assert_eq!(h.recorder.runs_of(JobName::Prune).len(), 3);
    assert_eq!(h.recorder.runs_of(JobName::Verify).len(), 3, "retries = 2");
    let prune = state::load(&h.repository, JobName::Prune)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((prune.outcome, prune.attempts), (Outcome::Succeeded, 3));
    let verify = state::load(&h.repository, JobName::Verify)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (verify.outcome, verify.failures_total),
        (Outcome::Failed, 1)
    );
    assert!(verify.message.contains("the repository is away"));
    h.stop.notify_one();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn jobs_due_together_wait_for_a_free_slot() {
    let h = Harness::new("2026-12-01T00:59:00Z");
    let gate = Arc::new(tokio::sync::Notify::new());
    *h.recorder.blocked.lock().unwrap() = Some(gate.clone());
    let settings = DaemonConfig {
        max_concurrent_jobs: 1,
        ..quick()
    };
    let task = h.start(h.daemon(
        &[(JobName::Full, "0 2 * * *"), (JobName::Prune, "0 2 * * *")],
        settings,
    ));
    settle().await;
    h.advance_to("2026-12-01T01:00:00Z").await;
    assert_eq!(h.recorder.runs.lock().unwrap().len(), 1, "one slot");
    *h.recorder.blocked.lock().unwrap() = None;
    gate.notify_one();
    settle().await;
    assert_eq!(
        h.recorder.runs.lock().unwrap().len(),
        2,
        "the second took the slot"
    );
    h.stop.notify_one();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn on_shutdown_a_running_job_gets_the_grace_then_is_cancelled() {
    let h = Harness::new("2026-12-01T00:59:00Z");
    let gate = Arc::new(tokio::sync::Notify::new());
    *h.recorder.blocked.lock().unwrap() = Some(gate);
    let task = h.start(h.daemon(&[(JobName::Full, "0 2 * * *")], quick()));
    settle().await;
    h.advance_to("2026-12-01T01:00:00Z").await;
    h.stop.notify_one();
    settle().await;
    assert!(!task.is_finished(), "the running job has its grace");
    h.advance_to("2026-12-01T01:01:01Z").await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stopped after the grace")
        .unwrap()
        .unwrap();
    let state = state::load(&h.repository, JobName::Full)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.outcome, Outcome::Cancelled);
    assert!(
        state.message.contains("shutdown_grace of 60 s"),
        "{}",
        state.message
    );
}

#[tokio::test]
async fn a_reload_moves_a_changed_job_adds_a_new_one_and_drops_a_removed_one() {
    let h = Harness::new("2026-12-01T00:30:00Z");
    let daemon = Arc::new(h.daemon(
        &[(JobName::Full, "0 2 * * *"), (JobName::Verify, "0 5 * * *")],
        quick(),
    ));
    let task = {
        let (daemon, root, stop) = (daemon.clone(), h.root.clone(), h.stop.clone());
        tokio::spawn(async move { daemon.run(&root, stop.notified()).await })
    };
    settle().await;
    // The new file: full moves to 03:00, prune is added at 04:00, verify is left out.
    let reloaded = h.daemon(
        &[(JobName::Full, "0 3 * * *"), (JobName::Prune, "0 4 * * *")],
        quick(),
    );
    let plan = reloaded.plan();
    daemon.reload(plan.schedule.clone(), plan.settings.clone());
    settle().await;
    assert!(
        !daemon
            .observed()
            .snapshot()
            .next
            .contains_key(&JobName::Verify),
        "verify is no longer due"
    );
    h.advance_to("2026-12-01T01:00:00Z").await; // 02:00 in Berlin: the old time
    assert!(h.recorder.runs_of(JobName::Full).is_empty());
    h.advance_to("2026-12-01T02:00:00Z").await; // 03:00
    h.advance_to("2026-12-01T03:00:00Z").await; // 04:00
    h.advance_to("2026-12-01T04:00:00Z").await; // 05:00: verify's old time
    assert_eq!(
        h.recorder.runs_of(JobName::Full),
        [at("2026-12-01T02:00:00Z")]
    );
    assert_eq!(
        h.recorder.runs_of(JobName::Prune),
        [at("2026-12-01T03:00:00Z")]
    );
    assert!(h.recorder.runs_of(JobName::Verify).is_empty());
    h.stop.notify_one();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_reload_with_more_slots_lets_waiting_jobs_start() {
    let h = Harness::new("2026-12-01T00:59:00Z");
    let gate = Arc::new(tokio::sync::Notify::new());
    *h.recorder.blocked.lock().unwrap() = Some(gate.clone());
    let jobs = [(JobName::Full, "0 2 * * *"), (JobName::Prune, "0 2 * * *")];
    let one = DaemonConfig {
        max_concurrent_jobs: 1,
        ..quick()
    };
    let daemon = Arc::new(h.daemon(&jobs, one));
    let task = {
        let (daemon, root, stop) = (daemon.clone(), h.root.clone(), h.stop.clone());
        tokio::spawn(async move { daemon.run(&root, stop.notified()).await })
    };
    settle().await;
    h.advance_to("2026-12-01T01:00:00Z").await;
    assert_eq!(h.recorder.runs.lock().unwrap().len(), 1, "one slot");
    let plan = h.daemon(&jobs, quick()).plan();
    daemon.reload(plan.schedule.clone(), plan.settings.clone());
    settle().await;
    assert_eq!(h.recorder.runs.lock().unwrap().len(), 2, "two slots now");
    *h.recorder.blocked.lock().unwrap() = None;
    gate.notify_waiters();
    h.stop.notify_one();
    task.await.unwrap().unwrap();
}

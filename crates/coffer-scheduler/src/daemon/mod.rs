//! The daemon's loop: each scheduled job started when it is due, never overlapping itself, at
//! most `max_concurrent_jobs` at a time, retried with backoff, its last run kept in the
//! repository; a job whose time passed while the daemon was down runs once on start; on
//! shutdown no new work is taken, running jobs get `shutdown_grace`, then are cancelled cleanly.
//!
//! What a job *does* is a [`Runner`]'s business: [`jobs::ConfiguredRunner`] runs the real
//! backups, prunes, verifies and drills; the loop's tests use a recording one. Time comes from
//! the [`JobContext`]'s clock, so the loop is tested on a manual clock without sleeping.
//! [`run`] ([`entry`]) is the whole daemon: this loop, its real jobs, `/up` and `/metrics`, and
//! reloads ([`Daemon::reload`]).

pub mod entry;
pub mod http;
pub mod jobs;
pub mod state;
pub mod view;

pub use entry::run;

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_core::cancel::Reason;
use coffer_core::config::{DaemonConfig, JobName, ScheduleConfig, When};
use coffer_core::job::JobContext;
use coffer_core::repository::Repository;
use coffer_core::{ErrorKind, Result};
use jiff::{SignedDuration, Timestamp};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

use state::{JobState, Outcome};

/// Runs one job once. `Ok` carries a one-line summary for the state and the log.
#[async_trait::async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Runs `job` under `ctx` (its own cancellation, the daemon's clock).
    async fn run(&self, job: JobName, ctx: &JobContext) -> Result<String>;

    /// Runs the continuous incremental job until `ctx` is cancelled (the supervised stream).
    async fn run_continuous(&self, ctx: &JobContext) -> Result<String> {
        let _ = ctx;
        Err(coffer_core::Error::config(
            "this runner has no continuous incremental job",
        ))
    }
}

/// What the daemon runs and how; replaced as a whole when the configuration is reloaded.
#[derive(Debug, Clone)]
pub struct Plan {
    /// When each job is due.
    pub schedule: ScheduleConfig,
    /// Concurrency, retries, grace.
    pub settings: DaemonConfig,
}

/// The daemon: its plan and where it keeps state.
pub struct Daemon {
    plan: std::sync::RwLock<Arc<Plan>>,
    reloaded: tokio::sync::Notify,
    repository: Arc<Repository>,
    runner: Arc<dyn Runner>,
    observed: Observed,
    notifier: Option<crate::notify::Notifier>,
}

/// What the daemon's loop shows the outside (`/up`, `/metrics`): updated as jobs start and end.
/// The second part counts the loop's updates, so [`view::keep_status_fresh`] can wait for one.
#[derive(Debug, Clone, Default)]
pub struct Observed(
    Arc<std::sync::RwLock<Snapshot>>,
    tokio::sync::watch::Sender<u64>,
);

/// One look at the daemon.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Whether the loop is taking work (false before start and after shutdown began).
    pub scheduling: bool,
    /// The last run of each job.
    pub states: BTreeMap<JobName, JobState>,
    /// When each job is next due.
    pub next: BTreeMap<JobName, Timestamp>,
    /// The jobs running now.
    pub running: std::collections::BTreeSet<JobName>,
    /// The repository's status as last refreshed ([`view::refresh_status`]); `None` until the
    /// first refresh succeeds.
    pub status: Option<Arc<crate::status::Status>>,
    /// When it was refreshed (the daemon clock's now).
    pub status_refreshed_at: Option<Timestamp>,
}

impl Observed {
    /// A copy of what is known now.
    pub fn snapshot(&self) -> Snapshot {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        change(&mut self.0.write().unwrap_or_else(|e| e.into_inner()));
        self.1.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The outcome of one job's run, as the loop learns it.
struct Finished {
    job: JobName,
    state: JobState,
}

impl Daemon {
    /// A daemon running `runner`'s jobs on `schedule`, keeping state in `repository`.
    pub fn new(
        schedule: ScheduleConfig,
        settings: DaemonConfig,
        repository: Arc<Repository>,
        runner: Arc<dyn Runner>,
    ) -> Self {
        Self {
            plan: std::sync::RwLock::new(Arc::new(Plan { schedule, settings })),
            reloaded: tokio::sync::Notify::new(),
            repository,
            runner,
            observed: Observed::default(),
            notifier: None,
        }
    }

    /// Tells `notifier` when each run starts and ends (alerts and healthchecks pings).
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The plan in force now.
    pub fn plan(&self) -> Arc<Plan> {
        self.plan.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the plan (`SIGHUP`): jobs whose schedule changed are due at their new next
    /// time, jobs left out are no longer started (a running one finishes), new jobs are
    /// scheduled; running jobs keep the settings they started with.
    pub fn reload(&self, schedule: ScheduleConfig, settings: DaemonConfig) {
        *self.plan.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Plan { schedule, settings });
        self.reloaded.notify_one();
    }

    /// The view of this daemon that `/up` and `/metrics` serve.
    pub fn observed(&self) -> Observed {
        self.observed.clone()
    }

    /// Runs until `shutdown` completes, then stops as the module describes. `root` is the
    /// daemon's own context: each job runs under a child of it.
    pub async fn run(&self, root: &JobContext, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let clock = &root.clock;
        let mut plan = self.plan();
        let permits = Arc::new(Semaphore::new(plan.settings.max_concurrent_jobs));
        let mut states: BTreeMap<JobName, JobState> = BTreeMap::new();
        let mut due: BTreeMap<JobName, Timestamp> = BTreeMap::new();
        let now = clock.now();
        for (job, when) in &plan.schedule.jobs {
            let When::Cron(schedule) = when else { continue };
            let last = state::load(&self.repository, *job).await?;
            // Missed while down: due at once, one run whatever the number of missed times.
            let next = match &last {
                Some(last) => schedule.next_after(last.last_started),
                None => schedule.next_after(now),
            };
            if let Some(last) = last {
                states.insert(*job, last);
            }
            if let Some(next) = next {
                let next = next.max(now);
                if next == now {
                    info!(job = %job, "missed while the daemon was down: running it now");
                }
                due.insert(*job, next);
            }
        }
        info!(
            jobs = ?plan.schedule.jobs.iter().map(|(j, _)| j.as_str()).collect::<Vec<_>>(),
            "daemon started"
        );

        let mut running: BTreeMap<JobName, JobContext> = BTreeMap::new();
        let mut skipped: BTreeMap<JobName, u64> = BTreeMap::new();
        let show = |states: &BTreeMap<JobName, JobState>,
                    due: &BTreeMap<JobName, Timestamp>,
                    running: &BTreeMap<JobName, JobContext>,
                    scheduling: bool| {
            self.observed.update(|s| {
                s.scheduling = scheduling;
                s.states = states.clone();
                s.next = due.clone();
                s.running = running.keys().copied().collect();
            });
        };
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        if matches!(
            plan.schedule.when(JobName::Incremental),
            Some(When::Continuous)
        ) {
            let ctx = root.child();
            running.insert(JobName::Incremental, ctx.clone());
            tasks.spawn(self.continuous(ctx));
        }

        loop {
            show(&states, &due, &running, true);
            let soonest = due.values().min().copied();
            tokio::select! {
                () = async {
                    match soonest {
                        Some(at) => clock.sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let now = clock.now();
                    let ready: Vec<JobName> =
                        due.iter().filter(|(_, at)| **at <= now).map(|(j, _)| *j).collect();
                    for job in ready {
                        let next = match plan.schedule.when(job) {
                            Some(When::Cron(s)) => s.next_after(now),
                            _ => None,
                        };
                        match next {
                            Some(next) => { due.insert(job, next); }
                            None => { due.remove(&job); }
                        }
                        if running.contains_key(&job) {
                            warn!(job = %job, "still running from its last due time: this run is skipped");
                            // Counted into the state the running one records when it ends.
                            *skipped.entry(job).or_default() += 1;
                            continue;
                        }
                        let ctx = root.child();
                        running.insert(job, ctx.clone());
                        let previous = states.get(&job).cloned();
                        tasks.spawn(self.attempts(job, ctx, permits.clone(), previous));
                    }
                }
                Some(done) = tasks.join_next() => {
                    if let Ok(Finished { job, mut state }) = done {
                        running.remove(&job);
                        if let Some(n) = skipped.remove(&job) {
                            state.skipped_total += n;
                            if let Err(e) = state::save(&self.repository, job, &state).await {
                                warn!(job = %job, error = %e, "recording the job's state");
                            }
                        }
                        states.insert(job, state);
                    }
                }
                () = self.reloaded.notified() => {
                    let new = self.plan();
                    self.apply_reload(&plan, &new, root, &mut due, &mut running, &mut tasks, &permits);
                    plan = new;
                }
                () = &mut shutdown => break,
            }
        }

        // No new work; running jobs get the grace, then are cancelled and awaited.
        show(&states, &due, &running, false);
        info!(
            running = running.len(),
            grace_seconds = plan.settings.shutdown_grace.as_secs(),
            "daemon stopping"
        );
        let grace = SignedDuration::try_from(plan.settings.shutdown_grace)
            .unwrap_or(SignedDuration::from_secs(60));
        let deadline = clock.now().saturating_add(grace).unwrap_or(Timestamp::MAX);
        // The continuous stream stops at once: its shutdown ships what it holds.
        if let Some(stream) = running.get(&JobName::Incremental)
            && matches!(
                plan.schedule.when(JobName::Incremental),
                Some(When::Continuous)
            )
        {
            stream
                .cancel
                .cancel(Reason::Stopped("daemon shutting down".into()));
        }
        loop {
            tokio::select! {
                next = tasks.join_next() => match next {
                    None => break,
                    Some(Ok(finished)) => { running.remove(&finished.job); }
                    Some(Err(e)) => error!(error = %e, "a job task failed"),
                },
                () = clock.sleep_until(deadline) => {
                    for (job, ctx) in &running {
                        warn!(job = %job, "still running after the shutdown grace: cancelling it");
                        ctx.cancel.cancel(Reason::Stopped(format!(
                            "daemon shutting down (shutdown_grace of {} s passed)",
                            plan.settings.shutdown_grace.as_secs()
                        )));
                    }
                    while let Some(next) = tasks.join_next().await {
                        if let Ok(finished) = next {
                            running.remove(&finished.job);
                        }
                    }
                    break;
                }
            }
        }
        info!("daemon stopped");
        Ok(())
    }

    /// Moves the loop from plan `old` to plan `new` at the clock's now.
    #[allow(clippy::too_many_arguments)]
    fn apply_reload(
        &self,
        old: &Plan,
        new: &Plan,
        root: &JobContext,
        due: &mut BTreeMap<JobName, Timestamp>,
        running: &mut BTreeMap<JobName, JobContext>,
        tasks: &mut JoinSet<Finished>,
        permits: &Arc<Semaphore>,
    ) {
        let now = root.clock.now();
        let expression = |plan: &Plan, job: JobName| match plan.schedule.when(job) {
            Some(When::Cron(s)) => Some(s.expression().to_string()),
            Some(When::Continuous) => Some("continuous".to_string()),
            None => None,
        };
        for job in JobName::ALL {
            let (was, is) = (expression(old, job), expression(new, job));
            if was == is {
                continue;
            }
            info!(job = %job, was = ?was, now = ?is, "schedule changed");
            let continuous =
                |plan: &Plan| matches!(plan.schedule.when(job), Some(When::Continuous));
            if continuous(old)
                && let Some(stream) = running.get(&job)
            {
                stream.cancel.cancel(Reason::Stopped(
                    "the configuration no longer runs it".into(),
                ));
            }
            match new.schedule.when(job) {
                Some(When::Cron(s)) => match s.next_after(now) {
                    Some(next) => {
                        due.insert(job, next);
                    }
                    None => {
                        due.remove(&job);
                    }
                },
                Some(When::Continuous) => {
                    due.remove(&job);
                    match running.entry(job) {
                        std::collections::btree_map::Entry::Occupied(_) => warn!(
                            job = %job,
                            "still running: the continuous stream starts after a restart"
                        ),
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            let ctx = root.child();
                            slot.insert(ctx.clone());
                            tasks.spawn(self.continuous(ctx));
                        }
                    }
                }
                None => {
                    due.remove(&job);
                }
            }
        }
        let (was, is) = (
            old.settings.max_concurrent_jobs,
            new.settings.max_concurrent_jobs,
        );
        if is > was {
            permits.add_permits(is - was);
        } else if was > is {
            // Taken back as running jobs release them.
            let permits = permits.clone();
            let fewer = u32::try_from(was - is).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                if let Ok(taken) = permits.acquire_many_owned(fewer).await {
                    taken.forget();
                }
            });
        }
        info!("configuration reloaded");
    }

    /// One due run of `job`: a permit, then up to `1 + retries` attempts with backoff; the
    /// result recorded in the repository.
    fn attempts(
        &self,
        job: JobName,
        ctx: JobContext,
        permits: Arc<Semaphore>,
        previous: Option<JobState>,
    ) -> impl Future<Output = Finished> + Send + 'static {
        let runner = self.runner.clone();
        let repository = self.repository.clone();
        let settings = self.plan().settings.clone();
        let (retries, backoff) = (settings.retries, settings.retry_backoff);
        let notifier = self.notifier.clone();
        let span = info_span!("job", job = %job);
        async move {
            let _permit = tokio::select! {
                permit = permits.acquire_owned() => permit.ok(),
                () = ctx.cancel.cancelled() => None,
            };
            if let Some(notifier) = &notifier
                && _permit.is_some()
            {
                notifier.job_started(job);
            }
            let started = ctx.clock.now();
            let mut attempt = 0;
            let (outcome, message) = loop {
                attempt += 1;
                if ctx.cancel.is_cancelled() {
                    break (Outcome::Cancelled, "cancelled before it started".to_string());
                }
                match runner.run(job, &ctx).await {
                    Ok(summary) => break (Outcome::Succeeded, summary),
                    Err(e) if e.kind() == ErrorKind::Interrupted || ctx.cancel.is_cancelled() => {
                        break (Outcome::Cancelled, e.to_string());
                    }
                    Err(e) if attempt > retries => break (Outcome::Failed, e.to_string()),
                    Err(e) => {
                        let wait = backoff * 2u32.saturating_pow(attempt - 1);
                        warn!(attempt, error = %e, wait_seconds = wait.as_secs(), "failed; retrying");
                        let wait = SignedDuration::try_from(wait).unwrap_or(SignedDuration::ZERO);
                        tokio::select! {
                            () = ctx.clock.sleep(wait) => {}
                            () = ctx.cancel.cancelled() => {
                                break (Outcome::Cancelled, format!("cancelled while waiting to retry after: {e}"));
                            }
                        }
                    }
                }
            };
            let finished = ctx.clock.now();
            match outcome {
                Outcome::Succeeded => info!(attempts = attempt, summary = %message, "succeeded"),
                Outcome::Failed => error!(attempts = attempt, error = %message, "failed"),
                Outcome::Cancelled => warn!(reason = %message, "cancelled"),
            }
            let previous = previous.as_ref();
            let state = JobState {
                job: job.as_str().to_string(),
                last_started: started,
                last_finished: finished,
                outcome,
                attempts: attempt,
                message,
                last_success: if outcome == Outcome::Succeeded {
                    Some(finished)
                } else {
                    previous.and_then(|p| p.last_success)
                },
                failures_total: previous.map_or(0, |p| p.failures_total)
                    + u64::from(outcome == Outcome::Failed),
                skipped_total: previous.map_or(0, |p| p.skipped_total),
            };
            if let Err(e) = state::save(&repository, job, &state).await {
                warn!(error = %e, "recording the job's state");
            }
            if let Some(notifier) = &notifier {
                notifier.job_finished(job, &state, previous);
            }
            Finished { job, state }
        }
        .instrument(span)
    }

    /// The continuous incremental job: restarted with backoff whenever it stops on an error,
    /// until cancelled.
    fn continuous(&self, ctx: JobContext) -> impl Future<Output = Finished> + Send + 'static {
        let runner = self.runner.clone();
        let backoff = self.plan().settings.retry_backoff;
        async move {
            let started = ctx.clock.now();
            let mut restarts = 0u32;
            let message = loop {
                match runner.run_continuous(&ctx).await {
                    Ok(summary) if ctx.cancel.is_cancelled() => break summary,
                    Ok(summary) => warn!(summary = %summary, "the stream stopped; restarting it"),
                    Err(e) if ctx.cancel.is_cancelled() => break e.to_string(),
                    Err(e) if e.kind() == ErrorKind::Config => {
                        error!(error = %e, "the stream cannot run: not restarting it");
                        break e.to_string();
                    }
                    Err(e) => error!(error = %e, "the stream failed; restarting it"),
                }
                restarts += 1;
                let wait = SignedDuration::try_from(backoff).unwrap_or(SignedDuration::ZERO);
                tokio::select! {
                    () = ctx.clock.sleep(wait) => {}
                    () = ctx.cancel.cancelled() => break "stopped".to_string(),
                }
            };
            Finished {
                job: JobName::Incremental,
                state: JobState {
                    job: "incremental".into(),
                    last_started: started,
                    last_finished: ctx.clock.now(),
                    outcome: Outcome::Cancelled,
                    attempts: restarts + 1,
                    message,
                    last_success: None,
                    failures_total: 0,
                    skipped_total: 0,
                },
            }
        }
        .instrument(info_span!("job", job = "incremental", mode = "continuous"))
    }
}

#[cfg(test)]
mod tests;

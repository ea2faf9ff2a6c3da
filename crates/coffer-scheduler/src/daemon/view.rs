//! The repository as the daemon shows it: the [`Status`] that `coffer status` prints, refreshed
//! in the background and kept in [`Observed`], so `/metrics` serves it at every scrape without
//! touching storage or the source.
//!
//! [`keep_status_fresh`] refreshes at start, every interval on the daemon's clock, and as soon as
//! a job's recorded run changes (a job finished: a new backup, a prune, a drill report). A refresh
//! that fails is logged and the previous status stays, with its time
//! (`coffer_status_refreshed_timestamp_seconds`) showing its age. Manifests come through
//! [`Repository::list`], whose cache reads each one once: a refresh lists the repository but does
//! not re-read unchanged manifests.

use std::sync::Arc;
use std::time::Duration;

use coffer_core::Result;
use coffer_core::config::{Config, JobName};
use coffer_core::job::JobContext;
use coffer_core::repository::Repository;
use jiff::{SignedDuration, Timestamp};
use tracing::{Instrument, debug, info_span, warn};

use super::Observed;
use super::state::JobState;
use crate::status::{Status, status};

/// How often [`keep_status_fresh`] refreshes when nothing else asks it to: the default of its
/// `every`.
pub const DEFAULT_REFRESH_EVERY: Duration = Duration::from_secs(60);

impl Observed {
    /// Keeps `status`, taken at `at`. Not an update of the loop's: it does not wake a watcher.
    fn set_status(&self, status: Arc<Status>, at: Timestamp) {
        let mut snapshot = self.0.write().unwrap_or_else(|e| e.into_inner());
        snapshot.status = Some(status);
        snapshot.status_refreshed_at = Some(at);
    }

    /// Counts the loop's updates from now on: `changed` completes after the next one, or at
    /// once when one came since it last completed.
    fn updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.1.subscribe()
    }

    /// The jobs' recorded runs now.
    fn job_states(&self) -> Vec<(JobName, JobState)> {
        let snapshot = self.0.read().unwrap_or_else(|e| e.into_inner());
        snapshot
            .states
            .iter()
            .map(|(job, state)| (*job, state.clone()))
            .collect()
    }
}

/// Takes the status (as `coffer status` does, under `job`) and keeps it in `observed` for
/// `/metrics`. On error `observed` keeps the previous status.
pub async fn refresh_status(
    config: &Config,
    repository: &Repository,
    job: &JobContext,
    observed: &Observed,
) -> Result<Arc<Status>> {
    let taken = Arc::new(status(config, repository, job).await?);
    observed.set_status(taken.clone(), job.clock.now());
    Ok(taken)
}

/// Refreshes the status in `observed` until `shutdown` completes: at once, then every `every`
/// on `root`'s clock ([`DEFAULT_REFRESH_EVERY`] is the usual), and right after a job's recorded
/// run changes. Each refresh runs under a child of `root`; a refresh still going when `shutdown`
/// completes is dropped.
pub async fn keep_status_fresh(
    config: Config,
    repository: Arc<Repository>,
    root: JobContext,
    observed: Observed,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // One receiver throughout: an update during a refresh, or between two waits, is not missed.
    let mut updates = observed.updates();
    let every = SignedDuration::try_from(every).unwrap_or(SignedDuration::from_secs(60));
    loop {
        // Read before the refresh: a job that finishes during it causes the next one.
        let seen = observed.job_states();
        let job = root.child();
        let refresh = async {
            match refresh_status(&config, &repository, &job, &observed).await {
                Ok(status) => debug!(
                    backups = status.backups,
                    source_error = status.source_error.as_deref().unwrap_or(""),
                    "status refreshed"
                ),
                Err(e) => {
                    warn!(error = %e, "refreshing the status failed; keeping the previous one")
                }
            }
        }
        .instrument(info_span!("status.refresh"));
        tokio::select! {
            () = refresh => {}
            () = &mut shutdown => return,
        }
        let next = root
            .clock
            .now()
            .saturating_add(every)
            .unwrap_or(Timestamp::MAX);
        loop {
            tokio::select! {
                () = root.clock.sleep_until(next) => break,
                // `changed` fails only without a sender, and `observed` holds it.
                Ok(()) = updates.changed() => {
                    if observed.job_states() != seen {
                        break;
                    }
                }
                () = &mut shutdown => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use coffer_core::clock::Clock;
    use coffer_core::storage::LocalStorage;

    use super::super::state::Outcome;
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// A config whose source nobody answers (the status records that, it does not fail).
    fn config() -> Config {
        Config::parse(
            "[repository]\nurl = \"repo\"\n[source]\nhost = \"127.0.0.1\"\nport = 1\n",
            Path::new("/tmp/coffer.toml"),
            &|_: &str| None,
        )
        .unwrap()
    }

    fn finished(job: &str, when: Timestamp) -> JobState {
        JobState {
            job: job.into(),
            last_started: when,
            last_finished: when,
            outcome: Outcome::Succeeded,
            attempts: 1,
            message: "done".into(),
            last_success: Some(when),
            failures_total: 0,
            skipped_total: 0,
        }
    }

    /// Waits (real time, at most 10 s) until the status was refreshed at a time other than
    /// `before`.
    async fn refreshed_after(observed: &Observed, before: Option<Timestamp>) -> Timestamp {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let now = observed.snapshot().status_refreshed_at;
                if let Some(now) = now
                    && Some(now) != before
                {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        waited.await.expect("the status was refreshed")
    }

    #[tokio::test]
    async fn the_status_is_refreshed_at_start_after_a_job_finishes_and_every_interval() {
        let dir = tempfile::tempdir().unwrap();
        let repository = Arc::new(Repository::from_storage(Box::new(LocalStorage::new(
            dir.path().to_path_buf(),
        ))));
        repository.ensure_initialized().await.unwrap();
        let root = JobContext {
            cancel: Default::default(),
            clock: Clock::manual(at("2026-12-01T10:00:00Z")),
        };
        let observed = Observed::default();
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(keep_status_fresh(
            config(),
            repository,
            root.clone(),
            observed.clone(),
            Duration::from_secs(60),
            {
                let stop = stop.clone();
                async move { stop.notified().await }
            },
        ));

        let first = refreshed_after(&observed, None).await;
        assert_eq!(first, at("2026-12-01T10:00:00Z"));
        let status = observed.snapshot().status.expect("kept");
        assert_eq!(status.backups, 0);
        assert!(status.source_error.is_some(), "nobody listens on port 1");
        assert!(status.locks.is_empty() && status.last_drill.is_none());

        // An update that changes no job's run (a job started) does not refresh.
        root.clock.advance(SignedDuration::from_secs(5));
        observed.update(|s| {
            s.running.insert(JobName::Full);
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(observed.snapshot().status_refreshed_at, Some(first));

        // A job finishing does.
        observed.update(|s| {
            s.running.clear();
            s.states
                .insert(JobName::Full, finished("full", at("2026-12-01T10:00:05Z")));
        });
        let second = refreshed_after(&observed, Some(first)).await;
        assert_eq!(second, at("2026-12-01T10:00:05Z"));

        // Then the interval, on the daemon's clock.
        root.clock.advance(SignedDuration::from_secs(59));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(observed.snapshot().status_refreshed_at, Some(second));
        root.clock.advance(SignedDuration::from_secs(1));
        let third = refreshed_after(&observed, Some(second)).await;
        assert_eq!(third, at("2026-12-01T10:01:05Z"));

        stop.notify_one();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stopped on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_previous_status() {
        let dir = tempfile::tempdir().unwrap();
        let repository =
            Repository::from_storage(Box::new(LocalStorage::new(dir.path().to_path_buf())));
        repository.ensure_initialized().await.unwrap();
        let job = JobContext {
            cancel: Default::default(),
            clock: Clock::manual(at("2026-12-01T10:00:00Z")),
        };
        let observed = Observed::default();
        refresh_status(&config(), &repository, &job, &observed)
            .await
            .unwrap();
        // A manifest that is not one: listing the repository fails.
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::write(
            dir.path().join("manifests/20261201T100000Z-full-0000.json"),
            "{not json",
        )
        .unwrap();
        job.clock.advance(SignedDuration::from_secs(60));
        assert!(
            refresh_status(&config(), &repository, &job, &observed)
                .await
                .is_err()
        );
        let snapshot = observed.snapshot();
        assert_eq!(
            snapshot.status_refreshed_at,
            Some(at("2026-12-01T10:00:00Z"))
        );
        assert!(snapshot.status.is_some());
    }
}

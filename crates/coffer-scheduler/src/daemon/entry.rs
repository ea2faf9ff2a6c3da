//! [`run`]: the whole daemon (the loop, its real jobs, `/up` and `/metrics`) as one function
//! that the binary and the end-to-end tests call alike.

use std::sync::Arc;

use coffer_core::Result;
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::repository::Repository;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Daemon;
use super::jobs::ConfiguredRunner;
use crate::notify::{self, Notifier};

/// Runs the daemon for `config` until `shutdown` completes, serving `/up` and `/metrics` on
/// `listener`. Each new value sent into `config` is a reload (`SIGHUP`): schedules, settings
/// and what jobs read apply at once; the repository, the state directory and the listen
/// address are those the daemon started with (a change to them is logged and waits for a
/// restart).
pub async fn run(
    mut config: watch::Receiver<Config>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let started = config.borrow_and_update().clone();
    let repository = Arc::new(
        Repository::open(&started.repository, started.stall_timeout)
            .await?
            .with_cache(started.state_dir.as_deref()),
    );
    repository.ensure_initialized().await?;
    let runner = Arc::new(ConfiguredRunner::new(started.clone(), repository.clone()));
    let root = JobContext::new();
    let notifier =
        Notifier::new(&started.notify, notify::this_host())?.with_clock(root.clock.clone());
    let daemon = Daemon::new(
        started.schedule.clone(),
        started.daemon.clone(),
        repository.clone(),
        runner.clone(),
    )
    .with_notifier(notifier.clone());
    // Staleness and disk, judged by the configuration in force: restarted on each reload.
    let watcher = |config: Config| {
        tokio::spawn(notify::watch(
            notifier.clone(),
            config,
            daemon.observed(),
            root.clock.clone(),
            std::future::pending(),
        ))
    };
    // The repository's status for /metrics, refreshed in the background, never at a scrape.
    let refresher = |config: Config| {
        tokio::spawn(super::view::keep_status_fresh(
            config,
            repository.clone(),
            root.clone(),
            daemon.observed(),
            super::view::DEFAULT_REFRESH_EVERY,
            std::future::pending(),
        ))
    };
    // Configuration files hashed every `poll_interval`, besides any `config` schedule.
    let poller =
        |config: Config| tokio::spawn(poll_config_files(config, repository.clone(), root.clone()));
    let watching = std::sync::Mutex::new((
        watcher(started.clone()),
        refresher(started.clone()),
        poller(started.clone()),
    ));
    let (serving, served) = watch::channel(started.clone());
    let (stop_serving, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::http::serve(
        listener,
        served,
        repository.clone(),
        daemon.observed(),
        root.clock.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let reloads = async {
        while config.changed().await.is_ok() {
            let new = config.borrow_and_update().clone();
            for (part, changed) in restart_only_changes(&started, &new) {
                if changed {
                    warn!(
                        part,
                        "changed in the reloaded configuration: takes effect after a restart"
                    );
                }
            }
            runner.set_config(new.clone());
            daemon.reload(new.schedule.clone(), new.daemon.clone());
            if let Err(e) = notifier.reconfigure(&new.notify) {
                warn!(error = %e, "[[notify]]: keeping the previous targets");
            }
            let mut current = watching.lock().unwrap_or_else(|e| e.into_inner());
            current.0.abort();
            current.1.abort();
            current.2.abort();
            *current = (
                watcher(new.clone()),
                refresher(new.clone()),
                poller(new.clone()),
            );
            drop(current);
            let _ = serving.send(new);
        }
        std::future::pending::<()>().await;
    };
    let result = tokio::select! {
        result = daemon.run(&root, shutdown) => result,
        () = reloads => unreachable!("reloads never end"),
    };
    {
        let current = watching.lock().unwrap_or_else(|e| e.into_inner());
        current.0.abort();
        current.1.abort();
        current.2.abort();
    }
    let _ = stop_serving.send(());
    let _ = server.await;
    // What the last jobs raised is delivered before the process ends, within the bound.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), notifier.flush()).await;
    info!("daemon exited");
    result
}

/// How long after a watched change the capture runs: editors write in several steps.
const WATCH_SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs the `[[config_backup]]` capture when a watched file changes and every `poll_interval`
/// (the shortest of the tables'), under the shared repository lock like the scheduled `config`
/// job; a version is taken only when a content changed. Failures are logged and the next poll
/// tries again.
async fn poll_config_files(config: Config, repository: Arc<Repository>, root: JobContext) {
    let Some(every) = config.config_backup.iter().map(|t| t.poll_interval).min() else {
        return;
    };
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The watch makes a capture sooner; the poll still catches what it misses.
    let (_watch, mut changed) = match coffer_config_history::watch::watch(&config.config_backup) {
        Ok((watch, changed)) => {
            for (folder, why) in &watch.unwatched {
                warn!(folder = %folder.display(), error = %why, "not watched for configuration changes (the poll still looks)");
            }
            (Some(watch), changed)
        }
        Err(e) => {
            warn!(error = %e, "configuration files are not watched (the poll still looks)");
            (None, tokio::sync::mpsc::channel(1).1)
        }
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(()) = changed.recv() => {
                // An editor saves in steps (a temp file, then a rename): let them settle.
                tokio::time::sleep(WATCH_SETTLE).await;
                while changed.try_recv().is_ok() {}
                ticker.reset();
            }
        }
        let run = coffer_restore::read_locked(
            &repository,
            "config poll",
            config.daemon.lock_wait,
            &root,
            coffer_config_history::capture::capture_all(&config, &repository, &root),
        )
        .await;
        match run {
            Ok(reports) => {
                for report in reports.iter().filter(|r| r.version.is_some()) {
                    info!(
                        name = %report.name,
                        version = report.version.as_deref().unwrap_or_default(),
                        changed = report.changes.len(),
                        "config poll: new configuration version"
                    );
                }
            }
            Err(e) => warn!(error = %e, "config poll failed"),
        }
    }
}

/// The parts of a configuration that a running daemon does not change, and whether `new`
/// changes each.
fn restart_only_changes(old: &Config, new: &Config) -> [(&'static str, bool); 3] {
    [
        (
            "repository",
            format!("{:?}", old.repository) != format!("{:?}", new.repository),
        ),
        ("state_dir", old.state_dir != new.state_dir),
        ("daemon.listen", old.daemon.listen != new.daemon.listen),
    ]
}

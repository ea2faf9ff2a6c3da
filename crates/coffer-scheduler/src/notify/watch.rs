//! Staleness and disk use, looked at every minute and told once per change.

use std::path::{Path, PathBuf};

use coffer_core::clock::Clock;
use coffer_core::config::{Config, RepositoryLocation, When};
use jiff::SignedDuration;
use tracing::debug;

use super::Notifier;
use crate::daemon::Observed;

/// The runbook's critical threshold: a file system this full (percent used, as `df` shows it)
/// alerts before a backup fails for lack of space.
pub const DISK_FULL_PERCENT: f64 = 90.0;

/// How often [`watch`] looks (on the daemon's clock).
pub const WATCH_INTERVAL: SignedDuration = SignedDuration::from_secs(60);

/// The percentage of a file system in use as `df` shows it, from `statvfs`'s block counts:
/// `blocks` in all, `free` (for root), `available` (for everyone else). The blocks kept for
/// root count as neither used nor available, so a full disk reads 100 % as it does for coffer,
/// which does not run as root. `None` for a file system with no blocks (`/proc` and the like).
pub fn used_percent(blocks: u64, free: u64, available: u64) -> Option<f64> {
    let used = blocks.saturating_sub(free);
    let usable = used.checked_add(available)?;
    (usable > 0).then(|| used as f64 * 100.0 / usable as f64)
}

/// How full the file system holding `path` is.
fn disk_use(path: &Path) -> std::io::Result<Option<f64>> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(used_percent(stat.f_blocks, stat.f_bfree, stat.f_bavail))
}

/// The folders whose file systems are watched: `state_dir` and a folder repository.
fn watched(config: &Config) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = config.state_dir.iter().cloned().collect();
    if let RepositoryLocation::Local(folder) = &config.repository.location
        && !paths.contains(folder)
    {
        paths.push(folder.clone());
    }
    paths
}

/// One look: every cron job's staleness and every watched file system's use, told through
/// `notifier` when it changed.
fn look(notifier: &Notifier, config: &Config, observed: &Observed, clock: &Clock) {
    let overdue = crate::daemon::http::overdue(config, observed, clock.now());
    let snapshot = observed.snapshot();
    for (job, when) in &config.schedule.jobs {
        if !matches!(when, When::Cron(_)) {
            continue;
        }
        // A job that never ran has no interval to be late against yet.
        let Some(state) = snapshot.states.get(job) else {
            continue;
        };
        notifier.staleness(*job, overdue.contains(job), state.last_success);
    }
    for path in watched(config) {
        match disk_use(&path) {
            Ok(Some(percent)) => notifier.disk(&path, percent),
            Ok(None) => {}
            // Not there yet (a repository created on the first backup): nothing to tell.
            Err(e) => debug!(path = %path.display(), error = %e, "cannot read disk use"),
        }
    }
}

/// Watches staleness and disk use until `shutdown` completes: looks at once, then every
/// [`WATCH_INTERVAL`] on `clock`, and tells `notifier` (which sends each change once). Run it
/// beside the daemon, with the daemon's [`Observed`] and clock.
pub async fn watch(
    notifier: Notifier,
    config: Config,
    observed: Observed,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        look(&notifier, &config, &observed, &clock);
        tokio::select! {
            () = clock.sleep(WATCH_INTERVAL) => {}
            () = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_percent_counts_as_df_does() {
        // 1000 blocks, 100 free for root, 50 of them for everyone: 900 used of 950 usable.
        let percent = used_percent(1000, 100, 50).unwrap();
        assert!((percent - 94.736_842).abs() < 1e-4, "{percent}");
        assert_eq!(used_percent(1000, 1000, 950), Some(0.0));
        assert_eq!(
            used_percent(1000, 50, 0),
            Some(100.0),
            "only root's reserve left"
        );
        assert_eq!(used_percent(0, 0, 0), None, "a file system without blocks");
    }

    #[test]
    fn the_threshold_is_the_runbooks_critical_ninety_percent() {
        assert!(used_percent(100, 10, 10).unwrap() >= DISK_FULL_PERCENT);
        assert!(used_percent(100, 11, 11).unwrap() < DISK_FULL_PERCENT);
    }

    #[test]
    fn a_real_file_system_reads_between_nothing_and_full() {
        let dir = tempfile::tempdir().unwrap();
        let percent = disk_use(dir.path()).unwrap().unwrap();
        assert!((0.0..=100.0).contains(&percent), "{percent}");
        assert!(disk_use(&dir.path().join("missing")).is_err());
    }
}

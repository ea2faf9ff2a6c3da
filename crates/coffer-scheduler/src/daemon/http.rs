//! `GET /up` and `GET /metrics`: the daemon as monitoring sees it.
//!
//! `/up` answers the runbook's shape, `{"status":"ok","database":"connected","queue":"running",
//! "storage":"accessible"}` with 200, and 503 naming the failing part otherwise:
//!
//! - `database`: the source answers within 5 s (`connected`, else `unreachable`);
//! - `queue`: the loop takes work and no job is overdue (`running`; `overdue` when a job's last
//!   success is older than 1.5 × its interval; `stopped` while shutting down);
//! - `storage`: the repository answers within 5 s (`accessible`, else `unreachable`).
//!
//! `/metrics` is Prometheus text, names as `coffer_<name>_<unit>`, read from the daemon's
//! [`Observed`] at each scrape: per job its last run and next due time (from the loop), and,
//! once [`super::view::keep_status_fresh`] has taken one, the repository's [`Status`]: per
//! backup kind the last success, its duration, the count and the bytes stored; the recovery point
//! age; the point-in-time window; the last drill; the locks held. A scrape never touches storage
//! or the source.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use coffer_core::client::{self, Endpoint};
use coffer_core::config::{Config, JobName, When};
use coffer_core::repository::Repository;
use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Observed;
use crate::status::Status;

/// How long `/up` waits for the database or the repository.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

struct Served {
    config: tokio::sync::watch::Receiver<Config>,
    repository: Arc<Repository>,
    observed: Observed,
    clock: coffer_core::clock::Clock,
}

/// Serves `/up` and `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: tokio::sync::watch::Receiver<Config>,
    repository: Arc<Repository>,
    observed: Observed,
    clock: coffer_core::clock::Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = Arc::new(Served {
        config,
        repository,
        observed,
        clock,
    });
    let app = Router::new()
        .route("/up", get(up))
        .route("/metrics", get(metrics))
        .with_state(served);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Jobs whose last success is older than 1.5 × their interval (the time between their last two
/// due times), at `now`.
pub fn overdue(config: &Config, observed: &Observed, now: Timestamp) -> Vec<JobName> {
    let snapshot = observed.snapshot();
    config
        .schedule
        .jobs
        .iter()
        .filter_map(|(job, when)| {
            let When::Cron(schedule) = when else {
                return None;
            };
            let state = snapshot.states.get(job)?;
            let since = state.last_success.unwrap_or(state.last_started);
            let first = schedule.next_after(since)?;
            let interval = schedule.next_after(first)?.duration_since(first);
            let late = interval.checked_mul(3)?.checked_div(2)?;
            (now.duration_since(since) > late).then_some(*job)
        })
        .collect()
}

async fn up(State(s): State<Arc<Served>>) -> impl IntoResponse {
    // The configuration in force (a reload replaces it).
    let config = s.config.borrow().clone();
    // A configuration without `[source]` backs up no database: nothing to reach.
    let endpoint = config
        .source
        .as_ref()
        .map(|source| Endpoint::from(source).with_stall_timeout(PROBE_TIMEOUT));
    let (database, storage) = tokio::join!(
        async {
            let Some(endpoint) = &endpoint else {
                return "not configured";
            };
            match tokio::time::timeout(PROBE_TIMEOUT, client::connect(endpoint)).await {
                Ok(Ok(_)) => "connected",
                _ => "unreachable",
            }
        },
        async {
            match tokio::time::timeout(PROBE_TIMEOUT, s.repository.check_reachable()).await {
                Ok(Ok(true)) => "accessible",
                _ => "unreachable",
            }
        }
    );
    let snapshot = s.observed.snapshot();
    let queue = if !snapshot.scheduling {
        "stopped"
    } else if overdue(&config, &s.observed, s.clock.now()).is_empty() {
        "running"
    } else {
        "overdue"
    };
    let ok = matches!(database, "connected" | "not configured")
        && storage == "accessible"
        && queue == "running";
    // A struct, not `json!`: the fields in the runbook's order.
    #[derive(serde::Serialize)]
    struct Up<'a> {
        status: &'a str,
        database: &'a str,
        queue: &'a str,
        storage: &'a str,
    }
    let body = serde_json::to_string(&Up {
        status: if ok { "ok" } else { "unhealthy" },
        database,
        queue,
        storage,
    })
    .expect("a status always serializes");
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// A gauge of any value, as every metric here is one.
type Value = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Registers one unlabelled gauge.
fn gauge(registry: &mut Registry, name: &str, help: &str) -> Value {
    let gauge = Value::default();
    registry.register(name, help, gauge.clone());
    gauge
}

/// Registers one gauge per `kind`.
fn by_kind(registry: &mut Registry, name: &str, help: &str) -> Family<KindLabel, Value> {
    let family = Family::<KindLabel, Value>::default();
    registry.register(name, help, family.clone());
    family
}

/// The metrics of a refreshed [`Status`].
fn register_status(registry: &mut Registry, status: &Status, refreshed_at: Option<Timestamp>) {
    let seconds = |t: Timestamp| t.as_millisecond() as f64 / 1000.0;
    if let Some(at) = refreshed_at {
        gauge(
            registry,
            "coffer_status_refreshed_timestamp_seconds",
            "When the repository status below was last taken (Unix seconds)",
        )
        .set(seconds(at));
    }
    let last_success = by_kind(
        registry,
        "coffer_backup_last_success_timestamp_seconds",
        "When the newest backup of each kind finished (Unix seconds)",
    );
    let last_duration = by_kind(
        registry,
        "coffer_backup_last_duration_seconds",
        "How long the newest backup of each kind took",
    );
    let stored = by_kind(
        registry,
        "coffer_backup_stored_bytes",
        "Bytes on storage of the listed backups of each kind",
    );
    let count = by_kind(registry, "coffer_backups", "Listed backups of each kind");
    for kind in &status.by_kind {
        let label = KindLabel {
            kind: kind.kind.clone(),
        };
        if let Some(t) = kind.last_success {
            last_success.get_or_create(&label).set(seconds(t));
        }
        if let Some(d) = kind.last_duration_seconds {
            last_duration.get_or_create(&label).set(d);
        }
        stored.get_or_create(&label).set(kind.stored_bytes as f64);
        count.get_or_create(&label).set(kind.backups as f64);
    }
    if let Some(age) = status.recovery_point.as_ref().and_then(|p| p.age_seconds) {
        gauge(
            registry,
            "coffer_recovery_point_age_seconds",
            "Seconds of committed transactions the binlog archive lacks",
        )
        .set(age as f64);
    }
    if let Some(window) = &status.point_in_time_window {
        gauge(
            registry,
            "coffer_pitr_window_start_timestamp_seconds",
            "The earliest point a point-in-time restore reaches (Unix seconds)",
        )
        .set(seconds(window.start));
        gauge(
            registry,
            "coffer_pitr_window_end_timestamp_seconds",
            "The latest point a point-in-time restore reaches (Unix seconds)",
        )
        .set(seconds(window.end));
        gauge(
            registry,
            "coffer_pitr_gaps",
            "Breaks in the binlog archive (missing, renumbered or damaged files)",
        )
        .set(window.gaps as f64);
    }
    if let Some(drill) = &status.last_drill {
        gauge(
            registry,
            "coffer_drill_last_passed",
            "1 when the newest drill passed, 0 when it failed",
        )
        .set(f64::from(u8::from(
            drill.verdict == coffer_verifier::report::Verdict::Pass,
        )));
        if let Some(rto) = drill.recovery_time_seconds {
            gauge(
                registry,
                "coffer_drill_last_recovery_seconds",
                "Restore and replay time of the newest drill",
            )
            .set(rto);
        }
        gauge(
            registry,
            "coffer_drill_last_timestamp_seconds",
            "When the newest drill finished (Unix seconds)",
        )
        .set(seconds(drill.finished_at));
    }
    if !status.file_snapshots.is_empty() {
        let last = Family::<SourceLabel, Value>::default();
        registry.register(
            "coffer_files_last_snapshot_timestamp_seconds",
            "When the newest snapshot of each [[files]] source finished (Unix seconds)",
            last.clone(),
        );
        let files = Family::<SourceLabel, Value>::default();
        registry.register(
            "coffer_files_snapshot_files",
            "Files in the newest snapshot of each [[files]] source",
            files.clone(),
        );
        for snapshot in &status.file_snapshots {
            let label = SourceLabel {
                source: snapshot.source.clone(),
            };
            if let Some(at) = snapshot.finished_at {
                last.get_or_create(&label).set(seconds(at));
                files.get_or_create(&label).set(snapshot.files as f64);
            }
        }
    }
    let held = by_kind(
        registry,
        "coffer_locks_held",
        "Live (not stale) repository locks of each kind",
    );
    for kind in ["exclusive", "shared"] {
        let live = status
            .locks
            .iter()
            .filter(|l| !l.stale && l.kind.to_string() == kind)
            .count();
        held.get_or_create(&KindLabel { kind: kind.into() })
            .set(live as f64);
    }
    gauge(
        registry,
        "coffer_locks_stale",
        "Stale repository locks (the next locker takes them over)",
    )
    .set(status.locks.iter().filter(|l| l.stale).count() as f64);
}

/// The Prometheus text of one look at the daemon: the loop's per-job metrics, then those of the
/// last refreshed status, when there is one.
pub fn render_metrics(config: &Config, observed: &Observed, now: Timestamp) -> String {
    let snapshot = observed.snapshot();
    let mut registry = Registry::default();
    let family = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<JobLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(name, help, family.clone());
        family
    };
    let last_success = family(
        &mut registry,
        "coffer_job_last_success_timestamp_seconds",
        "When each job last succeeded (Unix seconds)",
    );
    let last_duration = family(
        &mut registry,
        "coffer_job_last_duration_seconds",
        "How long each job's last run took",
    );
    // Counters (shown with `_total`): the totals kept in `state/JOB.json`, so they survive a
    // restart of the daemon.
    let counter = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<JobLabel, Counter>::default();
        registry.register(name, help, family.clone());
        family
    };
    let failures = counter(
        &mut registry,
        "coffer_job_failures",
        "Runs of each job that failed after every retry",
    );
    let skipped = counter(
        &mut registry,
        "coffer_job_skipped",
        "Due times of each job skipped because its previous run was still going",
    );
    let next_run = family(
        &mut registry,
        "coffer_job_next_run_timestamp_seconds",
        "When each job is next due (Unix seconds)",
    );
    let running = family(&mut registry, "coffer_job_running", "1 while the job runs");
    let overdue_jobs = overdue(config, observed, now);
    let overdue_family = family(
        &mut registry,
        "coffer_job_overdue",
        "1 when a job's last success is older than 1.5 times its interval",
    );
    for (job, _) in &config.schedule.jobs {
        let label = JobLabel {
            job: job.as_str().to_string(),
        };
        if let Some(state) = snapshot.states.get(job) {
            if let Some(t) = state.last_success {
                last_success.get_or_create(&label).set(t.as_second() as f64);
            }
            last_duration.get_or_create(&label).set(
                state
                    .last_finished
                    .duration_since(state.last_started)
                    .as_secs_f64(),
            );
            failures.get_or_create(&label).inc_by(state.failures_total);
            skipped.get_or_create(&label).inc_by(state.skipped_total);
        }
        if let Some(next) = snapshot.next.get(job) {
            next_run.get_or_create(&label).set(next.as_second() as f64);
        }
        running
            .get_or_create(&label)
            .set(f64::from(u8::from(snapshot.running.contains(job))));
        overdue_family
            .get_or_create(&label)
            .set(f64::from(u8::from(overdue_jobs.contains(job))));
    }
    if let Some(status) = &snapshot.status {
        register_status(&mut registry, status, snapshot.status_refreshed_at);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    samples_in_order(&text)
}

/// `text` with the samples of each metric sorted by their labels: a family keeps its labels in
/// a hash map, and a scrape (or a test) should not depend on its order.
fn samples_in_order(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut samples: Vec<&str> = Vec::new();
    let flush = |samples: &mut Vec<&str>, out: &mut String| {
        samples.sort_unstable();
        for sample in samples.drain(..) {
            out.push_str(sample);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut samples, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    flush(&mut samples, &mut out);
    out
}

async fn metrics(State(s): State<Arc<Served>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render_metrics(&s.config.borrow().clone(), &s.observed, s.clock.now()),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use coffer_core::lock::LockKind;
    use coffer_verifier::report::Verdict;

    use super::super::state::{JobState, Outcome};
    use super::*;
    use crate::recovery_point::RecoveryPoint;
    use crate::status::{HeldLock, KindSummary, LastDrill, PointInTimeWindow};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn config() -> Config {
        Config::parse(
            "[repository]\nurl = \"repo\"\n[schedule]\nfull = \"0 2 * * *\"\nprune = \"0 4 * * *\"\n",
            Path::new("/tmp/coffer.toml"),
            &|_: &str| None,
        )
        .unwrap()
    }

    fn lock(id: &str, kind: LockKind, stale: bool) -> HeldLock {
        HeldLock {
            id: id.into(),
            kind,
            purpose: Some("backup full".into()),
            host: Some("backup-1".into()),
            pid: Some(4242),
            created: Some(at("2026-12-01T09:58:00Z")),
            heartbeat: Some(at("2026-12-01T09:59:00Z")),
            stale,
            note: stale.then(|| "heartbeat 2 h old".to_string()),
        }
    }

    /// A status as a refresh would take it: two kinds of backup, a window, a failed drill, locks.
    fn status() -> Status {
        Status {
            repository: "/var/backups/coffer".into(),
            backups: 5,
            newest_full_backup: None,
            newest_archived_binlog: None,
            recovery_point: Some(RecoveryPoint {
                archived_commit_time: Some(1_764_583_154),
                archived_gtid: Some("0-1-88231".into()),
                archived_file: Some("mysql-bin.000231".into()),
                server_gtid_position: "0-1-88240".into(),
                server_commit_time: Some(1_764_583_200),
                fully_archived: false,
                age_seconds: Some(46),
            }),
            source_error: None,
            source_failure: None,
            jobs: Vec::new(),
            generated_at: at("2026-12-01T10:00:00Z"),
            by_kind: vec![
                KindSummary {
                    kind: "binlog".into(),
                    backups: 3,
                    stored_bytes: 3_000,
                    newest_id: Some("20261201T094000Z-binlog-0003".into()),
                    last_success: Some(at("2026-12-01T09:40:02Z")),
                    last_duration_seconds: Some(1.5),
                },
                KindSummary {
                    kind: "full".into(),
                    backups: 2,
                    stored_bytes: 52_428_800,
                    newest_id: Some("20261201T020000Z-full-3fa9".into()),
                    last_success: Some(at("2026-12-01T02:03:20Z")),
                    last_duration_seconds: Some(200.0),
                },
            ],
            point_in_time_window: Some(PointInTimeWindow {
                full_backup: "20261130T020000Z-full-1a2b".into(),
                start: at("2026-11-30T02:00:00Z"),
                end: at("2026-12-01T09:39:14Z"),
                gaps: 0,
            }),
            last_drill: Some(LastDrill {
                id: "20261115T030000Z-drill-7c1d".into(),
                verdict: Verdict::Fail,
                backup_id: "20261115T020000Z-full-0b0b".into(),
                started_at: at("2026-11-15T03:00:00Z"),
                finished_at: at("2026-11-15T03:12:30Z"),
                recovery_time_seconds: Some(612.25),
            }),
            locks: vec![
                lock("20261201T095800Z-a", LockKind::Shared, false),
                lock("20261201T095800Z-b", LockKind::Shared, false),
                lock("20261201T075800Z-c", LockKind::Exclusive, true),
            ],
            file_snapshots: Vec::new(),
        }
    }

    fn observed(with_status: bool) -> Observed {
        let observed = Observed::default();
        observed.update(|s| {
            s.scheduling = true;
            s.states.insert(
                JobName::Full,
                JobState {
                    job: "full".into(),
                    last_started: at("2026-12-01T02:00:00Z"),
                    last_finished: at("2026-12-01T02:03:21Z"),
                    outcome: Outcome::Succeeded,
                    attempts: 1,
                    message: "ok".into(),
                    last_success: Some(at("2026-12-01T02:03:21Z")),
                    failures_total: 1,
                    skipped_total: 0,
                },
            );
            s.next.insert(JobName::Full, at("2026-12-02T02:00:00Z"));
            s.next.insert(JobName::Prune, at("2026-12-01T04:00:00Z"));
            s.running.insert(JobName::Prune);
            if with_status {
                s.status = Some(Arc::new(status()));
                s.status_refreshed_at = Some(at("2026-12-01T10:00:00Z"));
            }
        });
        observed
    }

    #[test]
    fn metrics_show_each_job_and_the_refreshed_status() {
        let text = render_metrics(&config(), &observed(true), at("2026-12-01T10:00:30Z"));
        insta::assert_snapshot!(text);
    }

    #[test]
    fn before_the_first_refresh_only_the_jobs_are_shown() {
        let text = render_metrics(&config(), &observed(false), at("2026-12-01T10:00:30Z"));
        assert!(text.contains("coffer_job_last_success_timestamp_seconds{job=\"full\"}"));
        for absent in [
            "coffer_backup_",
            "coffer_pitr_",
            "coffer_drill_",
            "coffer_locks_",
        ] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

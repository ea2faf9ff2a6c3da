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
//! [`Observed`] at each scrape.

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
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Observed;

/// How long `/up` waits for the database or the repository.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

struct Served {
    config: Config,
    repository: Arc<Repository>,
    observed: Observed,
    clock: coffer_core::clock::Clock,
}

/// Serves `/up` and `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
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
    let endpoint = Endpoint::from(&s.config.source).with_stall_timeout(PROBE_TIMEOUT);
    let (database, storage) = tokio::join!(
        async {
            match tokio::time::timeout(PROBE_TIMEOUT, client::connect(&endpoint)).await {
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
    } else if overdue(&s.config, &s.observed, s.clock.now()).is_empty() {
        "running"
    } else {
        "overdue"
    };
    let ok = database == "connected" && storage == "accessible" && queue == "running";
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

/// The Prometheus text of one look at the daemon.
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
    let failures = family(
        &mut registry,
        "coffer_job_failures",
        "Runs of each job that failed after every retry (a total)",
    );
    let skipped = family(
        &mut registry,
        "coffer_job_skipped",
        "Due times of each job skipped because its previous run was still going (a total)",
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
            failures
                .get_or_create(&label)
                .set(state.failures_total as f64);
            skipped
                .get_or_create(&label)
                .set(state.skipped_total as f64);
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
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

async fn metrics(State(s): State<Arc<Served>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render_metrics(&s.config, &s.observed, s.clock.now()),
    )
}

//! `coffer daemon`: the scheduled jobs of the backup host, run by
//! [`coffer_scheduler::daemon::Daemon`] with the real jobs below.

use std::sync::Arc;

use anyhow::Result;
use coffer_core::config::{Config, JobName};
use coffer_core::job::JobContext;
use coffer_core::manifest::{BackupKind, Manifest};
use coffer_core::pipeline::Progress;
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind};
use coffer_scheduler::daemon::{Daemon, Runner};

use super::open_repository;
use crate::exit;

/// `coffer daemon`: runs until SIGTERM or SIGINT, then stops as the daemon's loop describes.
pub async fn run(config: &Config, job: &JobContext) -> Result<u8> {
    let repository = Arc::new(open_repository(config).await?);
    repository.ensure_initialized().await?;
    let runner = Arc::new(ConfiguredRunner {
        config: config.clone(),
        repository: repository.clone(),
    });
    let daemon = Daemon::new(
        config.schedule.clone(),
        config.daemon.clone(),
        repository.clone(),
        runner,
    );
    let listener = tokio::net::TcpListener::bind(config.daemon.listen)
        .await
        .map_err(|e| {
            Error::config(format!(
                "[daemon] listen {}: cannot listen there: {e}",
                config.daemon.listen
            ))
        })?;
    tracing::info!(listen = %config.daemon.listen, "serving /up and /metrics");
    let (stop_serving, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coffer_scheduler::daemon::http::serve(
        listener,
        config.clone(),
        repository,
        daemon.observed(),
        job.clock.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let result = daemon.run(job, super::binlog::shutdown_signal()).await;
    let _ = stop_serving.send(());
    let _ = server.await;
    result?;
    Ok(exit::OK)
}

/// The jobs as the commands of the same names run them.
struct ConfiguredRunner {
    config: Config,
    repository: Arc<Repository>,
}

#[async_trait::async_trait]
impl Runner for ConfiguredRunner {
    async fn run(&self, job: JobName, ctx: &JobContext) -> coffer_core::Result<String> {
        let (config, repository) = (&self.config, &*self.repository);
        match job {
            JobName::Full => {
                let m =
                    coffer_scheduler::run_full_backup(config, repository, ctx, Progress::default())
                        .await?;
                Ok(format!(
                    "backup {} stored ({} bytes)",
                    m.id,
                    m.stored_bytes()
                ))
            }
            JobName::Incremental => {
                let archived = coffer_scheduler::run_incremental_backup(
                    config,
                    repository,
                    ctx,
                    Progress::default(),
                )
                .await?;
                Ok(format!("{} binlog file(s) archived", archived.len()))
            }
            JobName::Prune => {
                let report = coffer_scheduler::run_prune(
                    config,
                    &self.repository,
                    ctx,
                    false,
                    config.daemon.lock_wait,
                )
                .await?;
                Ok(format!(
                    "{} of {} backups deleted",
                    report.deleted.len(),
                    report.plan.items.len()
                ))
            }
            JobName::Verify => verify_newest(repository).await,
            JobName::Drill => {
                let outcome = coffer_verifier::run_drill(
                    config,
                    repository,
                    ctx,
                    coffer_verifier::DrillOptions::default(),
                )
                .await?;
                outcome.saved?;
                match outcome.report.verdict {
                    coffer_verifier::Verdict::Pass => {
                        Ok(format!("drill {} passed", outcome.report.id))
                    }
                    _ => Err(Error::new(
                        ErrorKind::Integrity,
                        format!("drill {} failed its checklist", outcome.report.id),
                    )),
                }
            }
        }
    }

    async fn run_continuous(&self, ctx: &JobContext) -> coffer_core::Result<String> {
        let options = coffer_scheduler::StreamOptions::from_config(&self.config);
        let stats = coffer_scheduler::run_binlog_stream(
            &self.config,
            &self.repository,
            ctx,
            &options,
            ctx.cancel.cancelled(),
        )
        .await?;
        Ok(format!(
            "stream stopped: {} file(s) archived, {} segment(s) shipped",
            stats.files_archived, stats.segments_shipped
        ))
    }
}

/// Re-reads the newest full backup and the newest binlog backup (restic's `check` for what a
/// restore would need first): every artifact's size and SHA-256.
async fn verify_newest(repository: &Repository) -> coffer_core::Result<String> {
    let manifests = repository.list().await?;
    let newest = |kind: BackupKind| -> Option<&Manifest> {
        manifests
            .iter()
            .filter(|m| m.kind == kind)
            .max_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)))
    };
    let mut checked = Vec::new();
    for manifest in [BackupKind::Full, BackupKind::Binlog]
        .into_iter()
        .filter_map(newest)
    {
        let report = coffer_restore::verify_backup(repository, manifest, None).await?;
        if !report.ok() {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!("backup {} failed verification", manifest.id),
            ));
        }
        checked.push(manifest.id.clone());
    }
    Ok(format!("verified {}", checked.join(", ")))
}

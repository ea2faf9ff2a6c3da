//! The daemon's real jobs: each scheduled job run as the command of the same name runs it.

use std::sync::{Arc, RwLock};

use coffer_core::config::{Config, JobName};
use coffer_core::job::JobContext;
use coffer_core::manifest::{BackupKind, Manifest};
use coffer_core::pipeline::Progress;
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind, Result};

use super::Runner;

/// Runs the configured jobs against one repository. The configuration can be replaced while
/// the daemon runs (`SIGHUP`); a job reads it once, when it starts.
pub struct ConfiguredRunner {
    config: RwLock<Arc<Config>>,
    repository: Arc<Repository>,
}

impl ConfiguredRunner {
    /// A runner for `config`'s jobs, storing into `repository`.
    pub fn new(config: Config, repository: Arc<Repository>) -> Self {
        Self {
            config: RwLock::new(Arc::new(config)),
            repository,
        }
    }

    /// Jobs started from now on use `config`; running ones keep the one they started with.
    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// The configuration a job starting now uses.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait::async_trait]
impl Runner for ConfiguredRunner {
    async fn run(&self, job: JobName, ctx: &JobContext) -> Result<String> {
        let config = self.config();
        let (config, repository) = (&*config, &self.repository);
        // Every job but prune holds the shared repository lock while it runs (prune the
        // exclusive one), waiting at most `[daemon] lock_wait_seconds` for it.
        let lock_wait = config.daemon.lock_wait;
        match job {
            JobName::Full => {
                let m =
                    crate::run_full_backup(config, repository, ctx, Progress::default(), lock_wait)
                        .await?;
                Ok(format!(
                    "backup {} stored ({} bytes)",
                    m.id,
                    m.stored_bytes()
                ))
            }
            JobName::Incremental => {
                let archived = crate::run_incremental_backup(
                    config,
                    repository,
                    ctx,
                    Progress::default(),
                    lock_wait,
                )
                .await?;
                Ok(format!("{} binlog file(s) archived", archived.len()))
            }
            JobName::Prune => {
                let report =
                    crate::run_prune(config, repository, ctx, false, lock_wait, None).await?;
                Ok(format!(
                    "{} of {} backups deleted",
                    report.deleted.len(),
                    report.plan.items.len()
                ))
            }
            JobName::Verify => {
                coffer_restore::read_locked(
                    repository,
                    "verify",
                    lock_wait,
                    ctx,
                    verify_newest(repository),
                )
                .await
            }
            JobName::Files => {
                let taken = crate::run_files_backup(
                    config,
                    repository,
                    ctx,
                    &crate::FilesOptions::default(),
                    lock_wait,
                )
                .await?;
                let names: Vec<String> = taken
                    .iter()
                    .map(|m| format!("{} ({} new bytes)", m.id, m.stored.new_bytes))
                    .collect();
                Ok(format!("file snapshots stored: {}", names.join(", ")))
            }
            JobName::Config => {
                let reports = coffer_restore::read_locked(
                    repository,
                    "config backup",
                    lock_wait,
                    ctx,
                    coffer_config_history::capture::capture_all(config, repository, ctx),
                )
                .await?;
                Ok(config_summary(&reports))
            }
            JobName::Drill => {
                let outcome = coffer_verifier::run_drill(
                    config,
                    repository,
                    ctx,
                    coffer_verifier::DrillOptions::default(),
                    lock_wait,
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

    async fn run_continuous(&self, ctx: &JobContext) -> Result<String> {
        let config = self.config();
        let options = crate::StreamOptions::from_config(&config);
        let stats = crate::run_binlog_stream(
            &config,
            &self.repository,
            ctx,
            &options,
            ctx.cancel.cancelled(),
            config.daemon.lock_wait,
        )
        .await?;
        Ok(format!(
            "stream stopped: {} file(s) archived, {} segment(s) shipped",
            stats.files_archived, stats.segments_shipped
        ))
    }
}

/// One line for a config job's run: which tables took a version, which did not change.
fn config_summary(reports: &[coffer_config_history::capture::CaptureReport]) -> String {
    reports
        .iter()
        .map(|r| match &r.version {
            Some(id) => format!("{}: version {id} ({} changed)", r.name, r.changes.len()),
            None => format!("{}: no change", r.name),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Re-reads the newest full backup and the newest binlog backup (restic's `check` for what a
/// restore would need first): every artifact's size and SHA-256. Run under the shared
/// repository lock, from the listing on, so no prune deletes what it is about to read.
async fn verify_newest(repository: &Repository) -> Result<String> {
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

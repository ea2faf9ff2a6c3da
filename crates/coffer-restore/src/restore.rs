//! The restore, start to end: what to restore ([`RestoreRequest`]) resolved into a plan
//! ([`plan`]: the full backup, the binlogs to replay, the databases on the target), then run in
//! the one order that keeps the target safe ([`run`]):
//!
//! 1. every artifact of the backup verified, and every binlog fetched and checked
//!    ([`crate::pitr::prepare_replay`]), and how GTIDs will be written decided — the target
//!    untouched so far;
//! 2. occupied target databases refused unless replacing them was asked for;
//! 3. the `before` hooks, the dump ([`crate::full::load_dump`]), the binlogs
//!    ([`crate::pitr::replay_binlogs`]);
//! 4. the `after` hooks, whatever happened, cancellation included; a load that stopped half-way
//!    marks the target databases so the rerun says so.
//!
//! `full` and `pitr` know nothing of each other: this module is the only one that uses both.

use std::time::Instant;

use coffer_core::cancel::Cancel;
use coffer_core::job::JobContext;
use coffer_core::manifest::Manifest;
use coffer_core::pipeline::{self, Progress};
use coffer_core::process;
use coffer_core::repository::Repository;
use coffer_core::{Error, ErrorKind, Result};
use serde::Serialize;
use tracing::{Instrument, info, info_span};

use crate::full::{self, DatabaseMapping, RestoreOptions};
use crate::pitr::{self, GtidHandling, PointInTime, ReplayPlan};

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// A full backup by id, or `latest` for the newest full backup.
    Backup(String),
    /// The newest full backup before a point in time, rolled forward to it.
    PointInTime(PointInTime),
}

/// What an operator (or the drill) asks for: which backup, where, how.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The backup, or the point in time.
    pub source: RestoreSource,
    /// Target, names, hooks and whether to replace what is there.
    pub options: RestoreOptions,
    /// `[restore] gtid_domain`: where a replay renumbers GTIDs when the target cannot keep them.
    pub gtid_domain: Option<u32>,
}

/// A request resolved against the repository and the target, nothing touched yet.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// The full backup loaded.
    pub manifest: Manifest,
    /// The binlogs replayed after it, for a point in time.
    pub replay: Option<ReplayPlan>,
    /// The databases written, under their target names, and what the target holds now.
    pub databases: Vec<DatabaseMapping>,
}

impl RestorePlan {
    /// Target databases that hold something the restore would replace.
    pub fn occupied(&self) -> Vec<&str> {
        self.databases
            .iter()
            .filter(|d| d.occupied())
            .map(|d| d.to.as_str())
            .collect()
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// Backup restored.
    pub backup_id: String,
    /// `host:port` of the target.
    pub target: String,
    /// Databases and their target names.
    pub databases: Vec<DatabaseMapping>,
    /// Bytes of SQL replayed.
    pub bytes: u64,
    /// Wall time of the restore itself (after verification), in seconds.
    pub seconds: f64,
    /// With a binlog replay: `kept` (the source's GTIDs) or `domain N` (renumbered into N).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gtids: Option<GtidHandling>,
    /// With a binlog replay: the last GTID it wrote on the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_gtid: Option<String>,
}

/// Resolves a request: the full backup (`latest` and a point in time are resolved here, and
/// only here), the replay plan, and the target's databases as they are now. Reads the
/// repository and the target; changes neither.
pub async fn plan(
    repository: &Repository,
    request: &RestoreRequest,
    tz: &jiff::tz::TimeZone,
) -> Result<RestorePlan> {
    let identity = request.options.identity.as_ref();
    let (manifest, replay) = match &request.source {
        RestoreSource::Backup(id) => (repository.resolve(id).await?, None),
        RestoreSource::PointInTime(point) => {
            let (full, mut replay) = pitr::plan(repository, point, identity, tz).await?;
            replay.gtid_domain = request.gtid_domain;
            (full, Some(replay))
        }
    };
    let databases = full::plan(&manifest, &request.options).await?;
    Ok(RestorePlan {
        manifest,
        replay,
        databases,
    })
}

/// Runs a plan in the order the module describes. A cancelled job stops its children, runs the
/// `after` hooks, and fails saying what state it left the target in.
///
/// The caller holds a shared repository lock from [`plan`] to the end, and runs both under the
/// guard's job ([`coffer_core::lock::LockGuard::job`]) so that a lost lock stops the restore like
/// a cancellation: `restore db` and the drill do.
pub async fn run(
    repository: &Repository,
    plan: &RestorePlan,
    options: &RestoreOptions,
    job: &JobContext,
    progress: Progress,
) -> Result<RestoreReport> {
    let manifest = &plan.manifest;
    let span = info_span!("restore", id = %manifest.id, target = %format!("{}:{}", options.target.host, options.target.port));
    async {
        full::require_full(manifest)?;
        // Nothing touches the target before every artifact is proven intact: the dump here,
        // the binlogs as they are fetched and checked for what the replay must not do.
        for record in &manifest.artifacts {
            pipeline::verify_stored(repository.storage(), record)
                .await
                .map_err(|e| e.context("refusing to restore, the target was not touched"))?;
        }
        info!(artifacts = manifest.artifacts.len(), "artifacts verified");
        let prepared = match &plan.replay {
            Some(replay) => {
                let rename = options
                    .rename_to
                    .as_ref()
                    .zip(manifest.databases.first())
                    .map(|(to, from)| (from.clone(), to.clone()));
                let mut prepared = pitr::prepare_replay(
                    repository,
                    replay,
                    options.identity.as_ref(),
                    &manifest.databases,
                    rename,
                )
                .await
                .map_err(|e| e.context("the target was not touched"))?;
                // The dump's load may itself write GTIDs: how the replay writes them is decided
                // (or refused) now, before anything is dropped or loaded.
                pitr::decide_gtids(&mut prepared, &options.target)
                    .await
                    .map_err(|e| e.context("the target was not touched"))?;
                Some(prepared)
            }
            None => None,
        };
        // Read again just before the first DROP: the target may have changed since the plan.
        let databases = full::plan(manifest, options).await?;
        let occupied: Vec<String> = databases
            .iter()
            .filter(|d| d.occupied())
            .map(|d| format!("{} ({})", d.to, d.holdings()))
            .collect();
        if !occupied.is_empty() && !options.drop_existing {
            return Err(Error::refused(format!(
                "target {}:{} already holds {}; restore elsewhere, use --database NAME, or --drop-existing to replace it",
                options.target.host,
                options.target.port,
                occupied.join(", ")
            )));
        }

        let started = Instant::now();
        let mut load_began = false;
        let result = async {
            run_hooks("before", &options.before, options.hook_timeout, &job.cancel).await?;
            load_began = true;
            full::load_dump(
                repository,
                manifest,
                options,
                &databases,
                &job.cancel,
                progress.clone(),
            )
            .await?;
            match &prepared {
                Some(prepared) => {
                    pitr::replay_binlogs(prepared, &options.target, &job.cancel, progress.clone())
                        .await
                        .map(Some)
                }
                None => Ok(None),
            }
        }
        .await;
        if load_began && let Err(e) = &result {
            full::mark_half_restored(options, manifest, &databases, e, job).await;
        }
        // The application goes back up whatever happened, a cancellation included: the after
        // hooks run under a handle of their own, bounded by their timeout.
        let after = run_hooks("after", &options.after, options.hook_timeout, &Cancel::new()).await;
        if let Some(reason) = job.cancel.reason() {
            let state = if result.is_ok() {
                "the restore had finished".to_string()
            } else {
                format!(
                    "the target {}:{} is half-restored: {} may hold part of the backup; rerun with --drop-existing to replace {}",
                    options.target.host,
                    options.target.port,
                    databases.iter().map(|d| d.to.as_str()).collect::<Vec<_>>().join(", "),
                    if databases.len() == 1 { "it" } else { "them" },
                )
            };
            let hooks = match &after {
                Ok(()) if options.after.is_empty() => String::new(),
                Ok(()) => "; the after hooks ran".to_string(),
                Err(e) => format!("; {e}"),
            };
            return Err(Error::new(
                ErrorKind::Interrupted,
                format!("{reason}: {state}{hooks}"),
            ));
        }
        let gtids = result?;
        after?;
        let seconds = started.elapsed().as_secs_f64();
        info!(bytes = progress.bytes(), seconds, "restore finished");
        Ok(RestoreReport {
            backup_id: manifest.id.clone(),
            target: format!("{}:{}", options.target.host, options.target.port),
            databases,
            bytes: progress.bytes(),
            seconds,
            gtids: gtids.as_ref().map(|g| g.gtids),
            last_gtid: gtids.and_then(|g| g.last_gtid),
        })
    }
    .instrument(span)
    .await
}

/// Runs each hook with the scrubbed environment (no secret of coffer's reaches it) in its own
/// process group, killed after `timeout` or when `cancel` fires.
async fn run_hooks(
    stage: &str,
    commands: &[String],
    timeout: std::time::Duration,
    cancel: &Cancel,
) -> Result<()> {
    for command in commands {
        info!(stage, command = %command, "running hook");
        let run = process::run_shell(command, &process::scrubbed_env(), timeout, cancel)
            .await
            .map_err(|e| Error::new(ErrorKind::Restore, format!("{stage} hook: {e}")))?;
        if !run.success() {
            return Err(Error::new(
                ErrorKind::Restore,
                format!("{stage} hook {command:?} failed: {}", run.describe()),
            ));
        }
    }
    Ok(())
}

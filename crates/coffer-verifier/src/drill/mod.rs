//! The recovery drill: restore a full backup into a sandbox, replay the archived binlogs after it,
//! and prove the runbook's checklist item by item (see [`crate::report::ChecklistItem`]).
//!
//! This module orchestrates; `target` owns the sandbox (managed or external, version check,
//! teardown, `--keep-sandbox`) and `checks` the items that inspect it (schema, data, app checks,
//! SQL probes).
//!
//! The order matters: the schema and the data are checked against the backup's expectations
//! right after the dump is loaded (the manifest describes the snapshot, not what the binlogs did
//! later), then the binlogs are replayed, then the application and its probes run against the
//! result. A failure in one item never stops the others from being reported; an item that cannot
//! run because an earlier step failed fails with that reason.

mod checks;
mod files;
mod target;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_core::cancel::Cancel;
use coffer_core::client::{self, DefaultsFile, Endpoint, Tool};
use coffer_core::config::{AppCheck, Config, DrillSandbox, SqlCheck};
use coffer_core::dump::{DUMP_OPTIONS, run_dump};
use coffer_core::job::JobContext;
use coffer_core::manifest::{BackupKind, Expectations, Manifest, new_backup_id};
use coffer_core::names;
use coffer_core::pipeline::Progress;
use coffer_core::process;
use coffer_core::repository::{LATEST, Repository};
use coffer_core::secret::Secret;
use coffer_core::{Error, Result};
use coffer_restore::RestoreOptions;
use coffer_restore::pitr::{self, ReplayPlan};
use jiff::Timestamp;
use sqlx::Row;
use tracing::{Instrument, info, info_span, warn};

use crate::report::{CHECKLIST, ChecklistItem, DrillReport, Item, Status};
use crate::sandbox::{Sandbox, SandboxOptions};

/// The server id of a managed drill sandbox (it writes no binlog; the id only has to be set).
const SANDBOX_SERVER_ID: u32 = 4_012_023_002;
/// The account the drill creates in a managed sandbox.
const SANDBOX_USER: &str = "coffer_drill";

/// What to drill.
#[derive(Default)]
pub struct DrillOptions {
    /// The full backup to restore; the newest when `None`.
    pub backup: Option<String>,
    /// Leave the sandbox running (and, for an external server, its databases in place).
    pub keep_sandbox: bool,
    /// age identity, for encrypted backups.
    pub identity: Option<age::x25519::Identity>,
}

/// A drill's result: its report (already stored, unless `saved` says otherwise) and, with
/// `keep_sandbox`, the sandbox still running.
pub struct DrillOutcome {
    /// The report.
    pub report: DrillReport,
    /// Whether storing the report in the repository worked.
    pub saved: Result<()>,
    /// The kept sandbox: dropping it tears it down.
    pub kept: Option<KeptSandbox>,
}

/// A sandbox left running for inspection.
pub struct KeptSandbox {
    /// Address and account.
    pub endpoint: Endpoint,
    /// The managed server (dropping it stops the server and removes its files).
    pub server: Option<Sandbox>,
    /// Restored databases, by their names in the sandbox.
    pub databases: Vec<String>,
}

/// Runs a drill of `config`'s repository. Errors only when there is nothing to drill (no such
/// backup); everything that goes wrong during the drill is a failed item in the report.
///
/// The drill holds a shared repository lock (`drill`) from choosing the backup to storing the
/// report, so no prune deletes what it restores; getting it waits at most `lock_wait` while a
/// prune holds the exclusive one (exit 7, naming the holder). A kept sandbox outlives the lock.
/// A lock lost half-way stops the drill like a cancellation (no report), and the error says so.
pub async fn run_drill(
    config: &Config,
    repository: &Arc<Repository>,
    job: &JobContext,
    options: DrillOptions,
    lock_wait: Duration,
) -> Result<DrillOutcome> {
    let guard = coffer_core::lock::acquire(
        repository,
        coffer_core::lock::LockKind::Shared,
        "drill",
        lock_wait,
        &job.clock,
        &job.cancel,
    )
    .await?;
    let locked = guard.job(job);
    let result = drill(config, repository, &locked, options).await;
    guard.finish(result).await
}

async fn drill(
    config: &Config,
    repository: &Repository,
    job: &JobContext,
    options: DrillOptions,
) -> Result<DrillOutcome> {
    let manifests = repository.list().await?;
    // `latest` (or no id) means the newest full backup, as for `backup show`.
    let full = repository
        .resolve(options.backup.as_deref().unwrap_or(LATEST))
        .await
        .map_err(|e| e.context("nothing to drill"))?;
    if full.kind != BackupKind::Full {
        return Err(Error::config(format!(
            "{} is a {} backup; a drill restores a full backup",
            full.id, full.kind
        )));
    }
    let started_at = job.clock.now();
    let id = new_backup_id_for_drill(started_at);
    let span = info_span!("drill", id = %id, backup = %full.id);
    async {
        let mut drill = Drill {
            config,
            repository,
            full: &full,
            manifests: &manifests,
            job,
            identity: options.identity,
            items: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let (report_parts, kept) = drill.run(options.keep_sandbox).await;
        // An interrupted drill proved nothing: its sandbox is gone (run tears it down), and no
        // verdict or report of it is made.
        if let Err(e) = job.cancel.check() {
            drop(kept);
            return Err(e.context(format!(
                "drill {id} of {} stopped; its sandbox was removed and no report was stored",
                full.id
            )));
        }
        let items: Vec<Item> = CHECKLIST
            .iter()
            .map(|name| {
                drill.items.remove(*name).unwrap_or_else(|| Item {
                    name: name.to_string(),
                    status: Status::Fail,
                    evidence: vec!["not reached".into()],
                    duration_ms: 0,
                })
            })
            .collect();
        let report = DrillReport {
            id: id.clone(),
            verdict: DrillReport::verdict_of(&items),
            backup_id: full.id.clone(),
            started_at,
            finished_at: job.clock.now(),
            recovery_time_seconds: report_parts.recovery_time,
            recovery_point_seconds: report_parts.recovery_point,
            replayed_to: report_parts.replayed_to,
            source_version: full.source.server_version.clone(),
            sandbox_version: report_parts.sandbox_version,
            sandbox: report_parts.sandbox,
            warnings: drill.warnings,
            items,
        };
        info!(verdict = ?report.verdict, "drill finished");
        let saved = report.save(repository, &config.timezone, &job.cancel).await;
        Ok(DrillOutcome {
            report,
            saved,
            kept,
        })
    }
    .instrument(span)
    .await
}

fn new_backup_id_for_drill(at: Timestamp) -> String {
    // Same shape as backup ids (time-sortable, key-safe), with `drill` as the kind.
    new_backup_id(BackupKind::Full, at).replacen("-full-", "-drill-", 1)
}

#[derive(Default)]
struct Parts {
    recovery_time: Option<f64>,
    recovery_point: Option<i64>,
    replayed_to: Option<String>,
    sandbox_version: Option<String>,
    sandbox: String,
}

struct Drill<'a> {
    config: &'a Config,
    repository: &'a Repository,
    full: &'a Manifest,
    manifests: &'a [Manifest],
    job: &'a JobContext,
    identity: Option<age::x25519::Identity>,
    items: BTreeMap<&'static str, Item>,
    warnings: Vec<String>,
}

/// The sandbox the drill restores into.
struct Target {
    endpoint: Endpoint,
    server: Option<Sandbox>,
    /// Backup database name → name in the sandbox.
    names: Vec<(String, String)>,
    external: bool,
}

impl Drill<'_> {
    fn record(
        &mut self,
        item: ChecklistItem,
        status: Status,
        evidence: Vec<String>,
        since: Instant,
    ) {
        let name = item.name();
        self.items.insert(
            name,
            Item {
                name: name.to_string(),
                status,
                evidence,
                duration_ms: since.elapsed().as_millis() as u64,
            },
        );
    }

    fn fail_rest(&mut self, why: &str) {
        for name in CHECKLIST {
            self.items.entry(name).or_insert_with(|| Item {
                name: name.to_string(),
                status: Status::Fail,
                evidence: vec![format!("not run: {why}")],
                duration_ms: 0,
            });
        }
    }

    async fn run(&mut self, keep: bool) -> (Parts, Option<KeptSandbox>) {
        let mut parts = Parts::default();
        let restore_clock = Instant::now();
        let target = match self.start_target().await {
            Ok(t) => t,
            Err(e) => {
                parts.sandbox = self.sandbox_label(None);
                self.record(
                    ChecklistItem::RestoreSuccessful,
                    Status::Fail,
                    vec![format!("the sandbox did not start: {e}")],
                    restore_clock,
                );
                self.fail_rest("no sandbox");
                return (parts, None);
            }
        };
        parts.sandbox = self.sandbox_label(Some(&target));
        parts.sandbox_version = self.check_versions(&target).await;
        // The recovery time starts with the restore, not with the sandbox.
        self.exercise(&target, &mut parts, Instant::now()).await;
        let kept = self.tear_down(target, keep).await;
        (parts, kept)
    }

    /// Restore, checks, replay, application: fills in the items.
    async fn exercise(&mut self, target: &Target, parts: &mut Parts, clock: Instant) {
        let mut evidence = Vec::new();
        let env = self.environment(target);
        // 1. The dump (its digest is verified inside, before the sandbox is touched).
        let options = RestoreOptions {
            target: target.endpoint.clone(),
            rename_to: None,
            drop_existing: target.external,
            identity: self.identity.clone(),
            before: Vec::new(),
            after: Vec::new(),
            hook_timeout: Duration::from_secs(600),
        };
        let replay = pitr::plan_to_newest(self.manifests, self.full);
        // Before touching anything, the binlogs are fetched (digests verified) and checked: no
        // change to databases the backup does not hold, and under a prefix no statement that
        // names the original database (it would write into the external server's own).
        let preparing = Instant::now();
        let mut prepared = None;
        if let Ok(Some(plan)) = &replay {
            let rename = match (target.external, target.names.as_slice()) {
                (true, [(from, to)]) => Some((from.clone(), to.clone())),
                _ => None,
            };
            match pitr::prepare_replay(
                self.repository,
                plan,
                self.identity.as_ref(),
                &self.full.databases,
                rename,
            )
            .await
            {
                Ok(p) => prepared = Some(p),
                Err(e) => {
                    self.record(
                        ChecklistItem::RestoreSuccessful,
                        Status::Fail,
                        vec![format!("nothing was restored: {e}")],
                        clock,
                    );
                    self.fail_rest("the restore was refused");
                    return;
                }
            }
        }
        let preparation = preparing.elapsed();
        let restore_started = Instant::now();
        let restored = self.restore_snapshot(target, &options).await;
        let mut recovery = preparation + restore_started.elapsed();
        match restored {
            Ok(seconds) => evidence.push(format!(
                "{} artifact(s) of {} verified (SHA-256) and the dump loaded in {seconds:.1} s",
                self.full.artifacts.len(),
                self.full.id
            )),
            Err(e) => {
                self.record(
                    ChecklistItem::RestoreSuccessful,
                    Status::Fail,
                    vec![format!("restoring {}: {e}", self.full.id)],
                    clock,
                );
                self.fail_rest("the restore failed");
                return;
            }
        }
        if !self.full.may_be_missing.is_empty() {
            evidence.push(format!(
                "the backup is incomplete (taken with allow_incomplete): it may be missing {}",
                self.full.may_be_missing.join(", ")
            ));
        }
        // Hooks that prepare the restored copy (or, in tests, damage it).
        for command in &self.config.drill.after_restore {
            match process::run_shell(command, &env, Duration::from_secs(600), &self.job.cancel)
                .await
            {
                Ok(run) if run.code == Some(0) => {
                    evidence.push(format!("after_restore `{command}`: exit 0"))
                }
                Ok(run) => evidence.push(format!(
                    "after_restore `{command}`: {} (ignored: checks will tell)",
                    run.describe()
                )),
                Err(e) => evidence.push(format!("after_restore `{command}`: {e}")),
            }
        }

        // 2. and 3. The snapshot, before any binlog touches it.
        let since = Instant::now();
        let (status, found) = self.check_schema(target).await;
        self.record(ChecklistItem::AllTablesPresent, status, found, since);
        let since = Instant::now();
        let (mut counts_status, mut counts) = self.check_data(target).await;

        // The binlogs after the backup, to the newest archived point.
        let replayed = match replay {
            Ok(Some(plan)) => match self
                .replay(
                    target,
                    prepared.as_ref().expect("prepared with the plan"),
                    &plan,
                )
                .await
            {
                Ok((line, took)) => {
                    recovery += took;
                    evidence.push(line);
                    let last = plan.files.last().map_or("", |f| f.file.as_str());
                    parts.replayed_to = Some(format!("{last}:{}", plan.stop_position));
                    match self.newest_archived_beyond(last) {
                        None => counts.push(format!(
                            "after replay: the sandbox reached {last}:{}, the archive's last position ({})",
                            plan.stop_position,
                            plan.last_gtid.as_deref().unwrap_or("no GTID")
                        )),
                        Some(newest) => {
                            counts_status = Status::Fail;
                            counts.push(format!(
                                "after replay: the sandbox reached {last}:{} but the archive goes on to {newest}: a gap in the binlog archive stops the replay (see coffer binlog window)",
                                plan.stop_position
                            ));
                        }
                    }
                    parts.recovery_point = plan
                        .last_commit_time
                        .map(|t| self.job.clock.now().as_second() - t);
                    true
                }
                Err(e) => {
                    evidence.push(format!("replaying binlogs: {e}"));
                    counts.push("after replay: the replay did not reach the archive's end".into());
                    counts_status = Status::Fail;
                    false
                }
            },
            Ok(None) => {
                evidence.push("no archived binlog after the backup: nothing to replay".into());
                counts.push(
                    "after replay: nothing to replay, the sandbox holds the backup's snapshot"
                        .into(),
                );
                parts.recovery_point =
                    Some(self.job.clock.now().as_second() - self.full.started_at.as_second());
                true
            }
            Err(e) => {
                evidence.push(format!("planning the binlog replay: {e}"));
                false
            }
        };
        self.record(ChecklistItem::DataCountsMatch, counts_status, counts, since);
        if replayed {
            // The restore and the replay, not the checks between them.
            parts.recovery_time = Some(recovery.as_secs_f64());
        }
        let restore_status = if replayed { Status::Pass } else { Status::Fail };
        self.record(
            ChecklistItem::RestoreSuccessful,
            restore_status,
            evidence,
            clock,
        );

        let since = Instant::now();
        let (status, evidence) =
            files::check_files(self.config, self.repository, self.identity.as_ref()).await;
        self.record(ChecklistItem::FilesAccessible, status, evidence, since);

        let since = Instant::now();
        let (status, evidence) = self.check_app(&env).await;
        self.record(ChecklistItem::ApplicationStarts, status, evidence, since);
        let since = Instant::now();
        let (status, evidence) = self.check_sql(target).await;
        self.record(ChecklistItem::CriticalFeaturesWork, status, evidence, since);
    }

    /// The newest archived binlog of the backup's server after `last`, when there is one: the
    /// replay stopped at a gap before it.
    fn newest_archived_beyond(&self, last: &str) -> Option<String> {
        let last_sequence = coffer_core::archive::binlog_sequence(last)?;
        coffer_core::archive::archived_files(self.manifests)
            .into_iter()
            .filter(|f| f.server_id == self.full.source.server_id && f.sequence > last_sequence)
            .max_by_key(|f| f.sequence)
            .map(|f| f.file)
    }

    /// Loads the full backup. On an external server each database goes under its prefixed name
    /// (single-database backups: the rename is how the prefix is applied).
    async fn restore_snapshot(&self, target: &Target, options: &RestoreOptions) -> Result<f64> {
        let mut options = options.clone();
        if target.external {
            let [(_, to)] = target.names.as_slice() else {
                return Err(Error::config(format!(
                    "an external drill sandbox restores single-database backups; {} holds {}",
                    self.full.id,
                    self.full.databases.len()
                )));
            };
            options.rename_to = Some(to.clone());
        }
        let plan = coffer_restore::RestorePlan {
            manifest: self.full.clone(),
            replay: None,
            databases: coffer_restore::full::plan(self.full, &options).await?,
        };
        coffer_restore::restore::run(
            self.repository,
            &plan,
            &options,
            self.job,
            Progress::default(),
        )
        .await
        .map(|r| r.seconds)
    }

    async fn replay(
        &self,
        target: &Target,
        prepared: &pitr::PreparedReplay,
        plan: &ReplayPlan,
    ) -> Result<(String, Duration)> {
        let started = Instant::now();
        pitr::replay_binlogs(
            prepared,
            &target.endpoint,
            &self.job.cancel,
            Progress::default(),
        )
        .await?;
        let first = plan.files.first().map_or("", |f| f.file.as_str());
        let last = plan.files.last().map_or("", |f| f.file.as_str());
        let took = started.elapsed();
        Ok((
            format!(
                "{} binlog artifact(s) verified (SHA-256) and replayed from {first}:{} to {last}:{} in {:.1} s",
                plan.files.iter().map(|f| f.artifacts.len()).sum::<usize>(),
                plan.start_position,
                plan.stop_position,
                took.as_secs_f64()
            ),
            took,
        ))
    }
}

//! The recovery drill: restore a full backup into a sandbox, replay the archived binlogs after it,
//! and prove the runbook's checklist item by item (see [`crate::report::CHECKLIST`]).
//!
//! The order matters: the schema and the data are checked against the backup's expectations
//! right after the dump is loaded (the manifest describes the snapshot, not what the binlogs did
//! later), then the binlogs are replayed, then the application and its probes run against the
//! result. A failure in one item never stops the others from being reported; an item that cannot
//! run because an earlier step failed fails with that reason.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use coffer_core::client::{self, DefaultsFile, Endpoint, Tool};
use coffer_core::config::{AppCheck, Config, DrillSandbox, SqlCheck};
use coffer_core::dump::{DUMP_OPTIONS, run_dump};
use coffer_core::manifest::{BackupKind, Expectations, Manifest, new_backup_id};
use coffer_core::names;
use coffer_core::pipeline::Progress;
use coffer_core::process;
use coffer_core::repository::Repository;
use coffer_core::secret::Secret;
use coffer_core::{Error, Result};
use coffer_restore::RestoreOptions;
use coffer_restore::pitr::{self, ReplayPlan};
use jiff::Timestamp;
use sqlx::Row;
use tracing::{Instrument, info, info_span, warn};

use crate::report::{CHECKLIST, DrillReport, Item, Status};
use crate::sandbox::{Sandbox, SandboxOptions};

/// The server id of a managed drill sandbox (it writes no binlog; the id only has to be set).
const SANDBOX_SERVER_ID: u32 = 4_012_023_002;
/// The account the drill creates in a managed sandbox.
const SANDBOX_USER: &str = "coffer_drill";
/// Why "files accessible" is skipped.
const FILES_SKIPPED: &str = "coffer does not back up files yet: nothing to check";

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
pub async fn run_drill(
    config: &Config,
    repository: &Repository,
    options: DrillOptions,
) -> Result<DrillOutcome> {
    let manifests = repository.list().await?;
    // `latest` means the newest full backup, as for `backup show`.
    let full = match options.backup.as_deref().filter(|id| *id != "latest") {
        Some(id) => repository.manifest(id).await?,
        None => coffer_core::manifest::newest_full(&manifests)
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!(
                    "no full backup in {} to drill",
                    repository.storage().location()
                ))
            })?,
    };
    if full.kind != BackupKind::Full {
        return Err(Error::config(format!(
            "{} is a {} backup; a drill restores a full backup",
            full.id, full.kind
        )));
    }
    let started_at = Timestamp::now();
    let id = new_backup_id_for_drill(started_at);
    let span = info_span!("drill", id = %id, backup = %full.id);
    async {
        let mut drill = Drill {
            config,
            repository,
            full: &full,
            manifests: &manifests,
            identity: options.identity,
            items: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let (report_parts, kept) = drill.run(options.keep_sandbox).await;
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
            finished_at: Timestamp::now(),
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
        let saved = report.save(repository, &config.timezone).await;
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
        name: &'static str,
        status: Status,
        evidence: Vec<String>,
        since: Instant,
    ) {
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
        self.record(
            CHECKLIST[3],
            Status::Skipped,
            vec![FILES_SKIPPED.into()],
            Instant::now(),
        );
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
                    CHECKLIST[0],
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

    fn sandbox_label(&self, target: Option<&Target>) -> String {
        match (&self.config.drill.sandbox, target) {
            (DrillSandbox::Managed, Some(t)) => {
                format!("managed mariadbd on 127.0.0.1:{}", t.endpoint.port)
            }
            (DrillSandbox::Managed, None) => "managed mariadbd".into(),
            (
                DrillSandbox::External {
                    host,
                    port,
                    database_prefix,
                    ..
                },
                _,
            ) => format!("external {host}:{port} (databases prefixed {database_prefix})"),
        }
    }

    async fn start_target(&self) -> Result<Target> {
        match &self.config.drill.sandbox {
            DrillSandbox::Managed => {
                let password = random_password()?;
                let pw = password.clone();
                let (server, endpoint) = tokio::task::spawn_blocking(move || {
                    let sandbox = Sandbox::start(SandboxOptions {
                        server_id: SANDBOX_SERVER_ID,
                        log_bin: false,
                        ..Default::default()
                    })?;
                    let endpoint =
                        sandbox.create_user(SANDBOX_USER, &pw, "ALL PRIVILEGES ON *.*")?;
                    // The install's password-less accounts reachable over TCP would let any
                    // local user read the restored data: only root over the private socket stays.
                    sandbox.sql(
                        "DELETE FROM mysql.global_priv WHERE User = '' OR (User = 'root' AND Host <> 'localhost'); FLUSH PRIVILEGES;",
                    )?;
                    Ok::<_, crate::sandbox::SandboxError>((sandbox, endpoint))
                })
                .await
                .map_err(|e| Error::other(format!("sandbox task failed: {e}")))?
                .map_err(|e| Error::other(e.to_string()))?;
                info!(port = endpoint.port, "sandbox started");
                Ok(Target {
                    endpoint,
                    server: Some(server),
                    names: self
                        .full
                        .databases
                        .iter()
                        .map(|d| (d.clone(), d.clone()))
                        .collect(),
                    external: false,
                })
            }
            DrillSandbox::External {
                host,
                port,
                user,
                password,
                database_prefix,
                tls,
            } => Ok(Target {
                endpoint: Endpoint {
                    host: host.clone(),
                    port: *port,
                    user: user.clone(),
                    password: password.clone(),
                    tls: tls.clone(),
                },
                server: None,
                names: self
                    .full
                    .databases
                    .iter()
                    .map(|d| (d.clone(), format!("{database_prefix}{d}")))
                    .collect(),
                external: true,
            }),
        }
    }

    async fn check_versions(&mut self, target: &Target) -> Option<String> {
        let version = match client::connect(&target.endpoint).await {
            Ok(mut conn) => sqlx::query("SELECT VERSION()")
                .fetch_one(&mut conn)
                .await
                .ok()
                .and_then(|row| row.try_get::<String, _>(0).ok()),
            Err(_) => None,
        }?;
        // MariaDB's release series (10.6, 10.11, 11.4) are its major versions.
        let major = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
        let flavour = |v: &str| v.to_ascii_lowercase().contains("mariadb");
        let source = &self.full.source.server_version;
        if major(source) != major(&version) || flavour(source) != flavour(&version) {
            let warning = format!(
                "the sandbox runs {version} but the backup came from {source}: a restore onto the production version may behave differently"
            );
            warn!("{warning}");
            self.warnings.push(warning);
        }
        Some(version)
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
                        CHECKLIST[0],
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
                    CHECKLIST[0],
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
            match process::run_shell(command, &env, Duration::from_secs(600)).await {
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
        self.record(CHECKLIST[1], status, found, since);
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
                        .map(|t| Timestamp::now().as_second() - t);
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
                    Some(Timestamp::now().as_second() - self.full.started_at.as_second());
                true
            }
            Err(e) => {
                evidence.push(format!("planning the binlog replay: {e}"));
                false
            }
        };
        self.record(CHECKLIST[2], counts_status, counts, since);
        if replayed {
            // The restore and the replay, not the checks between them.
            parts.recovery_time = Some(recovery.as_secs_f64());
        }
        let restore_status = if replayed { Status::Pass } else { Status::Fail };
        self.record(CHECKLIST[0], restore_status, evidence, clock);

        self.record(
            CHECKLIST[3],
            Status::Skipped,
            vec![FILES_SKIPPED.into()],
            Instant::now(),
        );

        let since = Instant::now();
        let (status, evidence) = self.check_app(&env).await;
        self.record(CHECKLIST[4], status, evidence, since);
        let since = Instant::now();
        let (status, evidence) = self.check_sql(target).await;
        self.record(CHECKLIST[5], status, evidence, since);
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
        coffer_restore::restore_full(
            self.repository,
            self.full,
            &options,
            None,
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
        pitr::replay_binlogs(prepared, &target.endpoint, Progress::default()).await?;
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

    /// Every table, view, routine, trigger and event of the backup exists in the sandbox.
    async fn check_schema(&self, target: &Target) -> (Status, Vec<String>) {
        let mut conn = match client::connect(&target.endpoint).await {
            Ok(c) => c,
            Err(e) => {
                return (
                    Status::Fail,
                    vec![format!("connecting to the sandbox: {e}")],
                );
            }
        };
        let mut missing = Vec::new();
        let mut present = Vec::new();
        for db in &self.full.expectations.databases {
            let name = sandbox_name(&target.names, &db.name);
            let queries: [(&str, &str, Vec<&String>); 5] = [
                (
                    "table",
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
                    db.tables.iter().map(|t| &t.name).collect(),
                ),
                (
                    "view",
                    "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?",
                    db.views.iter().collect(),
                ),
                (
                    "routine",
                    "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?",
                    db.routines.iter().collect(),
                ),
                (
                    "trigger",
                    "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?",
                    db.triggers.iter().collect(),
                ),
                (
                    "event",
                    "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?",
                    db.events.iter().collect(),
                ),
            ];
            for (kind, query, expected) in queries {
                let rows = match sqlx::query(query).bind(name).fetch_all(&mut conn).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        return (
                            Status::Fail,
                            vec![format!("listing {kind}s of {name}: {e}")],
                        );
                    }
                };
                let found: std::collections::BTreeSet<String> = rows
                    .iter()
                    .filter_map(|r| r.try_get::<String, _>(0).ok())
                    .collect();
                let (here, gone): (Vec<&String>, Vec<&String>) =
                    expected.iter().partition(|n| found.contains(n.as_str()));
                missing.extend(gone.iter().map(|n| format!("{}.{n} ({kind})", db.name)));
                if !here.is_empty() {
                    present.push(format!(
                        "{} {kind}(s) of {}: {}",
                        here.len(),
                        db.name,
                        here.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        if missing.is_empty() {
            (Status::Pass, present)
        } else {
            let mut evidence = vec![format!("missing in the sandbox: {}", missing.join(", "))];
            evidence.extend(present);
            (Status::Fail, evidence)
        }
    }

    /// Dumps the restored databases the way backups are dumped and compares row counts and data
    /// digests with the manifest's expectations.
    async fn check_data(&self, target: &Target) -> (Status, Vec<String>) {
        let tool = match Tool::find(&["mariadb-dump", "mysqldump"]) {
            Ok(t) => t,
            Err(e) => return (Status::Fail, vec![e.to_string()]),
        };
        let defaults = match DefaultsFile::new(&target.endpoint) {
            Ok(d) => d,
            Err(e) => return (Status::Fail, vec![e.to_string()]),
        };
        let mut args = vec![defaults.arg()];
        args.extend(DUMP_OPTIONS.iter().map(|o| o.to_string()));
        // `--` ends the options: a database may be named `-x`.
        args.extend(["--databases".into(), "--".into()]);
        args.extend(target.names.iter().map(|(_, to)| to.clone()));
        let stall = self.config.stall_timeout;
        let facts = tokio::task::spawn_blocking(move || {
            let facts = run_dump(&tool.path, &args, &mut std::io::sink(), stall);
            drop(defaults);
            facts
        })
        .await;
        let facts = match facts {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return (Status::Fail, vec![format!("dumping the sandbox: {e}")]),
            Err(e) => return (Status::Fail, vec![format!("dump task failed: {e}")]),
        };
        compare_data(&self.full.expectations, &facts.expectations, &target.names)
    }

    /// The variables app checks and hooks see: a few of coffer's own (`PATH`, `HOME`, locale),
    /// the configured `[drill.env]` over the defaults, then the sandbox's address and account,
    /// which nothing can override (an app check must never reach production).
    fn environment(&self, target: &Target) -> Vec<(String, String)> {
        // Cloud credentials and coffer's own secrets stay out of the application's reach.
        let mut env = process::scrubbed_env();
        env.extend(
            self.config
                .drill
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        env.extend([
            ("DB_CONNECTION".to_string(), "mysql".to_string()),
            ("DB_HOST".to_string(), target.endpoint.host.clone()),
            ("DB_PORT".to_string(), target.endpoint.port.to_string()),
            (
                "DB_DATABASE".to_string(),
                target
                    .names
                    .first()
                    .map(|(_, to)| to.clone())
                    .unwrap_or_default(),
            ),
            ("DB_USERNAME".to_string(), target.endpoint.user.clone()),
            (
                "DB_PASSWORD".to_string(),
                target.endpoint.password.expose().to_string(),
            ),
        ]);
        env
    }

    async fn check_app(&self, env: &[(String, String)]) -> (Status, Vec<String>) {
        check_commands(&self.config.drill.app_checks, env).await
    }

    async fn check_sql(&self, target: &Target) -> (Status, Vec<String>) {
        let checks = &self.config.drill.sql_checks;
        if checks.is_empty() {
            return (
                Status::Skipped,
                vec!["no [[drill.sql_checks]] configured".into()],
            );
        }
        let database = target
            .names
            .first()
            .map(|(_, to)| to.clone())
            .unwrap_or_default();
        let mut status = Status::Pass;
        let mut evidence = Vec::new();
        for check in checks {
            let (ok, line) = run_sql_check(&target.endpoint, &database, check).await;
            if !ok {
                status = Status::Fail;
            }
            evidence.push(line);
        }
        (status, evidence)
    }

    async fn tear_down(&self, target: Target, keep: bool) -> Option<KeptSandbox> {
        let databases: Vec<String> = target.names.iter().map(|(_, to)| to.clone()).collect();
        if keep {
            return Some(KeptSandbox {
                endpoint: target.endpoint,
                server: target.server,
                databases,
            });
        }
        if target.external {
            // Only the prefixed names this drill wrote.
            match client::connect(&target.endpoint).await {
                Ok(mut conn) => {
                    for db in &databases {
                        if let Err(e) = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS {}",
                            names::quote_ident(db)
                        ))
                        .execute(&mut conn)
                        .await
                        {
                            warn!(database = %db, error = %e, "dropping the drill's database");
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "the drill's databases on the external server are left behind")
                }
            }
        }
        if let Some(server) = target.server {
            // Stopping waits for mariadbd: off the async threads.
            let _ = tokio::task::spawn_blocking(move || drop(server)).await;
            info!("sandbox removed");
        }
        None
    }
}

/// The sandbox name of a backup database.
fn sandbox_name<'n>(names: &'n [(String, String)], backup_name: &'n str) -> &'n str {
    names
        .iter()
        .find(|(from, _)| from == backup_name)
        .map_or(backup_name, |(_, to)| to.as_str())
}

/// Compares the expectations read back from the sandbox with the manifest's.
fn compare_data(
    recorded: &Expectations,
    found: &Expectations,
    names: &[(String, String)],
) -> (Status, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for db in &recorded.databases {
        let sandbox = sandbox_name(names, &db.name);
        let restored = found.databases.iter().find(|d| d.name == sandbox);
        for table in &db.tables {
            let qualified = format!("{}.{}", db.name, table.name);
            match restored.and_then(|d| d.tables.iter().find(|t| t.name == table.name)) {
                None => problems.push(format!("{qualified}: no data in the sandbox (table missing)")),
                Some(t) if t.rows != table.rows => problems.push(format!(
                    "{qualified}: {} rows in the sandbox, {} recorded in the manifest",
                    t.rows, table.rows
                )),
                Some(t) if t.sha256 != table.sha256 => problems.push(format!(
                    "{qualified}: data digest {} in the sandbox, {} recorded in the manifest ({} rows each)",
                    short(&t.sha256),
                    short(&table.sha256),
                    t.rows
                )),
                Some(t) => checked.push(format!("{qualified} {} rows", t.rows)),
            }
        }
    }
    let summary = format!(
        "{} table(s): row count and SHA-256 equal to the manifest: {}",
        checked.len(),
        checked.join(", ")
    );
    if problems.is_empty() {
        (Status::Pass, vec![summary])
    } else {
        problems.push(summary);
        (Status::Fail, problems)
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

async fn check_commands(checks: &[AppCheck], env: &[(String, String)]) -> (Status, Vec<String>) {
    if checks.is_empty() {
        return (
            Status::Skipped,
            vec!["no [[drill.app_checks]] configured".into()],
        );
    }
    let mut status = Status::Pass;
    let mut evidence = Vec::new();
    for check in checks {
        let name = check.name.as_deref().unwrap_or(&check.command);
        let line = match process::run_shell(
            &check.command,
            env,
            Duration::from_secs(check.timeout_seconds),
        )
        .await
        {
            Ok(run) if run.timed_out.is_none() && run.code == Some(check.expect_exit) => {
                format!(
                    "{name}: ok, exit {} in {:.1} s",
                    check.expect_exit, run.seconds
                )
            }
            Ok(run) => {
                status = Status::Fail;
                format!(
                    "{name}: {} (expected exit {})",
                    run.describe(),
                    check.expect_exit
                )
            }
            Err(e) => {
                status = Status::Fail;
                format!("{name}: {e}")
            }
        };
        evidence.push(line);
    }
    (status, evidence)
}

/// Runs one probe with the `mariadb` client (`-N -B`: rows on lines, columns tab-separated, the
/// form `expect` is written in).
async fn run_sql_check(endpoint: &Endpoint, database: &str, check: &SqlCheck) -> (bool, String) {
    let name = check.name.as_deref().unwrap_or(&check.query);
    let result = async {
        let tool = Tool::find(&["mariadb", "mysql"])?;
        let defaults = DefaultsFile::new(endpoint)?;
        let output = process::async_tool_command(&tool.path, false)
            .arg(defaults.arg())
            .args(["-N", "-B"])
            .arg(format!("--database={database}"))
            .args(["-e", &check.query])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::other(format!("cannot start {}: {e}", tool.path.display())))?;
        drop(defaults);
        if !output.status.success() {
            return Err(Error::database(process::tail_lines(&output.stderr, 3)));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string())
    }
    .await;
    match (result, &check.expect, check.min_rows) {
        (Err(e), _, _) => (false, format!("{name}: the query failed: {e}")),
        (Ok(actual), Some(expect), _) if actual == expect.trim_end() => {
            (true, format!("{name}: ok, result {actual:?}"))
        }
        (Ok(actual), Some(expect), _) => (
            false,
            format!("{name}: result {actual:?}, expected {expect:?}"),
        ),
        (Ok(actual), None, Some(min)) => {
            let rows = actual.lines().filter(|l| !l.is_empty()).count() as u64;
            if rows >= min {
                (true, format!("{name}: ok, {rows} row(s) (at least {min})"))
            } else {
                (
                    false,
                    format!("{name}: {rows} row(s), expected at least {min}"),
                )
            }
        }
        (Ok(_), None, None) => (false, format!("{name}: neither expect nor min_rows")),
    }
}

/// A random password for the managed sandbox's account (hex of 18 bytes from the OS).
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 18];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::other(format!("reading /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl KeptSandbox {
    /// A line telling where the kept sandbox is (the password is never printed).
    pub fn describe(&self) -> String {
        format!(
            "sandbox kept at {}:{} (user {}; databases {})",
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.user,
            self.databases.join(", ")
        )
    }

    /// The account's password, for writing to a 0600 file.
    pub fn password(&self) -> &Secret {
        &self.endpoint.password
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::manifest::{DatabaseExpectations, TableExpectation};

    fn expectations(rows: u64, sha: &str) -> Expectations {
        Expectations {
            databases: vec![DatabaseExpectations {
                name: "app".into(),
                tables: vec![TableExpectation {
                    name: "invoices".into(),
                    rows,
                    sha256: sha.into(),
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn data_comparison_names_the_table_and_both_numbers() {
        let names = vec![("app".to_string(), "app".to_string())];
        let (status, evidence) =
            compare_data(&expectations(10, "aa"), &expectations(10, "aa"), &names);
        assert_eq!(status, Status::Pass);
        assert!(evidence[0].contains("app.invoices 10 rows"));
        let (status, evidence) =
            compare_data(&expectations(11, "aa"), &expectations(10, "aa"), &names);
        assert_eq!(status, Status::Fail);
        assert!(
            evidence[0].contains("app.invoices: 10 rows in the sandbox, 11 recorded"),
            "{evidence:?}"
        );
        let (status, evidence) =
            compare_data(&expectations(10, "aa"), &expectations(10, "bb"), &names);
        assert_eq!(status, Status::Fail);
        assert!(evidence[0].contains("digest"), "{evidence:?}");
    }

    #[tokio::test]
    async fn a_command_that_overruns_is_killed_with_its_children() {
        let run = process::run_shell(
            "echo started; sleep 30 & sleep 30",
            &[],
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert_eq!(run.timed_out, Some(Duration::from_millis(300)));
        assert!(run.seconds < 10.0);
        assert!(run.output.contains("started"));
    }
}

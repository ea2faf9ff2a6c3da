//! `coffer restore db`.

use std::io::IsTerminal;

use anyhow::Result;
use coffer_core::ErrorKind;
use coffer_core::client::Endpoint;
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::pipeline::Progress;
use coffer_core::repository::Repository;
use coffer_restore::pitr::{self, PointInTime};
use coffer_restore::{RestoreOptions, RestorePlan, RestoreReport, RestoreRequest, RestoreSource};

use super::{open_repository, read_identity};
use crate::cli::RestoreDbArgs;
use crate::{exit, output};

/// `restore db`.
pub async fn run_db(config: &Config, job: &JobContext, args: RestoreDbArgs) -> Result<u8> {
    let mut target = Endpoint::from(&config.restore).with_stall_timeout(config.stall_timeout);
    if let Some(spec) = &args.target {
        let (host, port) = spec
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| {
                coffer_core::Error::config(format!("--target {spec:?} is not HOST:PORT"))
            })?;
        target.host = host.trim_matches(['[', ']']).to_string();
        target.port = port;
    }
    let identity = args
        .identity_file
        .as_deref()
        .map(read_identity)
        .transpose()?;
    let repository = std::sync::Arc::new(open_repository(config).await?);
    let tz = match &args.tz {
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
            coffer_core::Error::config(format!("--tz {name:?} is not an IANA time zone"))
        })?,
        None => config.timezone.clone(),
    };
    let point = if let Some(at) = &args.at {
        Some(PointInTime::Time(pitr::parse_at(at, &tz)?))
    } else if let Some(spec) = &args.at_position {
        let (file, position) = spec
            .rsplit_once(':')
            .and_then(|(f, p)| Some((f.to_string(), p.parse::<u64>().ok()?)))
            .ok_or_else(|| {
                coffer_core::Error::config(format!("--at-position {spec:?} is not FILE:POS"))
            })?;
        Some(PointInTime::Position { file, position })
    } else {
        args.at_gtid.clone().map(PointInTime::Gtid)
    };
    let source = match &point {
        Some(point) => RestoreSource::PointInTime(point.clone()),
        None if args.latest => RestoreSource::Backup(coffer_core::repository::LATEST.into()),
        None => RestoreSource::Backup(
            args.backup
                .clone()
                .expect("clap requires one of --backup, --latest, --at*"),
        ),
    };
    let options = RestoreOptions {
        target,
        rename_to: args.database.clone(),
        drop_existing: args.drop_existing,
        identity,
        before: config.restore.before.clone(),
        after: config.restore.after.clone(),
        hook_timeout: config.restore.hook_timeout,
    };
    let request = RestoreRequest {
        source,
        options,
        gtid_domain: config.restore.gtid_domain,
    };
    if args.dry_run {
        // Only reads and changes nothing: no lock, like `backup list`.
        let plan = coffer_restore::restore::plan(&repository, &request, &tz).await?;
        return dry_run(&args, &plan, &request.options, point.as_ref(), &tz).await;
    }
    // From the plan to the end under the shared lock: no prune deletes the backup or the
    // binlogs chosen, and a lock lost half-way stops the restore like a cancellation.
    let guard = coffer_core::lock::acquire(
        &repository,
        coffer_core::lock::LockKind::Shared,
        "restore",
        args.lock.or_config(config),
        &job.clock,
        &job.cancel,
    )
    .await?;
    let locked = guard.job(job);
    let result = restore_locked(&repository, &request, &tz, &args, &locked).await;
    let report = guard.finish(result).await?;
    if args.output.json {
        output::json(&report)?;
    } else {
        let names: Vec<String> = report
            .databases
            .iter()
            .map(|d| format!("{} -> {}", d.from, d.to))
            .collect();
        println!(
            "restored backup {} into {} ({}): {} of SQL in {:.1} s",
            report.backup_id,
            report.target,
            names.join(", "),
            output::bytes(report.bytes),
            report.seconds
        );
        match report.gtids {
            Some(pitr::GtidHandling::Kept) => println!(
                "GTIDs kept (the source's own); last written: {}",
                report.last_gtid.as_deref().unwrap_or("-")
            ),
            Some(pitr::GtidHandling::Domain(n)) => println!(
                "GTIDs renumbered into domain {n} ([restore] gtid_domain); last written: {}",
                report.last_gtid.as_deref().unwrap_or("-")
            ),
            None => {}
        }
    }
    Ok(exit::OK)
}

/// The restore proper, run under the lock: the plan, the confirmation, the restore.
async fn restore_locked(
    repository: &Repository,
    request: &RestoreRequest,
    tz: &jiff::tz::TimeZone,
    args: &RestoreDbArgs,
    job: &JobContext,
) -> coffer_core::Result<RestoreReport> {
    let plan = coffer_restore::restore::plan(repository, request, tz).await?;
    let options = &request.options;
    let occupied = plan.occupied();
    if !occupied.is_empty() && args.drop_existing && !args.yes {
        confirm(&occupied, &options.target)?;
    }
    let progress = Progress::default();
    let spinner = output::Spinner::start("restoring", progress.clone());
    let result = coffer_restore::restore::run(repository, &plan, options, job, progress).await;
    if let Some(spinner) = spinner {
        spinner.finish();
    }
    result.map_err(|e| e.context("restore failed"))
}

/// `--dry-run`: what would be restored where, how GTIDs would be written, what the target holds.
async fn dry_run(
    args: &RestoreDbArgs,
    plan: &RestorePlan,
    options: &RestoreOptions,
    point: Option<&PointInTime>,
    tz: &jiff::tz::TimeZone,
) -> Result<u8> {
    let (manifest, replay) = (&plan.manifest, &plan.replay);
    // How the replay would write GTIDs, from the target's state now (or why it is refused).
    let gtids = match replay {
        Some(replay) => Some(match pitr::preview_gtids(replay, &options.target).await {
            Ok(g) => g.to_string(),
            Err(e) if matches!(e.kind(), ErrorKind::Refused | ErrorKind::Config) => {
                format!("refused: {e}")
            }
            Err(e) => return Err(e.into()),
        }),
        None => None,
    };
    if args.output.json {
        output::json(&serde_json::json!({
            "backup_id": manifest.id,
            "target": format!("{}:{}", options.target.host, options.target.port),
            "databases": plan.databases,
            "drop_existing": options.drop_existing,
            "replay": replay,
            "gtids": gtids,
        }))?;
    } else {
        println!(
            "would restore backup {} ({}) into {}",
            manifest.id,
            output::local_time(manifest.started_at, tz),
            options.target
        );
        if let Some(replay) = replay {
            let names: Vec<&str> = replay.files.iter().map(|f| f.file.as_str()).collect();
            println!(
                "then replay binlogs {} from position {} to position {} of the last",
                names.join(", "),
                replay.start_position,
                replay.stop_position
            );
            if let Some(PointInTime::Time(at)) = point {
                println!(
                    "target: {} = {} UTC",
                    output::local_time(*at, tz),
                    at.strftime("%Y-%m-%d %H:%M:%S")
                );
            }
            match gtids.as_deref() {
                Some("kept") => println!("GTIDs: kept (the source's own)"),
                Some(other) => println!("GTIDs: {other}"),
                None => {}
            }
            if let Some(commit) = replay
                .last_commit_time
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
            {
                println!(
                    "last transaction replayed: {} committed {} ({} UTC)",
                    replay.last_gtid.as_deref().unwrap_or("-"),
                    output::local_time(commit, tz),
                    commit.strftime("%Y-%m-%d %H:%M:%S")
                );
            }
        }
        for db in &plan.databases {
            let state = match (db.occupied(), options.drop_existing) {
                (false, _) => "empty or absent".to_string(),
                (true, true) => {
                    format!("holds {}: would be DROPPED and replaced", db.holdings())
                }
                (true, false) => {
                    format!("holds {}: the restore would be REFUSED", db.holdings())
                }
            };
            println!("  {} -> {} ({state})", db.from, db.to);
        }
    }
    Ok(exit::OK)
}

/// Asks the operator to type the names of the databases about to be dropped.
fn confirm(occupied: &[&str], target: &Endpoint) -> coffer_core::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(coffer_core::Error::refused(format!(
            "--drop-existing would drop {} on {}:{}: add --yes to confirm when there is no terminal",
            occupied.join(", "),
            target.host,
            target.port
        )));
    }
    let expected = occupied.join(" ");
    eprint!(
        "This DROPS {expected} on {}:{} and replaces it with the backup. Type \"{expected}\" to go on: ",
        target.host, target.port
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| coffer_core::Error::other(format!("reading the confirmation: {e}")))?;
    if answer.trim() != expected {
        return Err(coffer_core::Error::refused(
            "not confirmed; nothing was changed",
        ));
    }
    Ok(())
}

//! `coffer drill run` and `coffer drill history`.

use std::io::Write;

use anyhow::{Context, Result};
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_verifier::{DrillOptions, DrillReport, Verdict, run_drill};

use super::{open_repository, read_identity};
use crate::cli::DrillRunArgs;
use crate::{exit, output};

/// Runs a drill, prints its report (Markdown, or the JSON with `--json`), exit 10 on a failed item.
pub async fn run(config: &Config, job: &JobContext, args: DrillRunArgs) -> Result<u8> {
    let repository = std::sync::Arc::new(open_repository(config).await?);
    let identity = match &args.identity_file {
        Some(path) => Some(read_identity(path)?),
        None => None,
    };
    let outcome = run_drill(
        config,
        &repository,
        job,
        DrillOptions {
            backup: args.backup.clone(),
            keep_sandbox: args.keep_sandbox,
            identity,
        },
        args.lock.or_config(config),
    )
    .await?;
    let report = &outcome.report;
    if args.output.json {
        output::json(report)?;
    } else {
        print!("{}", report.to_markdown(&config.timezone));
    }
    if let Err(e) = &outcome.saved {
        eprintln!("coffer: warning: the report could not be stored in the repository: {e}");
    }
    if let Some(kept) = outcome.kept {
        let stop = super::binlog::shutdown_signal();
        // The password goes to a 0600 client option file, never to the terminal.
        let mut file = coffer_core::scratch::file("drill-sandbox-", ".cnf")
            .context("writing the sandbox's client options")?;
        writeln!(
            file,
            "[client]\nprotocol=TCP\nhost={}\nport={}\nuser={}\npassword=\"{}\"",
            kept.endpoint.host,
            kept.endpoint.port,
            kept.endpoint.user,
            kept.password()
                .expose()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        )?;
        eprintln!(
            "{}\nconnect with: mariadb --defaults-extra-file={}\npress Ctrl-C to tear the sandbox down",
            kept.describe(),
            file.path().display()
        );
        stop.await;
        drop(kept);
        drop(file);
        eprintln!("sandbox torn down");
    }
    Ok(match (report.verdict, &outcome.saved) {
        (Verdict::Fail, _) => exit::DRILL_FAILED,
        (Verdict::Pass, Err(_)) => exit::STORAGE,
        (Verdict::Pass, Ok(())) => exit::OK,
    })
}

/// Lists past drills.
pub async fn history(config: &Config, json: bool) -> Result<u8> {
    let repository = open_repository(config).await?;
    let reports = DrillReport::history(&repository).await?;
    if json {
        let rows: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "verdict": r.verdict,
                    "backup_id": r.backup_id,
                    "started_at": r.started_at,
                    "recovery_time_seconds": r.recovery_time_seconds,
                    "recovery_point_seconds": r.recovery_point_seconds,
                    "failed_items": r.items.iter().filter(|i| i.status == coffer_verifier::Status::Fail).map(|i| i.name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::json(&rows)?;
        return Ok(exit::OK);
    }
    if reports.is_empty() {
        eprintln!("no drill has run yet against this repository");
        return Ok(exit::OK);
    }
    outln!(
        "{:<32} {:<7} {:<26} {:>13} {:>14}  BACKUP",
        "DRILL",
        "VERDICT",
        "STARTED",
        "RECOVERY TIME",
        "RECOVERY POINT"
    );
    for r in &reports {
        outln!(
            "{:<32} {:<7} {:<26} {:>13} {:>14}  {}",
            r.id,
            match r.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
            },
            output::local_time(r.started_at, &config.timezone),
            r.recovery_time_seconds
                .map_or("-".into(), |s| format!("{s:.1} s")),
            r.recovery_point_seconds
                .map_or("-".into(), |s| format!("{s} s")),
            r.backup_id
        );
    }
    Ok(exit::OK)
}

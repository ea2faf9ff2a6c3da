//! `coffer prune`.

use anyhow::{Context, Result};
use coffer_core::config::Config;
use coffer_core::job::JobContext;

use super::open_repository;
use crate::cli::PruneArgs;
use crate::{exit, output};

/// `prune [--dry-run] [--json]`.
pub async fn run(config: &Config, job: &JobContext, args: PruneArgs) -> Result<u8> {
    let repository = std::sync::Arc::new(open_repository(config).await?);
    let wait = std::time::Duration::from_secs(args.lock_wait);
    let identity = args
        .identity_file
        .as_deref()
        .map(super::read_identity)
        .transpose()?;
    let report = coffer_scheduler::run_prune(
        config,
        &repository,
        job,
        args.dry_run,
        wait,
        identity.as_ref(),
    )
    .await
    .context("prune failed")?;
    if args.output.json {
        output::json(&report)?;
        return Ok(exit::OK);
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for item in report
        .plan
        .items
        .iter()
        .chain(&report.snapshots)
        .chain(&report.config_versions)
        .chain(&report.drill_reports)
    {
        print_item(item, &config.timezone);
    }
    for id in &report.orphans {
        println!("{verb} the leftovers of unfinished backup {id} (data/{id}/, no manifest)");
    }
    for upload in &report.abandoned_uploads {
        let verb = if args.dry_run {
            "would abort"
        } else {
            "aborted"
        };
        println!(
            "{verb} the abandoned upload of {} (begun {})",
            upload.key,
            upload.started.map_or_else(
                || "at an unknown time".into(),
                |t| output::local_time(t, &config.timezone)
            )
        );
    }
    if let Some(chunks) = &report.chunks {
        println!(
            "chunks of file snapshots and configuration versions: {} referenced, {} newly marked as garbage; {verb} {} chunks ({} packs deleted, {} repacked), {} freed",
            chunks.chunks_referenced,
            chunks.chunks_marked,
            chunks.chunks_deleted,
            chunks.packs_deleted,
            chunks.packs_repacked,
            output::bytes(chunks.bytes_freed)
        );
    }
    if let Some(why) = &report.chunks_skipped {
        println!("chunks not pruned: {why}");
    }
    let deletions = report.plan.deletions().len();
    println!(
        "{verb} {deletions} of {} backups; {} kept",
        report.plan.items.len(),
        report.plan.items.len() - deletions
    );
    Ok(exit::OK)
}

/// `keep    ID  kind  started  reasons`: one line per backup or report.
fn print_item(item: &coffer_core::retention::PlanItem, tz: &jiff::tz::TimeZone) {
    println!(
        "{:<6}  {:<36}  {:<7}  {}  {}",
        if item.keep { "keep" } else { "delete" },
        item.id,
        item.kind,
        output::local_time(item.started_at, tz),
        item.reasons.join("; ")
    );
}

//! `coffer lock list|break`: the repository locks, as `coffer_core::lock` keeps them.

use anyhow::Result;
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::lock::{self, BreakTarget, DEFAULT_STALE_AFTER, LockEntry};
use jiff::Timestamp;

use super::open_repository;
use crate::cli::LockBreakArgs;
use crate::{exit, output};

/// `coffer lock list [--json]`.
pub async fn list(config: &Config, job: &JobContext, json: bool) -> Result<u8> {
    let repository = open_repository(config).await?;
    let entries = lock::list(&repository, &job.clock, DEFAULT_STALE_AFTER).await?;
    let now = job.clock.now();
    if json {
        let rows: Vec<serde_json::Value> = entries.iter().map(|e| row(e, now)).collect();
        output::json(&rows)?;
        return Ok(exit::OK);
    }
    if entries.is_empty() {
        eprintln!("no locks in {}", repository.storage().location());
        return Ok(exit::OK);
    }
    outln!(
        "{:<29} {:<9} {:<20} {:>7} {:<26} {:>9}  {:<5}  PURPOSE",
        "LOCK",
        "KIND",
        "HOST",
        "PID",
        "CREATED",
        "HEARTBEAT",
        "STATE"
    );
    for entry in &entries {
        let state = if entry.is_stale() { "stale" } else { "live" };
        match &entry.record {
            Some(r) => outln!(
                "{:<29} {:<9} {:<20} {:>7} {:<26} {:>9}  {:<5}  {}",
                entry.id,
                r.kind.to_string(),
                r.host,
                r.pid,
                output::local_time(r.created, &config.timezone),
                format!("{} s", seconds(now, r.heartbeat)),
                state,
                r.purpose
            ),
            None => outln!(
                "{:<29} {:<9} {:<20} {:>7} {:<26} {:>9}  {:<5}  unreadable: {}",
                entry.id,
                "?",
                "?",
                "?",
                entry
                    .last_modified
                    .map_or("?".into(), |at| output::local_time(at, &config.timezone)),
                "?",
                state,
                entry.problem.as_deref().unwrap_or("")
            ),
        }
    }
    for entry in entries.iter().filter(|e| e.is_stale()) {
        eprintln!(
            "{} is stale: {}",
            entry.id,
            entry.stale.as_deref().unwrap_or("")
        );
    }
    Ok(exit::OK)
}

/// `coffer lock break ID [--force] | --stale [--json]`.
pub async fn break_locks(config: &Config, job: &JobContext, args: &LockBreakArgs) -> Result<u8> {
    let repository = open_repository(config).await?;
    let target = match &args.id {
        Some(id) => BreakTarget::Id(id),
        None => BreakTarget::AllStale,
    };
    let removed = lock::break_lock(
        &repository,
        target,
        args.force,
        &job.clock,
        DEFAULT_STALE_AFTER,
    )
    .await?;
    let now = job.clock.now();
    if args.output.json {
        let rows: Vec<serde_json::Value> = removed.iter().map(|e| row(e, now)).collect();
        output::json(&rows)?;
        return Ok(exit::OK);
    }
    if removed.is_empty() {
        eprintln!("no stale locks in {}", repository.storage().location());
    }
    for entry in &removed {
        outln!("removed {}", entry.describe(now));
    }
    Ok(exit::OK)
}

fn row(entry: &LockEntry, now: Timestamp) -> serde_json::Value {
    let record = entry.record.as_ref();
    serde_json::json!({
        "id": entry.id,
        "key": entry.key,
        "kind": record.map(|r| r.kind),
        "host": record.map(|r| &r.host),
        "pid": record.map(|r| r.pid),
        "purpose": record.map(|r| &r.purpose),
        "created": record.map(|r| r.created),
        "heartbeat": record.map(|r| r.heartbeat),
        "heartbeat_age_seconds": record.map(|r| seconds(now, r.heartbeat)),
        "state": if entry.is_stale() { "stale" } else { "live" },
        "stale_reason": entry.stale,
        "problem": entry.problem,
    })
}

fn seconds(now: Timestamp, then: Timestamp) -> i64 {
    now.duration_since(then).as_secs().max(0)
}

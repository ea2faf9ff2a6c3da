//! `coffer status`: prints [`coffer_scheduler::status::Status`], one line per part.

use anyhow::Result;
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_scheduler::status::status;
use jiff::Timestamp;

use super::open_repository;
use crate::{exit, output};

/// Prints the repository's newest full backup and archived binlog, the recovery point against
/// the source, the point-in-time window, what each kind of backup stores, the last drill, the
/// locks held and every scheduled job (exit 3 when the source cannot be reached).
pub async fn run(config: &Config, job: &JobContext, json: bool) -> Result<u8> {
    let repository = open_repository(config).await?;
    let status = status(config, &repository, job).await?;
    let show = |seconds: Option<i64>| {
        seconds
            .and_then(|s| Timestamp::from_second(s).ok())
            .map_or("-".to_string(), |t| output::local_time(t, &config.timezone))
    };
    if json {
        output::json(&status)?;
    } else {
        outln!(
            "repository: {} ({} backups)",
            status.repository,
            status.backups
        );
        match &status.newest_full_backup {
            Some(full) => outln!(
                "newest full backup: {} finished {} ({} ago)",
                full.id,
                output::local_time(full.finished_at, &config.timezone),
                age(full.age_seconds)
            ),
            None => outln!("newest full backup: none"),
        }
        match &status.newest_archived_binlog {
            Some(f) => outln!(
                "newest archived binlog: {} ({}, up to position {}, last commit {})",
                f.file,
                if f.whole { "whole" } else { "segments" },
                f.end_position,
                show(f.last_commit_time)
            ),
            None => outln!("newest archived binlog: none"),
        }
        if let Some(p) = &status.recovery_point {
            outln!(
                "recovery point: {} ({}), server at {} ({})",
                show(p.archived_commit_time),
                p.archived_gtid.as_deref().unwrap_or("nothing archived"),
                p.server_gtid_position,
                if p.fully_archived {
                    "every committed transaction is archived".to_string()
                } else {
                    format!("newest commit {}", show(p.server_commit_time))
                }
            );
            match p.age_seconds {
                Some(seconds) => outln!("recovery point age: {seconds} s"),
                None => outln!("recovery point age: unknown (nothing archived yet)"),
            }
        }
        match &status.point_in_time_window {
            Some(w) => outln!(
                "point-in-time window: {} .. {} (from {}{})",
                output::local_time(w.start, &config.timezone),
                output::local_time(w.end, &config.timezone),
                w.full_backup,
                match w.gaps {
                    0 => String::new(),
                    n => format!("; {n} gap(s) in the archive: see `coffer binlog window`"),
                }
            ),
            None => outln!(
                "point-in-time window: none (no full backup rolled forward by an archived binlog)"
            ),
        }
        let kinds: Vec<String> = status
            .by_kind
            .iter()
            .map(|k| {
                format!(
                    "{} {} in {}",
                    k.backups,
                    k.kind,
                    output::bytes(k.stored_bytes)
                )
            })
            .collect();
        if !kinds.is_empty() {
            outln!("stored: {}", kinds.join(", "));
        }
        for files in &status.file_snapshots {
            match (&files.id, files.finished_at) {
                (Some(id), Some(at)) => outln!(
                    "files {}: snapshot {id} finished {} ({} files, {}{}; {} snapshots)",
                    files.source,
                    output::local_time(at, &config.timezone),
                    files.files,
                    output::bytes(files.bytes),
                    if files.skipped > 0 {
                        format!(", {} skipped", files.skipped)
                    } else {
                        String::new()
                    },
                    files.snapshots
                ),
                _ => outln!("files {}: no snapshot yet", files.source),
            }
        }
        match &status.last_drill {
            Some(d) => outln!(
                "last drill: {} {} finished {} (recovery time {}; backup {})",
                d.id,
                serde_json::to_value(d.verdict)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_uppercase))
                    .unwrap_or_default(),
                output::local_time(d.finished_at, &config.timezone),
                d.recovery_time_seconds
                    .map_or("-".to_string(), |s| format!("{s:.0} s")),
                d.backup_id
            ),
            None => outln!("last drill: none"),
        }
        let live: Vec<String> = status
            .locks
            .iter()
            .filter(|l| !l.stale)
            .map(|l| {
                format!(
                    "{} {} ({} on {} pid {})",
                    l.kind,
                    l.id,
                    l.purpose.as_deref().unwrap_or("unreadable"),
                    l.host.as_deref().unwrap_or("?"),
                    l.pid.map_or("?".to_string(), |p| p.to_string())
                )
            })
            .collect();
        let stale = status.locks.iter().filter(|l| l.stale).count();
        outln!(
            "locks held: {}{}",
            if live.is_empty() {
                "none".to_string()
            } else {
                live.join(", ")
            },
            match stale {
                0 => String::new(),
                n => format!(" ({n} stale: `coffer lock break --stale`)"),
            }
        );
    }
    if !json {
        for job in &status.jobs {
            let last = match &job.last_run {
                Some(r) => format!(
                    "last {} {} ({})",
                    output::local_time(r.last_started, &config.timezone),
                    serde_json::to_value(r.outcome)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    r.message
                ),
                None => "never run by the daemon".to_string(),
            };
            let next = job
                .next_run
                .map_or("-".to_string(), |t| output::local_time(t, &config.timezone));
            outln!("job {:<11} [{}] next {next}; {last}", job.job, job.schedule);
        }
    }
    match status.source_failure {
        None => Ok(exit::OK),
        Some(e) => Err(e.into()),
    }
}

/// `3d 4h`, `2h 5m`, `40 s`.
fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

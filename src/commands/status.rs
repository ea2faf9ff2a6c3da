//! `coffer status`: the newest backups and the recovery point.

use anyhow::Result;
use coffer_core::archive::archived_files;
use coffer_core::config::Config;
use coffer_core::manifest::BackupKind;
use coffer_scheduler::recovery_point::recovery_point;
use jiff::Timestamp;

use super::open_repository;
use crate::{exit, output};

/// Prints the repository's newest full backup and archived binlog, then measures the recovery
/// point against the source (exit 3 when the source cannot be reached).
pub async fn run(config: &Config, json: bool) -> Result<u8> {
    let repository = open_repository(config).await?;
    let manifests = repository.list().await?;
    let newest_full = manifests.iter().rfind(|m| m.kind == BackupKind::Full);
    let files = archived_files(&manifests);
    let newest_file = files.iter().max_by_key(|f| (f.archived_at, f.sequence));
    let now = Timestamp::now();
    let show = |seconds: Option<i64>| {
        seconds
            .and_then(|s| Timestamp::from_second(s).ok())
            .map_or("-".to_string(), |t| output::local_time(t, &config.timezone))
    };
    if !json {
        println!(
            "repository: {} ({} backups)",
            repository.storage().location(),
            manifests.len()
        );
        match newest_full {
            Some(full) => println!(
                "newest full backup: {} finished {} ({} ago)",
                full.id,
                output::local_time(full.finished_at, &config.timezone),
                age(now.as_second() - full.finished_at.as_second())
            ),
            None => println!("newest full backup: none"),
        }
        match newest_file {
            Some(f) => println!(
                "newest archived binlog: {} ({}, up to position {}, last commit {})",
                f.file,
                if f.whole { "whole" } else { "segments" },
                f.end_position,
                show(f.last_commit_time)
            ),
            None => println!("newest archived binlog: none"),
        }
    }
    let point = recovery_point(config, &repository).await;
    if json {
        let (point_json, error) = match &point {
            Ok(p) => (serde_json::to_value(p)?, None),
            Err(e) => (serde_json::Value::Null, Some(e.to_string())),
        };
        output::json(&serde_json::json!({
            "repository": repository.storage().location(),
            "backups": manifests.len(),
            "newest_full_backup": newest_full.map(|m| serde_json::json!({
                "id": m.id,
                "finished_at": m.finished_at,
                "age_seconds": now.as_second() - m.finished_at.as_second(),
            })),
            "newest_archived_binlog": newest_file.map(|f| serde_json::json!({
                "file": f.file,
                "whole": f.whole,
                "end_position": f.end_position,
                "last_event_time": f.last_event_time,
                "last_commit_time": f.last_commit_time,
            })),
            "recovery_point": point_json,
            "source_error": error,
        }))?;
    } else if let Ok(p) = &point {
        println!(
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
            Some(seconds) => println!("recovery point age: {seconds} s"),
            None => println!("recovery point age: unknown (nothing archived yet)"),
        }
    }
    match point {
        Ok(_) => Ok(exit::OK),
        Err(e) => Err(e.into()),
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

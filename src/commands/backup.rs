//! `coffer backup run|list|show|verify`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::manifest::BackupKind;
use coffer_core::pipeline::Progress;
use serde::Serialize;

use super::{open_repository, read_identity};
use crate::cli::{KindArg, RunArgs};
use crate::{exit, output};

/// `backup run full`.
pub async fn run_full(config: &Config, job: &JobContext, args: &RunArgs) -> Result<u8> {
    config.source()?;
    let json = args.output.json;
    let repository = Arc::new(open_repository(config).await?);
    let progress = Progress::default();
    let spinner = output::Spinner::start("dumping", progress.clone());
    let wait = args.lock.or_config(config);
    let result = coffer_scheduler::run_full_backup(config, &repository, job, progress, wait).await;
    if let Some(spinner) = spinner {
        spinner.finish();
    }
    let manifest = result.context("full backup failed")?;
    if json {
        output::json(&manifest)?;
    } else {
        let tables: usize = manifest
            .expectations
            .databases
            .iter()
            .map(|d| d.tables.len())
            .sum();
        outln!(
            "backup {} stored: {} database(s), {tables} table(s), {} dumped, {} stored, in {:.1} s",
            manifest.id,
            manifest.databases.len(),
            output::bytes(manifest.size_bytes()),
            output::bytes(manifest.stored_bytes()),
            manifest.duration_seconds
        );
        if let Some(binlog) = &manifest.binlog {
            outln!(
                "snapshot at binlog {}:{}{}",
                binlog.file,
                binlog.position,
                gtid_suffix(binlog.gtid_position.as_deref())
            );
        }
        if !manifest.may_be_missing.is_empty() {
            outln!(
                "INCOMPLETE (allow_incomplete): may be missing {}",
                manifest.may_be_missing.join(", ")
            );
        }
    }
    Ok(exit::OK)
}

/// `backup run incremental`.
pub async fn run_incremental(config: &Config, job: &JobContext, args: &RunArgs) -> Result<u8> {
    config.source()?;
    let json = args.output.json;
    let repository = Arc::new(open_repository(config).await?);
    let progress = Progress::default();
    let spinner = output::Spinner::start("archiving binlogs", progress.clone());
    let wait = args.lock.or_config(config);
    let result =
        coffer_scheduler::run_incremental_backup(config, &repository, job, progress, wait).await;
    if let Some(spinner) = spinner {
        spinner.finish();
    }
    let manifests = result.context("incremental backup failed")?;
    if json {
        output::json(&manifests)?;
    } else if manifests.is_empty() {
        outln!("nothing new: every committed transaction is archived");
    } else {
        for m in &manifests {
            let b = m
                .binlog_file
                .as_ref()
                .expect("binlog backups describe their file");
            outln!(
                "archived {} as {}: {} transaction(s), {} -> {}",
                b.file,
                m.id,
                b.transactions,
                output::bytes(m.size_bytes()),
                output::bytes(m.stored_bytes())
            );
        }
    }
    Ok(exit::OK)
}

fn gtid_suffix(gtid: Option<&str>) -> String {
    gtid.map(|g| format!(" (GTID {g})")).unwrap_or_default()
}

/// One line of `backup list --json`.
#[derive(Serialize)]
struct ListEntry<'a> {
    id: &'a str,
    kind: BackupKind,
    started_at: jiff::Timestamp,
    finished_at: jiff::Timestamp,
    duration_seconds: f64,
    size_bytes: u64,
    stored_bytes: u64,
    databases: &'a [String],
    binlog: Option<&'a coffer_core::manifest::BinlogCoordinates>,
    #[serde(skip_serializing_if = "Option::is_none")]
    binlog_file: Option<&'a coffer_core::manifest::ArchivedBinlog>,
    /// What an incomplete full backup may lack (empty when the account saw everything).
    may_be_missing: &'a [String],
}

/// `backup list`: streamed, so the output of a repository of any size costs the memory of one
/// backup (the listing itself aside). With `--json`, the array is written as it is read: a
/// listing that fails half-way leaves it unfinished, and the exit code says so.
pub async fn list(config: &Config, kind: Option<KindArg>, json: bool) -> Result<u8> {
    use serde::ser::{SerializeSeq, Serializer};
    use std::io::Write;

    let repository = open_repository(config).await?;
    let wanted = kind.map(|kind| match kind {
        KindArg::Full => BackupKind::Full,
        KindArg::Binlog => BackupKind::Binlog,
        KindArg::Segment => BackupKind::Segment,
    });
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let failed = |e: std::io::Error| coffer_core::Error::other(format!("writing the list: {e}"));
    if json {
        let mut serializer = serde_json::Serializer::pretty(&mut out);
        let mut seq = serializer
            .serialize_seq(None)
            .map_err(|e| failed(e.into()))?;
        repository
            .for_each_manifest(|m| {
                if wanted.is_some_and(|k| m.kind != k) {
                    return Ok(());
                }
                seq.serialize_element(&ListEntry {
                    id: &m.id,
                    kind: m.kind,
                    started_at: m.started_at,
                    finished_at: m.finished_at,
                    duration_seconds: m.duration_seconds,
                    size_bytes: m.size_bytes(),
                    stored_bytes: m.stored_bytes(),
                    databases: &m.databases,
                    binlog: m.binlog.as_ref(),
                    binlog_file: m.binlog_file.as_ref(),
                    may_be_missing: &m.may_be_missing,
                })
                .map_err(|e| failed(e.into()))
            })
            .await
            .context("listing backups")?;
        seq.end().map_err(|e| failed(e.into()))?;
        writeln!(out)?;
        out.flush()?;
        return Ok(exit::OK);
    }
    let mut listed = 0usize;
    repository
        .for_each_manifest(|m| {
            if wanted.is_some_and(|k| m.kind != k) {
                return Ok(());
            }
            if listed == 0 {
                writeln!(
                    out,
                    "{:<32} {:<7} {:<26} {:>9} {:>11} {:>11}",
                    "ID",
                    "KIND",
                    format!("STARTED ({})", config.timezone_name),
                    "DURATION",
                    "SIZE",
                    "STORED"
                )
                .map_err(failed)?;
            }
            listed += 1;
            writeln!(
                out,
                "{:<32} {:<7} {:<26} {:>8.1}s {:>11} {:>11}{}",
                m.id,
                m.kind.as_str(),
                output::local_time(m.started_at, &config.timezone),
                m.duration_seconds,
                output::bytes(m.size_bytes()),
                output::bytes(m.stored_bytes()),
                if m.may_be_missing.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  INCOMPLETE: may be missing {}",
                        m.may_be_missing.join(", ")
                    )
                }
            )
            .map_err(failed)
        })
        .await
        .context("listing backups")?;
    if listed == 0 {
        writeln!(out, "no backups in {}", repository.storage().location())?;
    }
    out.flush()?;
    Ok(exit::OK)
}

/// `backup show`.
pub async fn show(config: &Config, id: &str, json: bool) -> Result<u8> {
    let repository = open_repository(config).await?;
    let manifest = repository.resolve(id).await?;
    if json {
        output::json(&manifest)?;
        return Ok(exit::OK);
    }
    outln!("id:           {}", manifest.id);
    outln!("kind:         {}", manifest.kind);
    outln!(
        "started:      {}",
        output::local_time(manifest.started_at, &config.timezone)
    );
    outln!(
        "finished:     {}",
        output::local_time(manifest.finished_at, &config.timezone)
    );
    outln!("duration:     {:.1} s", manifest.duration_seconds);
    outln!(
        "source:       {}:{} (server {}, server_id {})",
        manifest.source.host,
        manifest.source.port,
        manifest.source.server_version,
        manifest.source.server_id
    );
    outln!("dump tool:    {}", manifest.source.dump_tool);
    match &manifest.binlog {
        Some(b) => outln!(
            "binlog:       {}:{}{}",
            b.file,
            b.position,
            gtid_suffix(b.gtid_position.as_deref())
        ),
        None if manifest.kind == BackupKind::Full => {
            outln!("binlog:       none (the source wrote no binary log)")
        }
        None => {}
    }
    if let Some(b) = &manifest.binlog_file {
        outln!(
            "binlog file:  {} ({} bytes, {} transactions, GTIDs {} .. {}, next {})",
            b.file,
            b.end_position,
            b.transactions,
            b.first_gtid.as_deref().unwrap_or("-"),
            b.last_gtid.as_deref().unwrap_or("-"),
            b.next_file.as_deref().unwrap_or("-")
        );
    }
    outln!("databases:    {}", manifest.databases.join(", "));
    if !manifest.may_be_missing.is_empty() {
        outln!(
            "INCOMPLETE:   the account could not see everything (allow_incomplete); may be missing {}",
            manifest.may_be_missing.join(", ")
        );
    }
    for artifact in &manifest.artifacts {
        outln!(
            "artifact:     {} {} -> {} ({}{}) sha256 {}",
            artifact.key,
            output::bytes(artifact.size),
            output::bytes(artifact.stored_size),
            artifact.compression,
            if artifact.encrypted { ", age" } else { "" },
            artifact.sha256
        );
    }
    for db in &manifest.expectations.databases {
        outln!(
            "database {}: {} tables, {} views, {} routines, {} triggers, {} events",
            db.name,
            db.tables.len(),
            db.views.len(),
            db.routines.len(),
            db.triggers.len(),
            db.events.len()
        );
        for table in &db.tables {
            outln!(
                "  {:<40} {:>12} rows  sha256 {}",
                table.name,
                table.rows,
                &table.sha256[..16]
            );
        }
    }
    Ok(exit::OK)
}

/// `backup verify`: under the repository's shared lock, waiting at most `lock_wait` for it.
pub async fn verify(
    config: &Config,
    job: &JobContext,
    id: &str,
    identity_file: Option<&Path>,
    lock_wait: Duration,
    json: bool,
) -> Result<u8> {
    let identity = identity_file.map(read_identity).transpose()?;
    let repository = Arc::new(open_repository(config).await?);
    let (manifest, report) =
        coffer_restore::verify_id(&repository, id, identity.as_ref(), job, lock_wait).await?;
    if json {
        output::json(&report)?;
    } else {
        for artifact in &report.artifacts {
            match &artifact.error {
                None => outln!("ok      {} ({:?})", artifact.key, artifact.depth),
                Some(error) => outln!("FAILED  {error}"),
            }
        }
    }
    if report.ok() {
        if !json {
            outln!("backup {} verified", manifest.id);
            if !manifest.may_be_missing.is_empty() {
                // Verified is not complete: the dump holds only what its account could see.
                outln!(
                    "INCOMPLETE (allow_incomplete): may be missing {}",
                    manifest.may_be_missing.join(", ")
                );
            }
        }
        Ok(exit::OK)
    } else {
        eprintln!("coffer: error: backup {} failed verification", manifest.id);
        Ok(exit::VERIFY_FAILED)
    }
}

/// `backup pin ID --reason …`.
pub async fn pin(config: &Config, job: &JobContext, id: &str, reason: &str) -> Result<u8> {
    let repository = open_repository(config).await?;
    let now = job.clock.now();
    let pin = if coffer_files::snapshot::is_snapshot_id(id) {
        // A file snapshot: kept by [retention.files] whatever it says.
        let snapshot = coffer_files::snapshot::load(&repository, id).await?;
        coffer_core::retention::pins::pin_record(&repository, &snapshot.id, reason, now).await?
    } else {
        let manifest = repository.resolve(id).await?;
        coffer_core::retention::pins::pin(&repository, &manifest.id, reason, now).await?
    };
    outln!("pinned {}: {}", pin.id, pin.reason);
    Ok(exit::OK)
}

/// `backup unpin ID`.
pub async fn unpin(config: &Config, id: &str) -> Result<u8> {
    let repository = open_repository(config).await?;
    coffer_core::retention::pins::unpin(&repository, id).await?;
    outln!("unpinned {id}: retention decides about it again");
    Ok(exit::OK)
}

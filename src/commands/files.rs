//! `coffer backup run files`, `restore files`, `files list|ls|find` and `backup verify` of a
//! file snapshot.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use coffer_core::config::{Config, FilesLocation, RepositoryLocation, S3Config};
use coffer_core::error::Error;
use coffer_core::job::JobContext;
use coffer_core::repository::{LATEST, Repository};
use coffer_core::storage::S3Objects;
use coffer_files::entry::{Entry, EntryKind};
use coffer_files::restore::{RestoreOptions, list_entries, restore_snapshot};
use coffer_files::s3source::restore_to_s3;
use coffer_files::snapshot::{self, SnapshotManifest};
use coffer_files::store::ChunkStore;
use coffer_files::verify::{ReadData, verify_snapshot};
use serde_json::json;

use super::{open_repository, read_identity};
use crate::cli::{RestoreFilesArgs, RunFilesArgs};
use crate::{exit, output};

/// `backup run files`.
pub async fn run(config: &Config, job: &JobContext, args: &RunFilesArgs) -> Result<u8> {
    let repository = Arc::new(open_repository(config).await?);
    let options = coffer_scheduler::FilesOptions {
        source: args.source.clone(),
        full_scan: args.full_scan,
    };
    let wait = args.lock.or_config(config);
    let taken = coffer_scheduler::run_files_backup(config, &repository, job, &options, wait)
        .await
        .context("file snapshot failed")?;
    if args.output.json {
        output::json(&taken)?;
        return Ok(exit::OK);
    }
    for m in &taken {
        let s = &m.snapshot;
        outln!(
            "snapshot {} of {} stored: {} files, {} folders, {} symlinks, {} ({} read, {} unchanged), {} new ({} stored), in {:.1} s",
            m.id,
            m.source,
            s.files + s.hardlinks,
            s.dirs,
            s.symlinks,
            output::bytes(s.bytes),
            s.read_files,
            s.reused_files,
            output::bytes(m.stored.new_bytes),
            output::bytes(m.stored.stored_bytes),
            m.duration_seconds
        );
        if s.skipped_count > 0 {
            outln!("  {} entries skipped:", s.skipped_count);
            for skipped in &s.skipped {
                outln!("    {}: {}", skipped.path, skipped.reason);
            }
            if s.skipped_count > s.skipped.len() as u64 {
                outln!(
                    "    … and {} more",
                    s.skipped_count - s.skipped.len() as u64
                );
            }
        }
    }
    Ok(exit::OK)
}

/// A chunk store to read snapshots with (see [`ChunkStore::open_for_reading`]).
async fn reading_store<'a>(
    config: &Config,
    repository: &'a Repository,
    identity: Option<age::x25519::Identity>,
) -> coffer_core::Result<ChunkStore<'a>> {
    let recipient = config.repository.recipient()?;
    ChunkStore::open_for_reading(
        repository.storage(),
        &config.persistent_state_dir()?,
        recipient,
        identity,
    )
    .await
}

async fn find_snapshot(
    repository: &Repository,
    id: &str,
    source: Option<&str>,
) -> coffer_core::Result<SnapshotManifest> {
    let snapshots = snapshot::list(repository).await?;
    if id == LATEST && source.is_none() {
        let mut sources: Vec<&str> = snapshots.iter().map(|s| s.source.as_str()).collect();
        sources.sort_unstable();
        sources.dedup();
        if sources.len() > 1 {
            return Err(Error::config(format!(
                "the repository holds snapshots of several sources ({}): say which with --source",
                sources.join(", ")
            )));
        }
    }
    Ok(snapshot::resolve(&snapshots, id, source)?.clone())
}

/// `restore files`: under the repository's shared lock.
pub async fn restore(config: &Config, job: &JobContext, args: &RestoreFilesArgs) -> Result<u8> {
    let identity = args
        .identity_file
        .as_deref()
        .map(read_identity)
        .transpose()?;
    let repository = Arc::new(open_repository(config).await?);
    let id = args.snapshot.as_deref().unwrap_or(LATEST);
    let wait = args.lock.or_config(config);
    let options = RestoreOptions {
        dry_run: args.dry_run,
        overwrite: args.overwrite,
    };
    let work = async {
        let manifest = find_snapshot(&repository, id, args.source.as_deref()).await?;
        let store = reading_store(config, &repository, identity).await?;
        if let Some(path) = &args.path {
            // Asked for something the snapshot does not hold: say so rather than restore nothing.
            let mut at = list_entries(&store, &manifest.snapshot, Some(path))?;
            if at.next().await?.is_none() {
                return Err(Error::not_found(format!(
                    "snapshot {} has nothing at {path}",
                    manifest.id
                )));
            }
        }
        let summary = match (&args.to, &args.to_s3) {
            (Some(dir), _) => {
                restore_snapshot(
                    &store,
                    &manifest.snapshot,
                    args.path.as_deref(),
                    dir,
                    &options,
                )
                .await?
            }
            (None, Some(url)) => {
                let target = S3Objects::new(target_s3(config, &manifest.source, url)?)
                    .with_stall_timeout(config.stall_timeout);
                restore_to_s3(
                    &store,
                    &manifest.snapshot,
                    args.path.as_deref(),
                    &target,
                    &options,
                )
                .await?
            }
            (None, None) => unreachable!("clap requires a target"),
        };
        Ok((manifest, summary))
    };
    let (manifest, summary) = if args.dry_run {
        work.await
    } else {
        coffer_restore::read_locked(&repository, "restore files", wait, job, work).await
    }
    .context("file restore failed")?;
    let target = args
        .to
        .as_ref()
        .map(|d| d.display().to_string())
        .or_else(|| args.to_s3.clone())
        .unwrap_or_default();
    if args.output.json {
        output::json(&json!({
            "snapshot": manifest.id,
            "source": manifest.source,
            "path": args.path,
            "target": target,
            "dry_run": args.dry_run,
            "files": summary.files,
            "dirs": summary.dirs,
            "symlinks": summary.symlinks,
            "hardlinks": summary.hardlinks,
            "bytes": summary.bytes,
        }))?;
    } else {
        outln!(
            "{} {} of snapshot {} ({}){} into {target}: {} files, {} folders, {} symlinks, {} hard links, {}",
            if args.dry_run {
                "would restore"
            } else {
                "restored"
            },
            args.path.as_deref().unwrap_or("everything"),
            manifest.id,
            manifest.source,
            if args.dry_run {
                ""
            } else {
                ", every chunk verified,"
            },
            summary.files,
            summary.dirs,
            summary.symlinks,
            summary.hardlinks,
            output::bytes(summary.bytes)
        );
    }
    Ok(exit::OK)
}

/// Where `--to-s3 URL` writes: that bucket and prefix on the server of the snapshot's own
/// `[[files]]` source when it is an S3 one, else on the repository's S3 server, with their
/// credentials.
fn target_s3(config: &Config, source: &str, url: &str) -> coffer_core::Result<S3Config> {
    let from_source = config.files.iter().find_map(|s| match &s.location {
        FilesLocation::S3(s3) if s.name == source => Some(s3),
        _ => None,
    });
    let base = from_source.or(match &config.repository.location {
        RepositoryLocation::S3(s3) => Some(s3),
        RepositoryLocation::Local(_) => None,
    });
    match base {
        Some(base) => base.at(url),
        None => Err(Error::config(format!(
            "--to-s3 {url}: no S3 server to write to: the source {source:?} is not an S3 `[[files]]` source and the repository is a folder"
        ))),
    }
}

/// `files list`.
pub async fn list(config: &Config, source: Option<&str>, json: bool) -> Result<u8> {
    let repository = open_repository(config).await?;
    let snapshots: Vec<SnapshotManifest> = snapshot::list(&repository)
        .await?
        .into_iter()
        .filter(|s| source.is_none_or(|name| s.source == name))
        .collect();
    if json {
        let rows: Vec<_> = snapshots
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "source": m.source,
                    "location": m.location,
                    "started_at": m.started_at,
                    "finished_at": m.finished_at,
                    "duration_seconds": m.duration_seconds,
                    "parent": m.parent,
                    "entries": m.snapshot.entries,
                    "files": m.snapshot.files + m.snapshot.hardlinks,
                    "bytes": m.snapshot.bytes,
                    "new_bytes": m.stored.new_bytes,
                    "stored_bytes": m.stored.stored_bytes,
                    "skipped": m.snapshot.skipped_count,
                })
            })
            .collect();
        output::json(&rows)?;
        return Ok(exit::OK);
    }
    if snapshots.is_empty() {
        outln!("no file snapshots in {}", repository.storage().location());
        return Ok(exit::OK);
    }
    outln!(
        "{:<32} {:<16} {:<26} {:>8} {:>11} {:>11} {:>9}",
        "ID",
        "SOURCE",
        format!("STARTED ({})", config.timezone_name),
        "FILES",
        "SIZE",
        "NEW",
        "SKIPPED"
    );
    for m in &snapshots {
        outln!(
            "{:<32} {:<16} {:<26} {:>8} {:>11} {:>11} {:>9}",
            m.id,
            m.source,
            output::local_time(m.started_at, &config.timezone),
            m.snapshot.files + m.snapshot.hardlinks,
            output::bytes(m.snapshot.bytes),
            output::bytes(m.stored.new_bytes),
            m.snapshot.skipped_count
        );
    }
    Ok(exit::OK)
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Hardlink => "hardlink",
    }
}

fn entry_json(entry: &Entry, snapshot: Option<&str>) -> serde_json::Value {
    let mtime = jiff::Timestamp::from_nanosecond(i128::from(entry.mtime_ns)).ok();
    let mut value = json!({
        "path": entry.display(),
        "type": kind_name(entry.kind),
        "size": entry.size,
        "mode": format!("{:04o}", entry.mode),
        "mtime": mtime,
    });
    if let Some(target) = &entry.target {
        value["target"] = json!(String::from_utf8_lossy(target));
    }
    if let Some(link) = &entry.link {
        value["link"] = json!(String::from_utf8_lossy(link));
    }
    if let Some(id) = snapshot {
        value["snapshot"] = json!(id);
    }
    value
}

fn entry_line(config: &Config, entry: &Entry) -> String {
    let mtime = jiff::Timestamp::from_nanosecond(i128::from(entry.mtime_ns))
        .map(|t| output::local_time(t, &config.timezone))
        .unwrap_or_else(|_| "-".into());
    let suffix = match (&entry.target, &entry.link) {
        (Some(target), _) => format!(" -> {}", String::from_utf8_lossy(target).escape_debug()),
        (None, Some(link)) => format!(" => {}", String::from_utf8_lossy(link).escape_debug()),
        _ => String::new(),
    };
    format!(
        "{:<8} {:04o} {:>12} {}  {}{suffix}",
        kind_name(entry.kind),
        entry.mode,
        entry.size,
        mtime,
        entry.display()
    )
}

/// `files ls ID [PATH]`: streamed, one entry at a time.
pub async fn ls(
    config: &Config,
    id: &str,
    path: Option<&str>,
    source: Option<&str>,
    identity_file: Option<&Path>,
    json: bool,
) -> Result<u8> {
    let identity = identity_file.map(read_identity).transpose()?;
    let repository = open_repository(config).await?;
    let manifest = find_snapshot(&repository, id, source).await?;
    let store = reading_store(config, &repository, identity).await?;
    let mut entries = list_entries(&store, &manifest.snapshot, path)?;
    let mut rows = Vec::new();
    let mut found = 0u64;
    while let Some(entry) = entries.next().await? {
        found += 1;
        if json {
            rows.push(entry_json(&entry, None));
        } else {
            outln!("{}", entry_line(config, &entry));
        }
    }
    if json {
        output::json(&rows)?;
    } else if found == 0 && path.is_some() {
        return Err(Error::not_found(format!(
            "snapshot {} has nothing at {}",
            manifest.id,
            path.unwrap_or_default()
        ))
        .into());
    }
    Ok(exit::OK)
}

/// `files find PATTERN`: every snapshot (or one), newest first.
pub async fn find(
    config: &Config,
    pattern: &str,
    source: Option<&str>,
    snapshot_id: Option<&str>,
    identity_file: Option<&Path>,
    json: bool,
) -> Result<u8> {
    let by_path = pattern.contains('/');
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(by_path)
        .build()
        .map_err(|e| Error::config(format!("bad pattern {pattern:?}: {}", e.kind())))?
        .compile_matcher();
    let identity = identity_file.map(read_identity).transpose()?;
    let repository = open_repository(config).await?;
    let all = snapshot::list(&repository).await?;
    let chosen: Vec<&SnapshotManifest> = match snapshot_id {
        Some(id) => vec![snapshot::resolve(&all, id, source)?],
        None => all
            .iter()
            .rev()
            .filter(|s| source.is_none_or(|name| s.source == name))
            .collect(),
    };
    let store = reading_store(config, &repository, identity).await?;
    let mut rows = Vec::new();
    let mut matches = 0u64;
    for manifest in chosen {
        let mut entries = list_entries(&store, &manifest.snapshot, None)?;
        let mut header = false;
        while let Some(entry) = entries.next().await? {
            let subject: &[u8] = if by_path {
                &entry.path
            } else {
                entry
                    .path
                    .rsplit(|&b| b == b'/')
                    .next()
                    .unwrap_or(&entry.path)
            };
            if !glob.is_match(std::ffi::OsStr::new(&*String::from_utf8_lossy(subject))) {
                continue;
            }
            matches += 1;
            if json {
                rows.push(entry_json(&entry, Some(&manifest.id)));
            } else {
                if !header {
                    outln!(
                        "snapshot {} ({}, {}):",
                        manifest.id,
                        manifest.source,
                        output::local_time(manifest.started_at, &config.timezone)
                    );
                    header = true;
                }
                outln!("  {}", entry_line(config, &entry));
            }
        }
    }
    if json {
        output::json(&rows)?;
    } else if matches == 0 {
        outln!("nothing matches {pattern:?}");
    }
    Ok(exit::OK)
}

/// `--read-data` / `--read-data-subset N/M` as what to read.
pub fn read_data(all: bool, subset: Option<&str>) -> Result<ReadData> {
    match (all, subset) {
        (true, _) => Ok(ReadData::All),
        (false, Some(text)) => Ok(text
            .parse::<ReadData>()
            .map_err(|e| Error::config(format!("--read-data-subset {text}: {e}")))?),
        (false, None) => Ok(ReadData::None),
    }
}

/// `backup verify ID` of a file snapshot: under the shared lock; exit 3 when anything is wrong.
pub async fn verify(
    config: &Config,
    job: &JobContext,
    id: &str,
    read: ReadData,
    identity_file: Option<&Path>,
    lock_wait: Duration,
    json: bool,
) -> Result<u8> {
    let identity = identity_file.map(read_identity).transpose()?;
    let repository = Arc::new(open_repository(config).await?);
    let work = async {
        let manifest = snapshot::load(&repository, id).await?;
        let store = reading_store(config, &repository, identity).await?;
        let report = verify_snapshot(&store, &manifest.snapshot, read).await?;
        Ok((manifest, report))
    };
    let (manifest, report) =
        coffer_restore::read_locked(&repository, "verify", lock_wait, job, work).await?;
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    if json {
        output::json(&json!({
            "snapshot": manifest.id,
            "source": manifest.source,
            "ok": report.is_clean(),
            "files": report.files,
            "chunks_referenced": report.chunks_referenced,
            "unique_chunks": report.unique_chunks,
            "packs_referenced": report.packs_referenced,
            "packs_read": report.packs_read,
            "bytes_read": report.bytes_read,
            "problem_count": report.problem_count,
            "problems": problems,
        }))?;
    } else {
        outln!(
            "snapshot {}: {} files, {} chunks in {} packs; {} packs read ({})",
            manifest.id,
            report.files,
            report.unique_chunks,
            report.packs_referenced,
            report.packs_read,
            output::bytes(report.bytes_read)
        );
        for problem in &problems {
            outln!("FAILED  {problem}");
        }
    }
    if report.is_clean() {
        if !json {
            outln!("snapshot {} verified", manifest.id);
        }
        Ok(exit::OK)
    } else {
        eprintln!(
            "coffer: error: snapshot {} failed verification: {} problem(s)",
            manifest.id, report.problem_count
        );
        Ok(exit::VERIFY_FAILED)
    }
}

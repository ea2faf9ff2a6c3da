//! `coffer backup run config`, `config history|diff`, `restore config`: thin glue over
//! `coffer_config_history`.

use anyhow::{Context, Result};
use coffer_config_history::{capture, read};
use coffer_core::config::Config;
use coffer_core::job::JobContext;

use super::{open_repository, read_identity};
use crate::cli::{ConfigCommand, RestoreConfigArgs};
use crate::output;

/// `backup run config`: one run of every `[[config_backup]]` table.
pub async fn capture(config: &Config, job: &JobContext, json: bool) -> Result<u8> {
    if config.repository.encryption_recipient.is_none() {
        eprintln!("coffer: warning: {}", capture::UNENCRYPTED_WARNING);
    }
    let repository = std::sync::Arc::new(open_repository(config).await?);
    // Under the shared repository lock, like every backup: no prune runs meanwhile.
    let reports = coffer_restore::read_locked(
        &repository,
        "config backup",
        config.daemon.lock_wait,
        job,
        capture::capture_all(config, &repository, job),
    )
    .await
    .context("configuration backup failed")?;
    for report in &reports {
        for unreadable in &report.unreadable {
            eprintln!(
                "coffer: warning: cannot read {}: {}",
                unreadable.path, unreadable.error
            );
        }
    }
    if json {
        output::json(&reports)?;
        return Ok(0);
    }
    for report in &reports {
        match &report.version {
            Some(id) => {
                outln!(
                    "{}: version {id}, {} of {} file(s) changed",
                    report.name,
                    report.changes.len(),
                    report.files
                );
                for change in &report.changes {
                    outln!("  {:<8} {}", change.change, change.path);
                }
            }
            None => outln!("{}: no change ({} file(s))", report.name, report.files),
        }
    }
    Ok(0)
}

/// A path from the command line made absolute against the current folder (without resolving
/// symlinks: versions record paths as the configuration names them).
fn absolute(path: &str) -> Result<String> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("making {path} an absolute path"))?;
    absolute
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| coffer_core::Error::config(format!("{path:?} is not UTF-8")).into())
}

/// `config history|diff`.
pub async fn run(config: &Config, command: ConfigCommand) -> Result<u8> {
    let repository = open_repository(config).await?;
    match command {
        ConfigCommand::History {
            path,
            output: flags,
        } => {
            let path = absolute(&path)?;
            let history = read::history(&repository, &path).await?;
            if flags.json {
                output::json(&history)?;
            } else if history.is_empty() {
                outln!("no version of {path}");
            } else {
                for entry in &history {
                    outln!(
                        "{}  {}  {:<8}  {:>10}  {}",
                        entry.id,
                        output::local_time(entry.time, &config.timezone),
                        entry.change.to_string(),
                        output::bytes(entry.size),
                        entry.path
                    );
                }
            }
        }
        ConfigCommand::Diff(args) => {
            let identity = args
                .identity_file
                .as_deref()
                .map(read_identity)
                .transpose()?;
            let diff = read::diff(
                config,
                &repository,
                identity.as_ref(),
                &absolute(&args.path)?,
                args.from.as_deref(),
                args.to.as_deref(),
            )
            .await?;
            print!("{diff}");
        }
    }
    Ok(0)
}

/// `restore config`.
pub async fn restore(config: &Config, args: RestoreConfigArgs) -> Result<u8> {
    let identity = args
        .identity_file
        .as_deref()
        .map(read_identity)
        .transpose()?;
    let repository = open_repository(config).await?;
    let report = read::restore(
        config,
        &repository,
        identity.as_ref(),
        &absolute(&args.path)?,
        args.version.as_deref(),
        &args.to,
        args.overwrite,
    )
    .await
    .context("configuration restore failed")?;
    if args.output.json {
        output::json(&report)?;
    } else {
        outln!(
            "restored {} as of version {} to {} ({}, mode {:o})",
            report.file.path,
            report.version,
            report.to.display(),
            output::bytes(report.file.size),
            report.file.mode
        );
    }
    Ok(0)
}

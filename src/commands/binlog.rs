//! `coffer binlog window`, `binlog stream` and `binlog find`.

use anyhow::Result;
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_restore::pitr;

use super::open_repository;
use crate::cli::StreamArgs;
use crate::{exit, output};

/// Prints the recoverable windows and the archive's gaps; exit 6 when there is a gap.
pub async fn window(config: &Config, json: bool) -> Result<u8> {
    let repository = open_repository(config).await?;
    let manifests = repository.list().await?;
    // The sizes on storage, listed once: a truncated or missing artifact ends its window.
    let stored = repository.storage().list("data/").await?;
    let archive = coffer_core::archive::Archive::new(&manifests);
    let damaged = coffer_core::archive::damaged_files(archive.files(), &stored);
    let windows = archive.windows(&damaged);
    let mut gaps = archive.gaps();
    gaps.extend(
        damaged
            .iter()
            .map(|d| format!("{} is damaged: {}", d.file, d.why)),
    );
    if json {
        output::json(&serde_json::json!({ "windows": windows, "gaps": gaps }))?;
    } else {
        outln!("{}", pitr::describe_windows(&windows, &config.timezone));
        for gap in &gaps {
            outln!("GAP: {gap}");
        }
    }
    if gaps.is_empty() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "coffer: error: the binlog archive has {} gap(s): point-in-time recovery cannot cross them",
            gaps.len()
        );
        Ok(exit::VERIFY_FAILED)
    }
}

/// Lists the archived transactions that changed a table; exit 0 even when none did.
pub async fn find(config: &Config, args: crate::cli::FindArgs) -> Result<u8> {
    use coffer_core::binlog_events::ChangeKind;
    use coffer_restore::find::{FindFilter, find};

    use crate::cli::ChangeKindArg;

    let tz = match &args.tz {
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
            coffer_core::Error::config(format!("--tz {name:?} is not an IANA time zone"))
        })?,
        None => config.timezone.clone(),
    };
    let mut filter = FindFilter::new(&args.table, args.database.as_deref())?;
    filter.kind = args.kind.map(|k| match k {
        ChangeKindArg::Insert => ChangeKind::Insert,
        ChangeKindArg::Update => ChangeKind::Update,
        ChangeKindArg::Delete => ChangeKind::Delete,
    });
    let time = |flag: &str, text: &Option<String>| -> Result<Option<jiff::Timestamp>> {
        // parse_at names --at in its message: say which flag was wrong instead.
        text.as_deref()
            .map(|t| {
                pitr::parse_at(t, &tz).map_err(|_| {
                    coffer_core::Error::config(format!(
                        "{flag} {t:?} is not a date and time (want \"2025-10-29 11:59:00\" or RFC 3339)"
                    ))
                    .into()
                })
            })
            .transpose()
    };
    filter.since = time("--since", &args.since)?;
    filter.until = time("--until", &args.until)?;
    let identity = args
        .identity_file
        .as_deref()
        .map(super::read_identity)
        .transpose()?;
    let repository = open_repository(config).await?;
    let manifests = repository.list().await?;
    let matches = find(&repository, &manifests, &filter, identity.as_ref()).await?;
    if args.output.json {
        output::json(&matches)?;
    } else if matches.is_empty() {
        eprintln!("no matching transaction");
    } else {
        for m in &matches {
            let rows = m.rows.map_or("rows unknown (statement)".to_string(), |n| {
                format!("{n} row{}", if n == 1 { "" } else { "s" })
            });
            outln!(
                "{}:{}..{}  {}  {}  {} {}  {}",
                m.file,
                m.start_position,
                m.end_position,
                m.gtid.as_deref().unwrap_or("-"),
                output::local_time(m.commit_time, &tz),
                m.kind,
                m.table,
                rows
            );
        }
    }
    Ok(exit::OK)
}

/// Runs the continuous binlog stream until SIGTERM or Ctrl-C, holding the repository's shared
/// lock (exit 7 when a prune keeps it past `--lock-wait`, or when the lock is lost).
pub async fn stream(config: &Config, job: &JobContext, args: &StreamArgs) -> Result<u8> {
    config.source()?;
    let repository = std::sync::Arc::new(super::open_repository(config).await?);
    let mut options = coffer_scheduler::StreamOptions::from_config(config);
    if let Some(seconds) = args.interval {
        options.ship_interval = std::time::Duration::from_secs(seconds);
    }
    let stats = coffer_scheduler::run_binlog_stream(
        config,
        &repository,
        job,
        &options,
        shutdown_signal(),
        args.lock.or_config(config),
    )
    .await?;
    eprintln!(
        "binlog stream stopped: {} file(s) archived, {} segment(s) shipped",
        stats.files_archived, stats.segments_shipped
    );
    Ok(exit::OK)
}

/// Completes on SIGTERM (systemd stopping the service) or SIGINT (Ctrl-C). The SIGTERM handler
/// is installed when this is called, not when the future is first polled, so a signal sent right
/// after a "press Ctrl-C" message is not lost.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    async move {
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

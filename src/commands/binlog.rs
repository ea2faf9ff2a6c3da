//! `coffer binlog window`.

use anyhow::Result;
use coffer_core::config::Config;
use coffer_restore::pitr;

use super::open_repository;
use crate::{exit, output};

/// Prints the recoverable windows and the archive's gaps; exit 6 when there is a gap.
pub async fn window(config: &Config, json: bool) -> Result<u8> {
    let repository = open_repository(config).await?;
    let manifests = repository.list().await?;
    let windows = pitr::windows(&manifests);
    let gaps = pitr::archive_gaps(&manifests);
    if json {
        output::json(&serde_json::json!({ "windows": windows, "gaps": gaps }))?;
    } else {
        println!("{}", pitr::describe_windows(&windows, &config.timezone));
        for gap in &gaps {
            println!("GAP: {gap}");
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

/// Runs the continuous binlog stream until SIGTERM or Ctrl-C.
pub async fn stream(config: &Config, interval: Option<u64>) -> Result<u8> {
    let repository = super::open_repository(config).await?;
    let mut options = coffer_scheduler::StreamOptions::from_config(config);
    if let Some(seconds) = interval {
        options.ship_interval = std::time::Duration::from_secs(seconds);
    }
    let stats =
        coffer_scheduler::run_binlog_stream(config, &repository, &options, shutdown_signal())
            .await?;
    eprintln!(
        "binlog stream stopped: {} file(s) archived, {} segment(s) shipped",
        stats.files_archived, stats.segments_shipped
    );
    Ok(exit::OK)
}

/// Completes on SIGTERM (systemd stopping the service) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
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

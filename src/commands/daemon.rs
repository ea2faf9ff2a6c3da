//! `coffer daemon`: [`coffer_scheduler::daemon::run`] on the configured listen address, stopped
//! by SIGTERM or SIGINT, its configuration reloaded on SIGHUP.

use std::path::Path;

use anyhow::Result;
use coffer_core::Error;
use coffer_core::config::{Config, ProcessEnv};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::exit;

/// `coffer daemon`: runs until SIGTERM or SIGINT, then stops as the daemon's loop describes.
pub async fn run(config: &Config) -> Result<u8> {
    let listener = tokio::net::TcpListener::bind(config.daemon.listen)
        .await
        .map_err(|e| {
            Error::config(format!(
                "[daemon] listen {}: cannot listen there: {e}",
                config.daemon.listen
            ))
        })?;
    tracing::info!(listen = %config.daemon.listen, "serving /up and /metrics");
    let (reload, configs) = watch::channel(config.clone());
    let mut hangups = signal(SignalKind::hangup())?;
    let path = config.path.clone();
    let reloader = tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match reloaded(&path) {
                Ok(new) => {
                    tracing::info!(config = %path.display(), "SIGHUP: configuration reloaded");
                    if reload.send(new).is_err() {
                        break;
                    }
                }
                Err(e) => tracing::error!(
                    config = %path.display(),
                    error = %e,
                    "SIGHUP: the new configuration is invalid; keeping the running one"
                ),
            }
        }
    });
    let result =
        coffer_scheduler::daemon::run(configs, listener, super::binlog::shutdown_signal()).await;
    reloader.abort();
    result?;
    Ok(exit::OK)
}

/// The configuration file read again, validated as at start.
fn reloaded(path: &Path) -> coffer_core::Result<Config> {
    Config::load(path, &ProcessEnv)
}

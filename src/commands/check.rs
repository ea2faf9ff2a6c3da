//! `coffer check`: prints [`coffer_scheduler::health::Health`].

use std::path::Path;

use anyhow::Result;
use coffer_scheduler::health::health;

use super::{load_config, open_repository};
use crate::{exit, output};

/// Runs every check, prints each, and exits with the code of the first failure.
pub async fn run(config_path: Option<&Path>, json: bool) -> Result<u8> {
    // A configuration that does not load ends the check at once: nothing else can be tried.
    let config = load_config(config_path)?;
    let repository = open_repository(&config).await?;
    let report = health(&config, &repository).await;
    let code = report
        .first_failure()
        .and_then(|i| i.error_kind)
        .map_or(exit::OK, exit::code_for);
    if json {
        output::json(&report)?;
    } else {
        for item in &report.items {
            println!(
                "{:<16} {:<6} {}",
                item.name,
                if item.ok { "ok" } else { "FAILED" },
                item.detail
            );
        }
    }
    Ok(code)
}

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

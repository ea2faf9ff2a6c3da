//! `coffer check`: is everything a backup needs in place?

use std::path::Path;

use anyhow::Result;
use coffer_core::client::{self, Endpoint};
use coffer_core::config::RepositoryLocation;
use coffer_core::storage::Capabilities;
use serde::Serialize;

use super::{load_config, open_repository};
use crate::{exit, output};

#[derive(Serialize)]
struct CheckItem {
    name: &'static str,
    ok: bool,
    detail: String,
    #[serde(skip)]
    code: u8,
}

impl CheckItem {
    fn from_result(name: &'static str, result: coffer_core::Result<String>) -> Self {
        match result {
            Ok(detail) => Self {
                name,
                ok: true,
                detail,
                code: exit::OK,
            },
            Err(e) => Self {
                name,
                ok: false,
                detail: e.to_string(),
                code: exit::code_for(e.kind()),
            },
        }
    }
}

#[derive(Serialize)]
struct CheckReport {
    ok: bool,
    items: Vec<CheckItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s3_capabilities: Option<Capabilities>,
}

/// Runs every check, prints each, and exits with the code of the first failure.
pub async fn run(config_path: Option<&Path>, json: bool) -> Result<u8> {
    // A configuration that does not load ends the check at once: nothing else can be tried.
    let config = load_config(config_path)?;
    let mut items = vec![CheckItem::from_result(
        "config",
        Ok(config.path.display().to_string()),
    )];

    let endpoint = Endpoint::from(&config.source);
    items.push(CheckItem::from_result(
        "database",
        check_database(&endpoint, &config.source).await,
    ));
    let tool = client::Tool::find(&["mariadb-dump", "mysqldump"]);
    items.push(CheckItem::from_result(
        "dump tool",
        tool.map(|t| format!("{} ({})", t.path.display(), t.version)),
    ));

    let mut s3_capabilities = None;
    let repository = open_repository(&config).await?;
    let location = repository.storage().location();
    let reachable = repository.check_reachable().await.map(|initialized| {
        let state = if initialized {
            "initialized"
        } else {
            "reachable, no backup yet"
        };
        format!("{location} ({state})")
    });
    let storage_ok = reachable.is_ok();
    items.push(CheckItem::from_result("storage", reachable));
    if storage_ok {
        let probe = repository.storage().probe().await;
        match (&config.repository.location, probe) {
            // Reachable is not writable: the probe writes, reads and removes a small object.
            (RepositoryLocation::Local(_), Ok(_)) => {}
            (RepositoryLocation::Local(_), Err(e)) => {
                items.push(CheckItem::from_result("storage write", Err(e)))
            }
            (RepositoryLocation::S3(_), Ok(caps)) => {
                let detail = format!(
                    "multipart {}, conditional write {}, object lock {}",
                    yes_no(caps.multipart),
                    if caps.conditional_write {
                        "honoured"
                    } else {
                        "ignored by the server"
                    },
                    yes_no(caps.object_lock)
                );
                let result = if caps.multipart {
                    Ok(detail)
                } else {
                    Err(coffer_core::Error::storage(format!(
                        "{detail}: multipart uploads are required"
                    )))
                };
                items.push(CheckItem::from_result("s3 capabilities", result));
                s3_capabilities = Some(caps);
            }
            (RepositoryLocation::S3(_), Err(e)) => {
                items.push(CheckItem::from_result("s3 capabilities", Err(e)))
            }
        }
    }

    let code = items.iter().find(|i| !i.ok).map_or(exit::OK, |i| i.code);
    if json {
        output::json(&CheckReport {
            ok: code == exit::OK,
            items,
            s3_capabilities,
        })?;
    } else {
        for item in &items {
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

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// The source answers, and its account has what `backup run full` checks before dumping (the
/// same parser and the same findings), for the configured databases or else every user database.
async fn check_database(
    endpoint: &Endpoint,
    source: &coffer_core::config::SourceConfig,
) -> coffer_core::Result<String> {
    let mut conn = client::connect(endpoint).await?;
    let info = client::server_info(&mut conn).await?;
    let grants = client::grants(&mut conn).await?;
    let databases = if source.databases.is_empty() {
        &info.user_databases
    } else {
        &source.databases
    };
    let found = client::missing_backup_privileges(&grants, databases, info.log_bin);
    let mut problems = Vec::new();
    if !found.missing.is_empty() {
        problems.push(format!(
            "{endpoint} lacks privileges a backup needs: {}",
            found.missing.join(", ")
        ));
    }
    if !found.unseen.is_empty() && !source.allow_incomplete {
        problems.push(format!(
            "the account {} cannot see {}",
            grants.account,
            found.unseen_text()
        ));
    }
    if !problems.is_empty() {
        return Err(coffer_core::Error::database(problems.join("; ")));
    }
    let privileges = if found.unseen.is_empty() {
        "privileges sufficient".to_string()
    } else {
        format!(
            "privileges sufficient with allow_incomplete, but backups may be missing {}",
            found.unseen_text()
        )
    };
    Ok(format!(
        "{endpoint}: {} (server_id {}, binary log {}), {} database(s), {privileges}",
        info.version,
        info.server_id,
        if info.log_bin {
            "on"
        } else {
            "OFF: no point-in-time recovery"
        },
        info.user_databases.len()
    ))
}

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
    let mut items = vec![CheckItem {
        name: "config",
        ok: true,
        detail: config.path.display().to_string(),
        code: exit::OK,
    }];

    let endpoint = Endpoint::from(&config.source);
    items.push(match check_database(&endpoint).await {
        Ok(detail) => CheckItem {
            name: "database",
            ok: true,
            detail,
            code: exit::OK,
        },
        Err(e) => CheckItem {
            name: "database",
            ok: false,
            detail: e.to_string(),
            code: exit::code_for(e.kind()),
        },
    });

    items.push(match client::Tool::find(&["mariadb-dump", "mysqldump"]) {
        Ok(tool) => CheckItem {
            name: "dump tool",
            ok: true,
            detail: format!("{} ({})", tool.path.display(), tool.version),
            code: exit::OK,
        },
        Err(e) => CheckItem {
            name: "dump tool",
            ok: false,
            detail: e.to_string(),
            code: exit::code_for(e.kind()),
        },
    });

    let mut s3_capabilities = None;
    let repository = open_repository(&config).await?;
    let reachable = repository.check_reachable().await;
    match reachable {
        Ok(initialized) => {
            let state = if initialized {
                "initialized"
            } else {
                "reachable, no backup yet"
            };
            items.push(CheckItem {
                name: "storage",
                ok: true,
                detail: format!("{} ({state})", repository.storage().location()),
                code: exit::OK,
            });
            if matches!(config.repository.location, RepositoryLocation::Local(_)) {
                // Reachable is not writable: write, read and remove a probe object.
                if let Err(e) = repository.storage().probe().await {
                    items.push(CheckItem {
                        name: "storage write",
                        ok: false,
                        detail: e.to_string(),
                        code: exit::code_for(e.kind()),
                    });
                }
            } else {
                match repository.storage().probe().await {
                    Ok(caps) => {
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
                        items.push(CheckItem {
                            name: "s3 capabilities",
                            ok: caps.multipart,
                            detail,
                            code: if caps.multipart {
                                exit::OK
                            } else {
                                exit::STORAGE
                            },
                        });
                        s3_capabilities = Some(caps);
                    }
                    Err(e) => items.push(CheckItem {
                        name: "s3 capabilities",
                        ok: false,
                        detail: e.to_string(),
                        code: exit::code_for(e.kind()),
                    }),
                }
            }
        }
        Err(e) => items.push(CheckItem {
            name: "storage",
            ok: false,
            detail: e.to_string(),
            code: exit::code_for(e.kind()),
        }),
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

async fn check_database(endpoint: &Endpoint) -> coffer_core::Result<String> {
    let mut conn = client::connect(endpoint).await?;
    let info = client::server_info(&mut conn).await?;
    let grants = client::grants(&mut conn).await?;
    let missing = client::missing_backup_privileges(&grants, info.log_bin);
    if !missing.is_empty() {
        return Err(coffer_core::Error::database(format!(
            "{endpoint} lacks privileges a backup needs: {}",
            missing.join(", ")
        )));
    }
    Ok(format!(
        "{endpoint}: {} (server_id {}, binary log {}), {} database(s), privileges sufficient",
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

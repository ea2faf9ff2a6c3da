//! What `coffer check` reports, as a value: is everything a backup needs in place? The command
//! prints it; the daemon will serve the same checks (`GET /up`).

use coffer_core::client::{self, Endpoint};
use coffer_core::config::{Config, RepositoryLocation};
use coffer_core::repository::Repository;
use coffer_core::storage::Capabilities;
use coffer_core::{ErrorKind, Result};
use serde::Serialize;

/// One checked thing.
#[derive(Debug, Clone, Serialize)]
pub struct HealthItem {
    /// What was checked: `config`, `database`, `dump tool`, `storage`, `storage write`,
    /// `s3 capabilities`.
    pub name: &'static str,
    /// Whether it is in place.
    pub ok: bool,
    /// What was found, or what is wrong.
    pub detail: String,
    /// The kind of the failure, which decides the exit code.
    #[serde(skip)]
    pub error_kind: Option<ErrorKind>,
}

impl HealthItem {
    fn from_result(name: &'static str, result: Result<String>) -> Self {
        match result {
            Ok(detail) => Self {
                name,
                ok: true,
                detail,
                error_kind: None,
            },
            Err(e) => Self {
                name,
                ok: false,
                detail: e.to_string(),
                error_kind: Some(e.kind()),
            },
        }
    }
}

/// Every check, in order. Serialized, it is the JSON of `coffer check --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Whether every item passed.
    pub ok: bool,
    /// The items, in the order they were checked.
    pub items: Vec<HealthItem>,
    /// What the S3 server can do, when the repository is on S3 and answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_capabilities: Option<Capabilities>,
}

impl Health {
    /// The first item that failed.
    pub fn first_failure(&self) -> Option<&HealthItem> {
        self.items.iter().find(|i| !i.ok)
    }
}

/// Runs every check against `config`'s source and `repository` (which it probes by writing,
/// reading and removing a small object). Failures are items, not errors.
pub async fn health(config: &Config, repository: &Repository) -> Health {
    let mut items = vec![HealthItem::from_result(
        "config",
        Ok(config.path.display().to_string()),
    )];
    // Without `[source]` the file backs up only files and configuration: no database to reach
    // and no dump tool to find.
    if let Some(source) = &config.source {
        let endpoint = Endpoint::from(source).with_stall_timeout(config.stall_timeout);
        items.push(HealthItem::from_result(
            "database",
            check_database(&endpoint, source).await,
        ));
        let tool = client::Tool::find(&["mariadb-dump", "mysqldump"]);
        items.push(HealthItem::from_result(
            "dump tool",
            tool.map(|t| format!("{} ({})", t.path.display(), t.version)),
        ));
    } else {
        items.push(HealthItem::from_result(
            "database",
            Ok("none configured (no [source] section)".to_string()),
        ));
    }

    let mut s3_capabilities = None;
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
    items.push(HealthItem::from_result("storage", reachable));
    if storage_ok {
        let probe = repository.storage().probe().await;
        match (&config.repository.location, probe) {
            // Reachable is not writable: the probe writes, reads and removes a small object.
            (RepositoryLocation::Local(_), Ok(_)) => {}
            (RepositoryLocation::Local(_), Err(e)) => {
                items.push(HealthItem::from_result("storage write", Err(e)))
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
                items.push(HealthItem::from_result("s3 capabilities", result));
                s3_capabilities = Some(caps);
            }
            (RepositoryLocation::S3(_), Err(e)) => {
                items.push(HealthItem::from_result("s3 capabilities", Err(e)))
            }
        }
    }

    Health {
        ok: items.iter().all(|i| i.ok),
        items,
        s3_capabilities,
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// The source answers, and its account has what `backup run full` checks before dumping (the
/// same parser and the same findings), for the configured databases or else every user database.
async fn check_database(
    endpoint: &Endpoint,
    source: &coffer_core::config::SourceConfig,
) -> Result<String> {
    let mut conn = client::connect(endpoint).await?;
    let info = client::server_info(&mut conn, endpoint).await?;
    let grants = client::grants(&mut conn, endpoint).await?;
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

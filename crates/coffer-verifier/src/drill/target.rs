//! The sandbox a drill restores into: a managed throwaway server or an external one under a
//! prefix, the version check, and tearing it down (or keeping it for inspection).

use super::*;

impl Drill<'_> {
    pub(super) fn sandbox_label(&self, target: Option<&Target>) -> String {
        match (&self.config.drill.sandbox, target) {
            (DrillSandbox::Managed, Some(t)) => {
                format!("managed mariadbd on 127.0.0.1:{}", t.endpoint.port)
            }
            (DrillSandbox::Managed, None) => "managed mariadbd".into(),
            (
                DrillSandbox::External {
                    host,
                    port,
                    database_prefix,
                    ..
                },
                _,
            ) => format!("external {host}:{port} (databases prefixed {database_prefix})"),
        }
    }

    pub(super) async fn start_target(&self) -> Result<Target> {
        match &self.config.drill.sandbox {
            DrillSandbox::Managed => {
                let password = random_password()?;
                let pw = password.clone();
                let (server, endpoint) = tokio::task::spawn_blocking(move || {
                    let sandbox = Sandbox::start(SandboxOptions {
                        server_id: SANDBOX_SERVER_ID,
                        log_bin: false,
                        ..Default::default()
                    })?;
                    let endpoint =
                        sandbox.create_user(SANDBOX_USER, &pw, "ALL PRIVILEGES ON *.*")?;
                    // The install's password-less accounts reachable over TCP would let any
                    // local user read the restored data: only root over the private socket stays.
                    sandbox.sql(
                        "DELETE FROM mysql.global_priv WHERE User = '' OR (User = 'root' AND Host <> 'localhost'); FLUSH PRIVILEGES;",
                    )?;
                    Ok::<_, crate::sandbox::SandboxError>((sandbox, endpoint))
                })
                .await
                .map_err(|e| Error::other(format!("sandbox task failed: {e}")))?
                .map_err(|e| Error::other(e.to_string()))?;
                info!(port = endpoint.port, "sandbox started");
                Ok(Target {
                    endpoint,
                    server: Some(server),
                    names: self
                        .full
                        .databases
                        .iter()
                        .map(|d| (d.clone(), d.clone()))
                        .collect(),
                    external: false,
                })
            }
            DrillSandbox::External {
                host,
                port,
                user,
                password,
                database_prefix,
                tls,
            } => Ok(Target {
                endpoint: Endpoint {
                    host: host.clone(),
                    port: *port,
                    user: user.clone(),
                    password: password.clone(),
                    tls: tls.clone(),
                    stall: coffer_core::client::Stall::target(self.config.stall_timeout),
                },
                server: None,
                names: self
                    .full
                    .databases
                    .iter()
                    .map(|d| (d.clone(), format!("{database_prefix}{d}")))
                    .collect(),
                external: true,
            }),
        }
    }

    pub(super) async fn check_versions(&mut self, target: &Target) -> Option<String> {
        let version = match client::connect(&target.endpoint).await {
            Ok(mut conn) => sqlx::query("SELECT VERSION()")
                .fetch_one(&mut conn)
                .await
                .ok()
                .and_then(|row| row.try_get::<String, _>(0).ok()),
            Err(_) => None,
        }?;
        // MariaDB's release series (10.6, 10.11, 11.4) are its major versions.
        let major = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
        let flavour = |v: &str| v.to_ascii_lowercase().contains("mariadb");
        let source = &self.full.source.server_version;
        if major(source) != major(&version) || flavour(source) != flavour(&version) {
            let warning = format!(
                "the sandbox runs {version} but the backup came from {source}: a restore onto the production version may behave differently"
            );
            warn!("{warning}");
            self.warnings.push(warning);
        }
        Some(version)
    }

    pub(super) async fn tear_down(&self, target: Target, keep: bool) -> Option<KeptSandbox> {
        let databases: Vec<String> = target.names.iter().map(|(_, to)| to.clone()).collect();
        if keep {
            return Some(KeptSandbox {
                endpoint: target.endpoint,
                server: target.server,
                databases,
            });
        }
        if target.external {
            // Only the prefixed names this drill wrote.
            match client::connect(&target.endpoint).await {
                Ok(mut conn) => {
                    for db in &databases {
                        if let Err(e) = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS {}",
                            names::quote_ident(db)
                        ))
                        .execute(&mut conn)
                        .await
                        {
                            warn!(database = %db, error = %e, "dropping the drill's database");
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "the drill's databases on the external server are left behind")
                }
            }
        }
        if let Some(server) = target.server {
            // Stopping waits for mariadbd: off the async threads.
            let _ = tokio::task::spawn_blocking(move || drop(server)).await;
            info!("sandbox removed");
        }
        None
    }
}

/// The sandbox name of a backup database.
pub(super) fn sandbox_name<'n>(names: &'n [(String, String)], backup_name: &'n str) -> &'n str {
    names
        .iter()
        .find(|(from, _)| from == backup_name)
        .map_or(backup_name, |(_, to)| to.as_str())
}

/// A random password for the managed sandbox's account (hex of 18 bytes from the OS).
pub(super) fn random_password() -> Result<String> {
    let mut bytes = [0u8; 18];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::other(format!("reading /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl KeptSandbox {
    /// A line telling where the kept sandbox is (the password is never printed).
    pub fn describe(&self) -> String {
        format!(
            "sandbox kept at {}:{} (user {}; databases {})",
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.user,
            self.databases.join(", ")
        )
    }

    /// The account's password, for writing to a 0600 file.
    pub fn password(&self) -> &Secret {
        &self.endpoint.password
    }
}

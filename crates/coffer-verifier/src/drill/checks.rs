//! The checklist items that inspect the restored sandbox: schema and data against the manifest,
//! the application's checks and the SQL probes.

use super::target::sandbox_name;
use super::*;

impl Drill<'_> {
    /// Every table, view, routine, trigger and event of the backup exists in the sandbox.
    pub(super) async fn check_schema(&self, target: &Target) -> (Status, Vec<String>) {
        let mut conn = match client::connect(&target.endpoint).await {
            Ok(c) => c,
            Err(e) => {
                return (
                    Status::Fail,
                    vec![format!("connecting to the sandbox: {e}")],
                );
            }
        };
        let mut missing = Vec::new();
        let mut present = Vec::new();
        for db in &self.full.expectations.databases {
            let name = sandbox_name(&target.names, &db.name);
            let queries: [(&str, &str, Vec<&String>); 5] = [
                (
                    "table",
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
                    db.tables.iter().map(|t| &t.name).collect(),
                ),
                (
                    "view",
                    "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?",
                    db.views.iter().collect(),
                ),
                (
                    "routine",
                    "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?",
                    db.routines.iter().collect(),
                ),
                (
                    "trigger",
                    "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?",
                    db.triggers.iter().collect(),
                ),
                (
                    "event",
                    "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?",
                    db.events.iter().collect(),
                ),
            ];
            for (kind, query, expected) in queries {
                let rows = match sqlx::query(query).bind(name).fetch_all(&mut conn).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        return (
                            Status::Fail,
                            vec![format!("listing {kind}s of {name}: {e}")],
                        );
                    }
                };
                let found: std::collections::BTreeSet<String> = rows
                    .iter()
                    .filter_map(|r| r.try_get::<String, _>(0).ok())
                    .collect();
                let (here, gone): (Vec<&String>, Vec<&String>) =
                    expected.iter().partition(|n| found.contains(n.as_str()));
                missing.extend(gone.iter().map(|n| format!("{}.{n} ({kind})", db.name)));
                if !here.is_empty() {
                    present.push(format!(
                        "{} {kind}(s) of {}: {}",
                        here.len(),
                        db.name,
                        here.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        if missing.is_empty() {
            (Status::Pass, present)
        } else {
            let mut evidence = vec![format!("missing in the sandbox: {}", missing.join(", "))];
            evidence.extend(present);
            (Status::Fail, evidence)
        }
    }

    /// Dumps the restored databases the way backups are dumped and compares row counts and data
    /// digests with the manifest's expectations.
    pub(super) async fn check_data(&self, target: &Target) -> (Status, Vec<String>) {
        let tool = match Tool::find(&["mariadb-dump", "mysqldump"]) {
            Ok(t) => t,
            Err(e) => return (Status::Fail, vec![e.to_string()]),
        };
        let defaults = match DefaultsFile::new(&target.endpoint) {
            Ok(d) => d,
            Err(e) => return (Status::Fail, vec![e.to_string()]),
        };
        let mut args = vec![defaults.arg()];
        args.extend(DUMP_OPTIONS.iter().map(|o| o.to_string()));
        // `--` ends the options: a database may be named `-x`.
        args.extend(["--databases".into(), "--".into()]);
        args.extend(target.names.iter().map(|(_, to)| to.clone()));
        let stall = self.config.stall_timeout;
        let cancel = self.job.cancel.clone();
        let facts = tokio::task::spawn_blocking(move || {
            let facts = run_dump(&tool.path, &args, &mut std::io::sink(), stall, &cancel);
            drop(defaults);
            facts
        })
        .await;
        let facts = match facts {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return (Status::Fail, vec![format!("dumping the sandbox: {e}")]),
            Err(e) => return (Status::Fail, vec![format!("dump task failed: {e}")]),
        };
        compare_data(&self.full.expectations, &facts.expectations, &target.names)
    }

    /// The variables app checks and hooks see: a few of coffer's own (`PATH`, `HOME`, locale),
    /// the configured `[drill.env]` over the defaults, then the sandbox's address and account,
    /// which nothing can override (an app check must never reach production).
    pub(super) fn environment(&self, target: &Target) -> Vec<(String, String)> {
        // Cloud credentials and coffer's own secrets stay out of the application's reach.
        let mut env = process::scrubbed_env();
        env.extend(
            self.config
                .drill
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        env.extend([
            ("DB_CONNECTION".to_string(), "mysql".to_string()),
            ("DB_HOST".to_string(), target.endpoint.host.clone()),
            ("DB_PORT".to_string(), target.endpoint.port.to_string()),
            (
                "DB_DATABASE".to_string(),
                target
                    .names
                    .first()
                    .map(|(_, to)| to.clone())
                    .unwrap_or_default(),
            ),
            ("DB_USERNAME".to_string(), target.endpoint.user.clone()),
            (
                "DB_PASSWORD".to_string(),
                target.endpoint.password.expose().to_string(),
            ),
        ]);
        env
    }

    pub(super) async fn check_app(&self, env: &[(String, String)]) -> (Status, Vec<String>) {
        check_commands(&self.config.drill.app_checks, env, &self.job.cancel).await
    }

    pub(super) async fn check_sql(&self, target: &Target) -> (Status, Vec<String>) {
        let checks = &self.config.drill.sql_checks;
        if checks.is_empty() {
            return (
                Status::Skipped,
                vec!["no [[drill.sql_checks]] configured".into()],
            );
        }
        let database = target
            .names
            .first()
            .map(|(_, to)| to.clone())
            .unwrap_or_default();
        let mut status = Status::Pass;
        let mut evidence = Vec::new();
        for check in checks {
            let (ok, line) = run_sql_check(&target.endpoint, &database, check).await;
            if !ok {
                status = Status::Fail;
            }
            evidence.push(line);
        }
        (status, evidence)
    }
}

/// Compares the expectations read back from the sandbox with the manifest's.
pub(super) fn compare_data(
    recorded: &Expectations,
    found: &Expectations,
    names: &[(String, String)],
) -> (Status, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for db in &recorded.databases {
        let sandbox = sandbox_name(names, &db.name);
        let restored = found.databases.iter().find(|d| d.name == sandbox);
        for table in &db.tables {
            let qualified = format!("{}.{}", db.name, table.name);
            match restored.and_then(|d| d.tables.iter().find(|t| t.name == table.name)) {
                None => problems.push(format!("{qualified}: no data in the sandbox (table missing)")),
                Some(t) if t.rows != table.rows => problems.push(format!(
                    "{qualified}: {} rows in the sandbox, {} recorded in the manifest",
                    t.rows, table.rows
                )),
                Some(t) if t.sha256 != table.sha256 => problems.push(format!(
                    "{qualified}: data digest {} in the sandbox, {} recorded in the manifest ({} rows each)",
                    short(&t.sha256),
                    short(&table.sha256),
                    t.rows
                )),
                Some(t) => checked.push(format!("{qualified} {} rows", t.rows)),
            }
        }
    }
    let summary = format!(
        "{} table(s): row count and SHA-256 equal to the manifest: {}",
        checked.len(),
        checked.join(", ")
    );
    if problems.is_empty() {
        (Status::Pass, vec![summary])
    } else {
        problems.push(summary);
        (Status::Fail, problems)
    }
}

pub(super) fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

pub(super) async fn check_commands(
    checks: &[AppCheck],
    env: &[(String, String)],
    cancel: &Cancel,
) -> (Status, Vec<String>) {
    if checks.is_empty() {
        return (
            Status::Skipped,
            vec!["no [[drill.app_checks]] configured".into()],
        );
    }
    let mut status = Status::Pass;
    let mut evidence = Vec::new();
    for check in checks {
        let name = check.name.as_deref().unwrap_or(&check.command);
        let line = match process::run_shell(
            &check.command,
            env,
            Duration::from_secs(check.timeout_seconds),
            cancel,
        )
        .await
        {
            Ok(run) if run.timed_out.is_none() && run.code == Some(check.expect_exit) => {
                format!(
                    "{name}: ok, exit {} in {:.1} s",
                    check.expect_exit, run.seconds
                )
            }
            Ok(run) => {
                status = Status::Fail;
                format!(
                    "{name}: {} (expected exit {})",
                    run.describe(),
                    check.expect_exit
                )
            }
            Err(e) => {
                status = Status::Fail;
                format!("{name}: {e}")
            }
        };
        evidence.push(line);
    }
    (status, evidence)
}

/// Runs one probe with the `mariadb` client (`-N -B`: rows on lines, columns tab-separated, the
/// form `expect` is written in).
pub(super) async fn run_sql_check(
    endpoint: &Endpoint,
    database: &str,
    check: &SqlCheck,
) -> (bool, String) {
    let name = check.name.as_deref().unwrap_or(&check.query);
    let result = async {
        let tool = Tool::find(&["mariadb", "mysql"])?;
        let defaults = DefaultsFile::new(endpoint)?;
        let output = process::async_tool_command(&tool.path, false)
            .arg(defaults.arg())
            .args(["-N", "-B"])
            .arg(format!("--database={database}"))
            .args(["-e", &check.query])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::other(format!("cannot start {}: {e}", tool.path.display())))?;
        drop(defaults);
        if !output.status.success() {
            return Err(Error::database(process::tail_lines(&output.stderr, 3)));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string())
    }
    .await;
    match (result, &check.expect, check.min_rows) {
        (Err(e), _, _) => (false, format!("{name}: the query failed: {e}")),
        (Ok(actual), Some(expect), _) if actual == expect.trim_end() => {
            (true, format!("{name}: ok, result {actual:?}"))
        }
        (Ok(actual), Some(expect), _) => (
            false,
            format!("{name}: result {actual:?}, expected {expect:?}"),
        ),
        (Ok(actual), None, Some(min)) => {
            let rows = actual.lines().filter(|l| !l.is_empty()).count() as u64;
            if rows >= min {
                (true, format!("{name}: ok, {rows} row(s) (at least {min})"))
            } else {
                (
                    false,
                    format!("{name}: {rows} row(s), expected at least {min}"),
                )
            }
        }
        (Ok(_), None, None) => (false, format!("{name}: neither expect nor min_rows")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::manifest::{DatabaseExpectations, TableExpectation};

    fn expectations(rows: u64, sha: &str) -> Expectations {
        Expectations {
            databases: vec![DatabaseExpectations {
                name: "app".into(),
                tables: vec![TableExpectation {
                    name: "invoices".into(),
                    rows,
                    sha256: sha.into(),
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn data_comparison_names_the_table_and_both_numbers() {
        let names = vec![("app".to_string(), "app".to_string())];
        let (status, evidence) =
            compare_data(&expectations(10, "aa"), &expectations(10, "aa"), &names);
        assert_eq!(status, Status::Pass);
        assert!(evidence[0].contains("app.invoices 10 rows"));
        let (status, evidence) =
            compare_data(&expectations(11, "aa"), &expectations(10, "aa"), &names);
        assert_eq!(status, Status::Fail);
        assert!(
            evidence[0].contains("app.invoices: 10 rows in the sandbox, 11 recorded"),
            "{evidence:?}"
        );
        let (status, evidence) =
            compare_data(&expectations(10, "aa"), &expectations(10, "bb"), &names);
        assert_eq!(status, Status::Fail);
        assert!(evidence[0].contains("digest"), "{evidence:?}");
    }

    #[tokio::test]
    async fn a_command_that_overruns_is_killed_with_its_children() {
        let run = process::run_shell(
            "echo started; sleep 30 & sleep 30",
            &[],
            Duration::from_millis(300),
            &coffer_core::cancel::Cancel::new(),
        )
        .await
        .unwrap();
        assert_eq!(run.timed_out, Some(Duration::from_millis(300)));
        assert!(run.seconds < 10.0);
        assert!(run.output.contains("started"));
    }
}

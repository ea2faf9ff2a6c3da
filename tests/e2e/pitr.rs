//! Point-in-time recovery: a full backup, writes across binlog rotations (a temporary table
//! living across one), an accidental DELETE, more writes; the restore stops right before it.

use std::time::Duration;

use coffer_verifier::{BinlogFormat, SandboxOptions};

use crate::util::{Repo, Setup, gtid_position, private_source, restore_into, restore_target};

fn snapshot(sql: impl Fn(&str) -> String) -> (String, String) {
    (
        sql("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM app.invoices"),
        sql("CHECKSUM TABLE app.invoices"),
    )
}

fn pitr_scenario(format: BinlogFormat, server_id: u32) {
    let source = private_source(SandboxOptions {
        server_id,
        binlog_format: format,
        ..Default::default()
    });
    let sql = |q: &str| source.sql(q).unwrap().trim().to_string();
    sql("CREATE DATABASE app; CREATE TABLE app.invoices (id INT PRIMARY KEY, note VARCHAR(64), amount DECIMAL(10,2)) ENGINE=InnoDB;
         INSERT INTO app.invoices WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100) SELECT n, 'initial', n * 10 FROM s;");
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);

    // Writes across three rotations; a temporary table created before a rotation is used after it.
    sql("INSERT INTO app.invoices VALUES (101, 'after full', 5);
         CREATE TEMPORARY TABLE app.scratch (id INT);
         INSERT INTO app.scratch VALUES (1000), (1001);
         FLUSH BINARY LOGS;
         INSERT INTO app.invoices SELECT id, 'from temp table', 1 FROM app.scratch;
         FLUSH BINARY LOGS;
         UPDATE app.invoices SET amount = amount + 1 WHERE id <= 10;
         FLUSH BINARY LOGS;
         INSERT INTO app.invoices VALUES (102, 'last good write', 7);");
    let reference = snapshot(sql);
    // The operator's clock (Asia/Riyadh, UTC+3 all year) at the last good moment.
    let at =
        sql("SELECT CONVERT_TZ(FROM_UNIXTIME(UNIX_TIMESTAMP()), @@session.time_zone, '+03:00')");
    std::thread::sleep(Duration::from_millis(1500));
    let status = sql("SHOW MASTER STATUS; DELETE FROM app.invoices;");
    let mut cols = status.split('\t');
    let (delete_file, delete_position) = (
        cols.next().unwrap().to_string(),
        cols.next().unwrap().to_string(),
    );
    std::thread::sleep(Duration::from_millis(1100));
    sql("INSERT INTO app.invoices VALUES (9000, 'after the accident', 1);");
    assert_eq!(sql("SELECT COUNT(*) FROM app.invoices"), "1");
    setup.run(&["backup", "run", "incremental"]).expect_code(0);

    let target = restore_target(SandboxOptions {
        server_id: server_id + 1,
        ..Default::default()
    });
    let restore = |extra: &[&str]| restore_into(&setup, &target, extra);
    let target_sql = |q: &str| target.sql(q).unwrap().trim().to_string();

    let dry = restore(&["--at", &at, "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert!(
        dry.stdout.contains("then replay binlogs") && dry.stdout.contains("+03"),
        "{}",
        dry.stdout
    );

    let by_time = restore(&["--at", &at]);
    assert_eq!(by_time.code, 0, "{by_time:#?}");
    assert_eq!(
        snapshot(target_sql),
        reference,
        "--at one second before the accident"
    );

    let position = format!("{delete_file}:{delete_position}");
    let by_position = restore(&["--at-position", &position, "--drop-existing", "--yes"]);
    assert_eq!(by_position.code, 0, "{by_position:#?}");
    assert_eq!(
        snapshot(target_sql),
        reference,
        "--at-position right before the DELETE"
    );

    // Under another name: exact with ROW logging; with MIXED the binlogs name `app` inside
    // statements, which would write into `app` itself, so it is refused before anything happens.
    let renamed = restore(&["--at", &at, "--database", "app_copy"]);
    let copy_exists = || {
        target_sql(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app_copy'",
        )
    };
    match format {
        BinlogFormat::Mixed => {
            renamed.expect_code(9);
            assert!(
                renamed.error_line().contains("not touched")
                    && renamed.error_line().contains("INSERT INTO app.invoices"),
                "{renamed:#?}"
            );
            assert_eq!(copy_exists(), "0");
        }
        _ => {
            assert_eq!(renamed.code, 0, "{renamed:#?}");
            let copy =
                |q: &str| target_sql(&q.replace("app.", "app_copy.")).replace("app_copy.", "app.");
            assert_eq!(snapshot(copy), reference, "--at under another name");
        }
    }

    // Outside every window: refused, with the windows printed.
    let too_late = restore(&["--at", "2099-01-01 00:00:00", "--drop-existing", "--yes"]);
    too_late.expect_code(2);
    assert!(
        too_late.error_line().contains("recoverable windows"),
        "{too_late:#?}"
    );
    let too_early = restore(&["--at", "2001-01-01 00:00:00", "--drop-existing", "--yes"]);
    too_early.expect_code(2);
    assert!(
        too_early.error_line().contains("recoverable windows"),
        "{too_early:#?}"
    );
}

#[test]
fn pitr_stops_right_before_the_accidental_delete_row_format() {
    pitr_scenario(BinlogFormat::Row, 610);
}

#[test]
fn pitr_stops_right_before_the_accidental_delete_mixed_format() {
    pitr_scenario(BinlogFormat::Mixed, 620);
}

#[test]
fn a_deleted_binlog_object_is_reported_before_replay() {
    let source = private_source(SandboxOptions {
        server_id: 630,
        ..Default::default()
    });
    source.sql("CREATE DATABASE app; CREATE TABLE app.invoices (id INT PRIMARY KEY, note VARCHAR(64), amount DECIMAL(10,2)); INSERT INTO app.invoices VALUES (1, 'a', 1);").unwrap();
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    source.sql("INSERT INTO app.invoices VALUES (2, 'b', 2); FLUSH BINARY LOGS; INSERT INTO app.invoices VALUES (3, 'c', 3);").unwrap();
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    let binlogs = setup
        .run(&["backup", "list", "--kind", "binlog", "--json"])
        .json();
    let first = binlogs[0]["id"].as_str().unwrap();
    let show = setup.run(&["backup", "show", first, "--json"]).json();
    std::fs::remove_file(
        setup
            .repo_dir()
            .join(show["artifacts"][0]["key"].as_str().unwrap()),
    )
    .unwrap();
    let gtid = gtid_position(&source);

    let target = restore_target(SandboxOptions {
        server_id: 631,
        ..Default::default()
    });
    let run = restore_into(&setup, &target, &["--at-gtid", &gtid]);
    assert_ne!(run.code, 0, "{run:#?}");
    assert!(run.error_line().contains("not touched"), "{run:#?}");
    assert_eq!(
        target
            .sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app'")
            .unwrap()
            .trim(),
        "0"
    );
}

/// The target's `@@gtid_binlog_pos` entry in `domain` (empty when it has none).
fn position_in_domain(target: &coffer_verifier::Sandbox, domain: u32) -> String {
    target
        .sql("SELECT @@gtid_binlog_pos")
        .unwrap()
        .trim()
        .split(',')
        .find(|g| g.split('-').next() == Some(&domain.to_string()))
        .unwrap_or("")
        .to_string()
}

/// A strict-mode source with writes after its full backup, across a rotation: the backup's
/// setup, the newest GTID and the rows at that moment. The rows are then deleted (after it).
fn strict_source(server_id: u32) -> (coffer_verifier::Sandbox, Setup, String, (String, String)) {
    let source = private_source(SandboxOptions {
        server_id,
        binlog_format: BinlogFormat::Row,
        gtid_strict_mode: true,
        ..Default::default()
    });
    let sql = |q: &str| source.sql(q).unwrap().trim().to_string();
    sql("CREATE DATABASE app; CREATE TABLE app.invoices (id INT PRIMARY KEY, note VARCHAR(64), amount DECIMAL(10,2)) ENGINE=InnoDB;
         INSERT INTO app.invoices VALUES (1, 'initial', 10), (2, 'initial', 20);");
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    sql("INSERT INTO app.invoices VALUES (3, 'after full', 30); FLUSH BINARY LOGS;
         UPDATE app.invoices SET amount = amount * 2; INSERT INTO app.invoices VALUES (4, 'last', 40);");
    let gtid = sql("SELECT @@gtid_binlog_pos");
    let reference = snapshot(sql);
    sql("DELETE FROM app.invoices WHERE id > 1;");
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    (source, setup, gtid, reference)
}

/// `gtid_strict_mode=ON` on both sides, a fresh target whose own history (the dump's load
/// included) goes into a domain of its own: the replay keeps the source's GTIDs exactly, so the
/// target's position in the source's domain is the source's.
#[test]
fn pitr_into_a_fresh_strict_target_keeps_the_source_gtids() {
    let (_source, setup, gtid, reference) = strict_source(660);
    assert!(gtid.starts_with("0-660-"), "{gtid}");
    let target = restore_target(SandboxOptions {
        server_id: 661,
        gtid_strict_mode: true,
        extra_args: vec!["--gtid-domain-id=1".into()],
        ..Default::default()
    });
    let dry = restore_into(&setup, &target, &["--at-gtid", &gtid, "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert!(dry.stdout.contains("GTIDs: kept"), "{}", dry.stdout);

    let own_before = position_in_domain(&target, 1);
    let run = restore_into(&setup, &target, &["--at-gtid", &gtid, "--json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let report = run.json();
    assert_eq!(report["gtids"], "kept", "{report}");
    assert_eq!(report["last_gtid"], gtid.as_str(), "{report}");
    let target_sql = |q: &str| target.sql(q).unwrap().trim().to_string();
    assert_eq!(snapshot(target_sql), reference);
    assert_eq!(
        position_in_domain(&target, 0),
        gtid,
        "the source's GTIDs, kept"
    );
    // Loading the dump wrote transactions of the target's own, in its own domain: had that
    // been the source's, they would have been ahead of the first replayed GTID.
    let own_after = position_in_domain(&target, 1);
    assert!(
        own_after.starts_with("1-661-") && own_after != own_before,
        "the dump's load is in the target's own domain: {own_before} -> {own_after}"
    );
}

/// `gtid_strict_mode=ON` on both sides, and a target with a history of its own in the source's
/// domain, ahead of the source's numbers: keeping the source's GTIDs would fail (ERROR 1950),
/// renumbering them in domain 0 would lie. Refused before anything is touched; with
/// `[restore] gtid_domain = 7` the replay goes into domain 7. Under a new name (ROW format,
/// where `--rewrite-db` is exact).
#[test]
fn pitr_into_a_strict_target_ahead_of_the_source_needs_a_domain_of_its_own() {
    let (_source, setup, gtid, reference) = strict_source(670);
    let target = restore_target(SandboxOptions {
        server_id: 671,
        gtid_strict_mode: true,
        ..Default::default()
    });
    // Twenty transactions of its own in domain 0: ahead of the source's numbers.
    let history: String = (1..=20)
        .map(|i| format!("INSERT INTO other.t VALUES ({i});"))
        .collect();
    target
        .sql(&format!(
            "CREATE DATABASE other; CREATE TABLE other.t (id INT PRIMARY KEY); {history}"
        ))
        .unwrap();
    let state = |t: &coffer_verifier::Sandbox| {
        t.sql("SELECT @@gtid_binlog_state, (SELECT COUNT(*) FROM other.t), (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'app%')")
            .unwrap()
            .trim()
            .to_string()
    };
    let before = state(&target);
    let own = position_in_domain(&target, 0);
    assert!(own.starts_with("0-671-"), "{own}");
    let args = ["--at-gtid", gtid.as_str(), "--database", "app_restored"];

    let dry = restore_into(&setup, &target, &[&args[..], &["--dry-run"]].concat());
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert!(dry.stdout.contains("GTIDs: refused"), "{}", dry.stdout);
    let refused = restore_into(&setup, &target, &args);
    refused.expect_code(9);
    let error = refused.error_line();
    assert!(
        error.contains("gtid_strict_mode=ON")
            && error.contains(&own)
            && error.contains("gtid_domain")
            && error.contains("not touched"),
        "{refused:#?}"
    );
    assert_eq!(state(&target), before, "nothing changed on the target");

    setup.append_config("\n[restore]\ngtid_domain = 7\n");
    let dry = restore_into(&setup, &target, &[&args[..], &["--dry-run"]].concat());
    assert!(dry.stdout.contains("GTIDs: domain 7"), "{}", dry.stdout);
    let run = restore_into(&setup, &target, &[&args[..], &["--json"]].concat());
    assert_eq!(run.code, 0, "{run:#?}");
    let report = run.json();
    assert_eq!(report["gtids"], "domain 7", "{report}");
    // Three transactions after the full backup, numbered by the target in domain 7.
    assert_eq!(report["last_gtid"], "7-671-3", "{report}");
    assert_eq!(position_in_domain(&target, 7), "7-671-3");
    let binlog_state = target.sql("SELECT @@gtid_binlog_state").unwrap();
    assert!(
        !binlog_state.contains("-670-"),
        "no GTID of the source's server id on the target: {binlog_state}"
    );
    // CHECKSUM TABLE prints the table's name: compare under the source's.
    let target_sql = |q: &str| {
        target
            .sql(&q.replace("app.", "app_restored."))
            .unwrap()
            .trim()
            .replace("app_restored.", "app.")
    };
    assert_eq!(snapshot(target_sql), reference);
    assert_eq!(
        target
            .sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app'")
            .unwrap()
            .trim(),
        "0",
        "nothing is written under the source's name"
    );
}

/// The binlogs carry every database the source writes: a backup of `app` alone must not replay
/// the changes of `other` onto a target that has its own `other`.
#[test]
fn a_replay_that_would_change_databases_outside_the_backup_is_refused() {
    let source = private_source(SandboxOptions {
        server_id: 650,
        binlog_format: BinlogFormat::Row,
        ..Default::default()
    });
    source
        .sql("CREATE DATABASE app; CREATE TABLE app.invoices (id INT PRIMARY KEY, note VARCHAR(64), amount DECIMAL(10,2));
              CREATE DATABASE other; CREATE TABLE other.t (id INT PRIMARY KEY);
              INSERT INTO app.invoices VALUES (1, 'a', 1);")
        .unwrap();
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    source
        .sql("INSERT INTO app.invoices VALUES (2, 'b', 2); INSERT INTO other.t VALUES (41), (42);")
        .unwrap();
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    let gtid = gtid_position(&source);

    let target = restore_target(SandboxOptions {
        server_id: 651,
        ..Default::default()
    });
    target
        .sql("CREATE DATABASE other; CREATE TABLE other.t (id INT PRIMARY KEY); INSERT INTO other.t VALUES (1);")
        .unwrap();
    let run = restore_into(&setup, &target, &["--at-gtid", &gtid]);
    run.expect_code(9);
    let error = run.error_line();
    assert!(
        error.contains("`other` (1 change(s), first: insert other.t")
            && error.contains("not touched"),
        "{run:#?}"
    );
    assert_eq!(
        target
            .sql("SELECT COUNT(*) FROM other.t; SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app'")
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1", "0"]
    );
}

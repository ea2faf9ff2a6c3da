//! `coffer backup run incremental`: every closed binlog archived over the network, byte for byte,
//! resumable, a no-op when nothing is new, and a purged binlog reported as a gap.

use coffer_verifier::{Sandbox, SandboxOptions};

use crate::util::{Repo, Setup, private_source};

fn source_with_writes() -> Sandbox {
    let sandbox = private_source(SandboxOptions {
        server_id: 505,
        ..Default::default()
    });
    sandbox
        .sql("CREATE DATABASE app; CREATE TABLE app.invoices (id INT PRIMARY KEY, amount DECIMAL(10,2)) ENGINE=InnoDB; INSERT INTO app.invoices VALUES (1, 10), (2, 20);")
        .unwrap();
    sandbox
}

fn archived(setup: &Setup) -> Vec<serde_json::Value> {
    setup
        .run(&["backup", "list", "--kind", "binlog", "--json"])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

fn files(entries: &[serde_json::Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["binlog_file"]["file"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn closed_binlogs_are_archived_byte_for_byte_and_runs_resume() {
    let source = source_with_writes();
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "compression = \"none\"\n");

    let first = setup
        .run(&["backup", "run", "incremental", "--json"])
        .json();
    let first = first.as_array().unwrap();
    assert_eq!(first.len(), 1, "{first:#?}");
    let gtid_pos = source
        .sql("SELECT @@gtid_binlog_pos")
        .unwrap()
        .trim()
        .to_string();
    let summary = &first[0]["binlog_file"];
    assert_eq!(summary["file"], "mysql-bin.000001");
    assert_eq!(
        summary["last_gtid"],
        gtid_pos.as_str(),
        "every committed transaction is archived"
    );
    assert!(summary["transactions"].as_u64().unwrap() >= 3);

    // Nothing new: nothing rotated, nothing stored.
    let again = setup.run(&["backup", "run", "incremental"]);
    assert_eq!(again.code, 0, "{again:#?}");
    assert!(again.stdout.contains("nothing new"), "{}", again.stdout);
    assert_eq!(archived(&setup).len(), 1);
    assert_eq!(
        source.sql("SHOW BINARY LOGS").unwrap().lines().count(),
        2,
        "a no-op run must not rotate"
    );

    // Writes across rotations the operator made: all of them are fetched, in order, no gap.
    source
        .sql("INSERT INTO app.invoices VALUES (3, 30); FLUSH BINARY LOGS; UPDATE app.invoices SET amount = amount + 1; FLUSH BINARY LOGS; DELETE FROM app.invoices WHERE id = 1;")
        .unwrap();
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    let entries = archived(&setup);
    assert_eq!(
        files(&entries),
        [
            "mysql-bin.000001",
            "mysql-bin.000002",
            "mysql-bin.000003",
            "mysql-bin.000004"
        ]
    );

    // An archived closed binlog is the server's file, byte for byte (stored uncompressed here).
    for entry in &entries {
        let file = entry["binlog_file"]["file"].as_str().unwrap();
        let show = setup
            .run(&["backup", "show", entry["id"].as_str().unwrap(), "--json"])
            .json();
        let key = show["artifacts"][0]["key"].as_str().unwrap();
        let stored = std::fs::read(setup.repo_dir().join(key)).unwrap();
        let original = std::fs::read(source.binlog_dir().join(file)).unwrap();
        assert!(stored == original, "{file} differs from the server's copy");
        let verify = setup.run(&["backup", "verify", entry["id"].as_str().unwrap()]);
        assert_eq!(verify.code, 0, "{verify:#?}");
    }
    // And the index that comes with it is JSON listing each transaction.
    let show = setup
        .run(&[
            "backup",
            "show",
            entries[3]["id"].as_str().unwrap(),
            "--json",
        ])
        .json();
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            setup
                .repo_dir()
                .join(show["artifacts"][1]["key"].as_str().unwrap()),
        )
        .unwrap(),
    )
    .unwrap();
    let last = index["transactions"].as_array().unwrap().last().unwrap();
    assert_eq!(
        last["gtid"],
        source.sql("SELECT @@gtid_binlog_pos").unwrap().trim()
    );
}

#[test]
fn a_binlog_purged_before_it_was_archived_is_reported_as_a_gap() {
    let source = source_with_writes();
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    source
        .sql("INSERT INTO app.invoices VALUES (3, 30); FLUSH BINARY LOGS; INSERT INTO app.invoices VALUES (4, 40); FLUSH BINARY LOGS;")
        .unwrap();
    let active = source.sql("SHOW MASTER STATUS").unwrap();
    let active = active.split('\t').next().unwrap().to_string();
    source
        .sql(&format!("PURGE BINARY LOGS TO '{active}'"))
        .unwrap();
    let run = setup.run(&["backup", "run", "incremental"]);
    run.expect_code(5);
    assert!(run.error_line().contains("gap"), "{run:#?}");

    let window = setup.run(&["binlog", "window"]);
    window.expect_code(6);
    assert!(
        window
            .stdout
            .contains("GAP: binlogs between mysql-bin.000001 and"),
        "{window:#?}"
    );
}

#[test]
fn binlog_window_spans_the_full_backup_to_the_newest_archived_event() {
    let source = source_with_writes();
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    let full = setup.run(&["backup", "run", "full", "--json"]).json();
    source.sql("INSERT INTO app.invoices VALUES (3, 30); FLUSH BINARY LOGS; INSERT INTO app.invoices VALUES (4, 40);").unwrap();
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    let window = setup.run(&["binlog", "window", "--json"]).json();
    assert_eq!(window["gaps"], serde_json::json!([]));
    let windows = window["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 1, "{window}");
    assert_eq!(windows[0]["full_backup"], full["id"]);
    let archived = setup
        .run(&["backup", "list", "--kind", "binlog", "--json"])
        .json();
    let newest =
        archived.as_array().unwrap().last().unwrap()["binlog_file"]["last_event_time"].clone();
    assert_eq!(windows[0]["to"], newest);
    let human = setup.run(&["binlog", "window"]);
    assert_eq!(human.code, 0, "{human:#?}");
    assert!(
        human.stdout.contains("recoverable windows") && human.stdout.contains("+03"),
        "{}",
        human.stdout
    );
}

#[test]
fn an_incremental_run_after_a_server_restart_resumes_without_a_gap() {
    let mut source = source_with_writes();
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    source
        .sql("INSERT INTO app.invoices VALUES (3, 30);")
        .unwrap();
    // A crash and restart: the server opens a new binlog; the port may change.
    let old_port = source.port();
    source.crash().unwrap();
    source.restart().unwrap();
    source
        .sql("INSERT INTO app.invoices VALUES (4, 40);")
        .unwrap();
    setup.edit_config(
        &format!("port = {old_port}"),
        &format!("port = {}", source.port()),
    );
    let run = setup.run(&["backup", "run", "incremental"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let names = files(&archived(&setup));
    let numbers: Vec<u64> = names
        .iter()
        .map(|f| f.rsplit('.').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "archive has a gap: {names:?}"
    );
    let server_files = source.sql("SHOW BINARY LOGS").unwrap();
    let active = server_files
        .lines()
        .last()
        .unwrap()
        .split('\t')
        .next()
        .unwrap();
    assert_eq!(
        numbers.last().unwrap() + 1,
        active.rsplit('.').next().unwrap().parse::<u64>().unwrap()
    );
    let window = setup.run(&["binlog", "window", "--json"]).json();
    assert_eq!(window["gaps"], serde_json::json!([]), "{window}");
}

//! Names MariaDB allows but that break naive SQL (backticks, quotes, `;`, `#`): every name coffer
//! puts into SQL is quoted by one helper, so such a database backs up, verifies, restores (under
//! its own name and another), replays to a point in time and drills row for row — and a name
//! crafted to end an identifier early (`` victim`# ``) never reaches another database.

use coffer_verifier::{Sandbox, SandboxOptions};

use crate::util::{Repo, Setup, gtid_position, private_source, restore_into, restore_target};

/// A name with a backtick, a quote, a semicolon and a space: ``inv`o'ice; x``.
const AWKWARD: &str = "inv`o'ice; x";

fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn checksum(sandbox: &Sandbox, database: &str, table: &str) -> String {
    sandbox
        .sql(&format!(
            "CHECKSUM TABLE {}.{}",
            quoted(database),
            quoted(table)
        ))
        .unwrap()
        .trim()
        .split('\t')
        .nth(1)
        .unwrap_or("missing")
        .to_string()
}

fn count(sandbox: &Sandbox, database: &str, table: &str) -> String {
    sandbox
        .sql(&format!(
            "SELECT COUNT(*) FROM {}.{}",
            quoted(database),
            quoted(table)
        ))
        .unwrap()
        .trim()
        .to_string()
}

/// The `[source] databases = [...]` entry for a name (TOML basic string).
fn toml_string(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn a_database_with_backticks_and_quotes_round_trips_through_every_path() {
    let source = private_source(SandboxOptions {
        server_id: 1201,
        ..Default::default()
    });
    let db = quoted(AWKWARD);
    source
        .sql(&format!(
            "CREATE DATABASE {db};
             CREATE TABLE {db}.`we``ird 'tbl'` (id INT PRIMARY KEY, note VARCHAR(32)) ENGINE=InnoDB;
             CREATE TABLE {db}.plain (id INT PRIMARY KEY) ENGINE=InnoDB;
             INSERT INTO {db}.`we``ird 'tbl'` WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 40)
               SELECT n, CONCAT('row `', n, '`') FROM s;
             INSERT INTO {db}.plain VALUES (1), (2), (3);
             CREATE VIEW {db}.`v``w` AS SELECT id FROM {db}.plain;"
        ))
        .unwrap();
    let setup = Setup::with_source(&source, Repo::Folder, &["placeholder"], "");
    setup.edit_config("\"placeholder\"", &toml_string(AWKWARD));
    setup.run(&["backup", "run", "full"]).expect_code(0);
    setup.run(&["backup", "verify", "latest"]).expect_code(0);
    let listed = setup.run(&["backup", "show", "latest", "--json"]).json();
    assert_eq!(listed["databases"][0], AWKWARD, "{listed:#}");

    // Written after the full backup: only a point-in-time restore brings these back.
    source
        .sql(&format!(
            "INSERT INTO {db}.plain VALUES (4); FLUSH BINARY LOGS; INSERT INTO {db}.plain VALUES (5);"
        ))
        .unwrap();
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    let newest = gtid_position(&source);

    let target = restore_target(SandboxOptions {
        server_id: 1202,
        ..Default::default()
    });
    let full = restore_into(&setup, &target, &["--latest"]);
    assert_eq!(full.code, 0, "{full:#?}");
    assert_eq!(
        checksum(&target, AWKWARD, "we`ird 'tbl'"),
        checksum(&source, AWKWARD, "we`ird 'tbl'")
    );
    assert_eq!(count(&target, AWKWARD, "plain"), "3");
    assert_eq!(count(&target, AWKWARD, "v`w"), "3");

    // Under another awkward name.
    let renamed_to = "co`py'; #2";
    let renamed = restore_into(&setup, &target, &["--latest", "--database", renamed_to]);
    assert_eq!(renamed.code, 0, "{renamed:#?}");
    assert_eq!(
        checksum(&target, renamed_to, "we`ird 'tbl'"),
        checksum(&source, AWKWARD, "we`ird 'tbl'")
    );

    // To the newest transaction, replacing what the first restore wrote.
    let pitr = restore_into(
        &setup,
        &target,
        &["--at-gtid", &newest, "--drop-existing", "--yes"],
    );
    assert_eq!(pitr.code, 0, "{pitr:#?}");
    assert_eq!(
        checksum(&target, AWKWARD, "plain"),
        checksum(&source, AWKWARD, "plain")
    );
    assert_eq!(count(&target, AWKWARD, "plain"), "5");

    let drill = setup.run(&["drill", "run", "--json"]);
    assert_eq!(drill.code, 0, "{drill:#?}");
    assert_eq!(drill.json()["verdict"], "pass");
}

#[test]
fn a_name_that_ends_its_identifier_early_never_drops_another_database() {
    let source = private_source(SandboxOptions {
        server_id: 1203,
        ..Default::default()
    });
    let crafted = "victim`#";
    source
        .sql(&format!(
            "CREATE DATABASE {0}; CREATE TABLE {0}.t (id INT PRIMARY KEY); INSERT INTO {0}.t VALUES (1);",
            quoted(crafted)
        ))
        .unwrap();
    let setup = Setup::with_source(&source, Repo::Folder, &["placeholder"], "");
    setup.edit_config("\"placeholder\"", &toml_string(crafted));
    setup.run(&["backup", "run", "full"]).expect_code(0);

    let target = restore_target(SandboxOptions {
        server_id: 1204,
        ..Default::default()
    });
    target
        .sql("CREATE DATABASE victim; CREATE TABLE victim.ledger (id INT); INSERT INTO victim.ledger VALUES (7), (8);")
        .unwrap();
    restore_into(&setup, &target, &["--latest"]).expect_code(0);
    // The second restore replaces `victim`#` (it holds a table now): only it may be dropped.
    let again = restore_into(&setup, &target, &["--latest", "--drop-existing", "--yes"]);
    assert_eq!(again.code, 0, "{again:#?}");
    assert_eq!(
        count(&target, "victim", "ledger"),
        "2",
        "victim was touched"
    );
    assert_eq!(count(&target, crafted, "t"), "1");
}

#[test]
fn a_database_listed_twice_is_refused_before_anything_is_dropped() {
    let setup = Setup::new(Repo::Folder, &["app", "app"], "");
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(2);
    assert!(
        run.error_line().contains("source.databases") && run.error_line().contains("twice"),
        "{run:#?}"
    );
    let restore = setup.run(&["restore", "db", "--latest", "--drop-existing", "--yes"]);
    restore.expect_code(2);
}

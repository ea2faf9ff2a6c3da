//! `binlog find`: the accidental DELETEs are found in the archived binlogs, at the positions
//! `SHOW MASTER STATUS` reported just before them, with real row counts where the binlog holds
//! rows (ROW format, compressed or not) and no count where it holds the statement (MIXED).

use std::time::Duration;

use coffer_verifier::{BinlogFormat, SandboxOptions};
use serde_json::Value;

use crate::util::{Repo, Setup, private_source};

/// Server ids 700..=719 belong to this file.
fn find_scenario(format: BinlogFormat, server_id: u32, extra_args: &[&str], rows_logged: bool) {
    let source = private_source(SandboxOptions {
        server_id,
        binlog_format: format,
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    let sql = |q: &str| source.sql(q).unwrap().trim().to_string();
    // Many column types, NULLs, long and multi-byte values: row counting walks every image.
    sql("CREATE DATABASE app; CREATE DATABASE other;
         CREATE TABLE app.invoices (
           id INT PRIMARY KEY, note VARCHAR(64), amount DECIMAL(10,2), issued DATE,
           created DATETIME, stamp TIMESTAMP NULL, precise DATETIME(6), span TIME(2),
           big BIGINT, tiny TINYINT, medium MEDIUMINT, body TEXT, data BLOB, state ENUM('open','paid'),
           tags SET('a','b','c'), ratio DOUBLE, rough FLOAT, code CHAR(3), wide CHAR(100),
           flags BIT(10), yr YEAR, doc JSON, huge DECIMAL(40,12)
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
         CREATE TABLE app.companies (id INT PRIMARY KEY, name VARCHAR(32)) ENGINE=InnoDB;
         CREATE TABLE other.invoices (id INT PRIMARY KEY) ENGINE=InnoDB;
         INSERT INTO app.invoices (id, note, amount, issued, created, stamp, precise, span, big, tiny, medium,
             body, data, state, tags, ratio, rough, code, wide, flags, yr, doc, huge)
           WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100)
           SELECT n, IF(n % 7 = 0, NULL, CONCAT('note ', n, ' é')), n * 10.5, '2025-10-29', '2025-10-29 11:00:00',
             IF(n % 3 = 0, NULL, '2025-10-29 11:00:00'), NOW(6), '12:34:56.78', n * 1000000000, n % 100, n * 3,
             REPEAT('x', n * 5), IF(n % 5 = 0, NULL, UNHEX(REPEAT('AB', n))), IF(n % 2 = 0, 'open', 'paid'),
             'a,c', n / 3, n / 7, 'abc', REPEAT('ü', n % 100), b'1010101010', 2025,
             '{\"k\": 1}', n * 1.000000000001
           FROM s;
         INSERT INTO other.invoices VALUES (1), (2);");
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    sql("FLUSH BINARY LOGS;
         UPDATE app.invoices SET amount = amount + 1, note = CONCAT(note, '!') WHERE id <= 10;
         INSERT INTO app.companies VALUES (1, 'acme');
         DELETE FROM other.invoices;
         FLUSH BINARY LOGS;");
    // After a rotation the server writes a binlog checkpoint event in the background: wait for
    // it, or SHOW MASTER STATUS can report a position from before it.
    let (file, _) = sql("SHOW MASTER STATUS")
        .split_once('\t')
        .map(|(f, p)| (f.to_string(), p.to_string()))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sql(&format!("SHOW BINLOG EVENTS IN '{file}'"))
        .lines()
        .any(|l| l.contains("Binlog_checkpoint") && l.ends_with(&file))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no binlog checkpoint for {file}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before_delete = |q: &str| {
        let out = sql(&format!("SHOW MASTER STATUS; {q}; SELECT @@last_gtid;"));
        let mut lines = out.lines();
        let mut cols = lines.next().unwrap().split('\t');
        let file = cols.next().unwrap().to_string();
        let position: u64 = cols.next().unwrap().parse().unwrap();
        (file, position, lines.last().unwrap().trim().to_string())
    };
    let first = before_delete("DELETE FROM app.invoices WHERE id > 90");
    std::thread::sleep(Duration::from_millis(1100));
    let since = sql("SELECT DATE_FORMAT(UTC_TIMESTAMP(), '%Y-%m-%dT%H:%i:%sZ')");
    let second = before_delete("DELETE FROM app.invoices");
    sql("DELETE FROM app.companies; INSERT INTO app.companies VALUES (2, 'after');");
    setup.run(&["backup", "run", "incremental"]).expect_code(0);

    let found = setup
        .run(&[
            "binlog", "find", "--table", "invoices", "--kind", "delete", "--json",
        ])
        .json();
    let found = found.as_array().unwrap();
    // `--table invoices` is any database's: other.invoices first, then the two accidents.
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(found[0]["table"], "other.invoices", "{found:#?}");
    assert_eq!(
        found[0]["rows"],
        if rows_logged {
            Value::from(2)
        } else {
            Value::Null
        }
    );
    let found = &found[1..];
    for (m, (file, position, gtid)) in found.iter().zip([&first, &second]) {
        let keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "commit_time",
                "end_position",
                "file",
                "gtid",
                "kind",
                "rows",
                "start_position",
                "table"
            ]
        );
        assert_eq!(m["file"], file.as_str(), "{m}");
        assert_eq!(m["start_position"], *position, "{m}");
        assert!(m["end_position"].as_u64().unwrap() > *position);
        assert_eq!(m["gtid"], gtid.as_str(), "{m}");
        assert_eq!(m["kind"], "delete");
        assert_eq!(m["table"], "app.invoices");
        assert!(m["commit_time"].as_str().unwrap().ends_with('Z'), "{m}");
    }
    let rows: Vec<&Value> = found.iter().map(|m| &m["rows"]).collect();
    if rows_logged {
        assert_eq!(rows, [&Value::from(10), &Value::from(90)]);
    } else {
        // MIXED logs a plain DELETE as its statement: no row count.
        assert_eq!(rows, [&Value::Null, &Value::Null]);
    }

    // The update: 10 rows in row format; `other.invoices` is another table.
    let updates = setup
        .run(&[
            "binlog",
            "find",
            "--table",
            "app.invoices",
            "--kind",
            "update",
            "--json",
        ])
        .json();
    assert_eq!(updates.as_array().unwrap().len(), 1, "{updates:#?}");
    assert_eq!(
        updates[0]["rows"],
        if rows_logged {
            Value::from(10)
        } else {
            Value::Null
        }
    );
    let everything = setup
        .run(&["binlog", "find", "--table", "invoices", "--json"])
        .json();
    let tables: Vec<(&str, &str)> = everything
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["table"].as_str().unwrap(), m["kind"].as_str().unwrap()))
        .collect();
    assert!(tables.contains(&("other.invoices", "delete")), "{tables:?}");
    assert!(tables.contains(&("app.invoices", "insert")), "{tables:?}");
    let other = setup
        .run(&[
            "binlog",
            "find",
            "--table",
            "invoices",
            "--database",
            "other",
            "--kind",
            "delete",
            "--json",
        ])
        .json();
    assert_eq!(other.as_array().unwrap().len(), 1, "{other:#?}");
    if rows_logged {
        assert_eq!(other[0]["rows"], 2);
        assert_eq!(everything[0]["rows"], 100, "{everything:#?}");
    }

    // --since: only the second DELETE; text output names the file and the operator's zone.
    let later = setup.run(&[
        "binlog", "find", "--table", "invoices", "--kind", "delete", "--since", &since,
    ]);
    later.expect_code(0);
    let lines: Vec<&str> = later.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{later:#?}");
    let (file, position, gtid) = &second;
    assert!(
        lines[0].contains(&format!("{file}:{position}..")),
        "{later:#?}"
    );
    assert!(
        lines[0].contains(gtid.as_str()) && lines[0].contains("+03"),
        "{later:#?}"
    );
    assert!(lines[0].contains("delete app.invoices"), "{later:#?}");

    // Nothing found is not an error; bad flags are usage errors.
    let none = setup.run(&["binlog", "find", "--table", "nosuch"]);
    none.expect_code(0);
    assert!(none.stderr.contains("no matching transaction"), "{none:#?}");
    let empty = setup
        .run(&["binlog", "find", "--table", "nosuch", "--json"])
        .json();
    assert_eq!(empty, serde_json::json!([]));
    setup
        .run(&["binlog", "find", "--table", "invoices", "--kind", "drop"])
        .expect_code(2);
    let bad_since = setup.run(&[
        "binlog",
        "find",
        "--table",
        "invoices",
        "--since",
        "yesterday",
    ]);
    bad_since.expect_code(2);
    assert!(bad_since.error_line().contains("--since"), "{bad_since:#?}");
}

#[test]
fn binlog_find_counts_deleted_rows_in_row_format() {
    find_scenario(BinlogFormat::Row, 700, &[], true);
}

#[test]
fn binlog_find_reads_statements_in_mixed_format() {
    find_scenario(BinlogFormat::Mixed, 705, &[], false);
}

#[test]
fn binlog_find_counts_compressed_row_events() {
    find_scenario(
        BinlogFormat::Row,
        710,
        &["--log-bin-compress", "--log-bin-compress-min-len=10"],
        true,
    );
}

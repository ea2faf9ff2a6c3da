//! The recovery drill: a healthy backup passes every item; each kind of damage fails the item
//! that should catch it, with evidence naming what is wrong; the sandbox never outlives a drill.

use std::path::Path;

use coffer_verifier::{BinlogFormat, Sandbox, SandboxOptions};

use crate::util::{Repo, Run, Setup, private_source, restore_target, s3s};

/// A source with two tables, a view, a routine and a trigger; a full backup; then writes after
/// it that only the archived binlogs hold.
fn source_with_history(server_id: u32, repo: Repo<'_>) -> (Sandbox, Setup) {
    source_with_history_in(server_id, BinlogFormat::Mixed, repo)
}

fn source_with_history_in(
    server_id: u32,
    binlog_format: BinlogFormat,
    repo: Repo<'_>,
) -> (Sandbox, Setup) {
    let source = private_source(SandboxOptions {
        server_id,
        binlog_format,
        ..Default::default()
    });
    source
        .sql(
            "CREATE DATABASE app;
             CREATE TABLE app.invoices (id INT PRIMARY KEY, status VARCHAR(16), amount DECIMAL(10,2)) ENGINE=InnoDB;
             CREATE TABLE app.payments (id INT PRIMARY KEY, invoice_id INT NOT NULL, amount DECIMAL(10,2)) ENGINE=InnoDB;
             CREATE VIEW app.funded AS SELECT * FROM app.invoices WHERE status = 'funded';
             CREATE PROCEDURE app.touch() SELECT 1;
             USE app;
             CREATE TRIGGER payments_guard BEFORE INSERT ON payments FOR EACH ROW SET NEW.amount = ABS(NEW.amount);
             INSERT INTO app.invoices WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 50)
               SELECT n, IF(n % 2, 'funded', 'open'), n * 100 FROM s;
             INSERT INTO app.payments SELECT id, id, amount FROM app.invoices WHERE status = 'funded';",
        )
        .unwrap();
    let setup = Setup::with_source(&source, repo, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    source
        .sql(
            "INSERT INTO app.invoices VALUES (51, 'funded', 5100); FLUSH BINARY LOGS;
             INSERT INTO app.payments VALUES (51, 51, 5100); UPDATE app.invoices SET status = 'paid' WHERE id = 1;",
        )
        .unwrap();
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    (source, setup)
}

/// Runs `coffer drill run --json` with its temp files in `tmp`, and checks nothing of the sandbox
/// is left there or running.
fn drill(setup: &Setup, tmp: &Path) -> (Run, serde_json::Value) {
    std::fs::create_dir_all(tmp).unwrap();
    let run = Run::from(
        setup
            .coffer(&["drill", "run", "--json"])
            .env("TMPDIR", tmp)
            // Stands for the cloud credentials and secrets of coffer's own environment.
            .env("DRILL_TEST_SECRET", "must not reach the app")
            .output()
            .unwrap(),
    );
    let report: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {run:#?}"));
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the drill left {left:?} in {tmp:?}");
    let running = std::process::Command::new("pgrep")
        .args(["-f", &tmp.display().to_string()])
        .output()
        .unwrap();
    assert!(
        running.stdout.is_empty(),
        "processes left running: {}",
        String::from_utf8_lossy(&running.stdout)
    );
    (run, report)
}

fn item<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no item {name:?} in {report:#}"))
}

fn evidence(report: &serde_json::Value, name: &str) -> String {
    item(report, name)["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_healthy_backup_passes_every_item_on_s3() {
    let server = s3s();
    let (source, setup) = source_with_history(
        900,
        Repo::S3 {
            server,
            bucket: server.new_bucket("drill"),
            prefix: "prod".into(),
        },
    );
    let invoices = source
        .sql("SELECT COUNT(*), SUM(amount) FROM app.invoices WHERE status = 'funded'")
        .unwrap()
        .trim()
        .to_string();
    setup.append_config(&format!(
        r#"
[drill]
env = {{ APP_ENV = "drill", DB_HOST = "production.example" }}

[[drill.app_checks]]
name = "app sees the sandbox"
command = "test \"$DB_DATABASE\" = app && test \"$MAIL_MAILER\" = log && test \"$APP_ENV\" = drill && test \"$DB_HOST\" = 127.0.0.1 && test -n \"$DB_PASSWORD\" && test -z \"$DRILL_TEST_SECRET\" && echo ok"
timeout_seconds = 10

[[drill.sql_checks]]
name = "funded invoices, including those written after the backup"
query = "SELECT COUNT(*), SUM(amount) FROM invoices WHERE status = 'funded'"
expect = "{invoices}"

[[drill.sql_checks]]
name = "every payment has an invoice"
query = "SELECT p.id FROM payments p LEFT JOIN invoices i ON i.id = p.invoice_id WHERE i.id IS NULL"
expect = ""

[[drill.sql_checks]]
name = "payments exist"
query = "SELECT id FROM payments"
min_rows = 26
"#
    ));
    let tmp = setup.dir.path().join("tmp");
    let (run, report) = drill(&setup, &tmp);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    for name in [
        "database restore successful",
        "all tables present",
        "data counts match",
        "application starts",
        "critical features work",
    ] {
        assert_eq!(item(&report, name)["status"], "pass", "{name}: {report:#}");
    }
    assert_eq!(item(&report, "files accessible")["status"], "skipped");
    let tables = evidence(&report, "all tables present");
    for name in ["invoices", "payments", "funded", "touch", "payments_guard"] {
        assert!(tables.contains(name), "{name} not named in: {tables}");
    }
    let counts = evidence(&report, "data counts match");
    assert!(
        counts.contains("app.invoices 50 rows") && counts.contains("app.payments 25 rows"),
        "{counts}"
    );
    assert!(counts.contains("the archive's last position"), "{counts}");
    assert!(report["recovery_time_seconds"].as_f64().unwrap() > 0.0);
    assert!(report["recovery_point_seconds"].as_i64().unwrap() >= 0);
    assert!(report["replayed_to"].as_str().unwrap().contains(':'));

    let history = setup.run(&["drill", "history", "--json"]).json();
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["verdict"], "pass");
    assert_eq!(history[0]["id"], report["id"]);
}

#[test]
fn each_kind_of_damage_fails_its_item() {
    let (_source, setup) = source_with_history(910, Repo::Folder);
    let tmp = setup.dir.path().join("tmp");

    // Failing application checks and probes: their output and actual result are the evidence.
    setup.append_config(
        r#"
[drill]
after_restore = ["MYSQL_PWD=\"$DB_PASSWORD\" mariadb --protocol=TCP -h \"$DB_HOST\" -P \"$DB_PORT\" -u \"$DB_USERNAME\" \"$DB_DATABASE\" -e 'DROP TABLE payments'"]

[[drill.app_checks]]
name = "artisan"
command = "echo 'Migration table not found.' >&2; exit 3"

[[drill.app_checks]]
name = "hangs"
command = "sleep 30"
timeout_seconds = 1

[[drill.sql_checks]]
name = "no open invoices"
query = "SELECT COUNT(*) FROM invoices WHERE status = 'open'"
expect = "0"
"#,
    );
    let (run, report) = drill(&setup, &tmp);
    assert_eq!(run.code, 10, "{run:#?}");
    assert_eq!(report["verdict"], "fail");
    let app = evidence(&report, "application starts");
    assert_eq!(item(&report, "application starts")["status"], "fail");
    assert!(
        app.contains("artisan: exit 3") && app.contains("Migration table not found."),
        "{app}"
    );
    assert!(app.contains("hangs: timed out after 1 s"), "{app}");
    let sql = evidence(&report, "critical features work");
    assert!(sql.contains("result \"25\", expected \"0\""), "{sql}");
    // The hook dropped a table from the restored copy.
    assert_eq!(item(&report, "all tables present")["status"], "fail");
    assert!(
        evidence(&report, "all tables present")
            .contains("missing in the sandbox: app.payments (table)"),
        "{report:#}"
    );
    let counts = evidence(&report, "data counts match");
    assert!(
        counts.contains("app.payments: no data in the sandbox"),
        "{counts}"
    );

    // A manifest whose row count for one table is off by one.
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.truncate(config.find("[drill]").unwrap());
    std::fs::write(&setup.config, config).unwrap();
    let full = setup
        .run(&["backup", "list", "--kind", "full", "--json"])
        .json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest_path = setup.repo_dir().join(format!("manifests/{full}.json"));
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&original).unwrap();
    let tables = manifest["expectations"]["databases"][0]["tables"]
        .as_array_mut()
        .unwrap();
    let invoices = tables.iter_mut().find(|t| t["name"] == "invoices").unwrap();
    invoices["rows"] = serde_json::json!(51);
    std::fs::remove_file(&manifest_path).unwrap();
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let (run, report) = drill(&setup, &tmp);
    assert_eq!(run.code, 10, "{run:#?}");
    assert_eq!(item(&report, "data counts match")["status"], "fail");
    assert!(
        evidence(&report, "data counts match")
            .contains("app.invoices: 50 rows in the sandbox, 51 recorded in the manifest"),
        "{report:#}"
    );
    assert_eq!(item(&report, "all tables present")["status"], "pass");
    std::fs::remove_file(&manifest_path).unwrap();
    std::fs::write(&manifest_path, original).unwrap();

    // One byte of the stored dump changed: caught before the sandbox is touched, object named.
    let show = setup.run(&["backup", "show", &full, "--json"]).json();
    let key = show["artifacts"][0]["key"].as_str().unwrap().to_string();
    let object = setup.repo_dir().join(&key);
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::remove_file(&object).unwrap();
    std::fs::write(&object, bytes).unwrap();
    let (run, report) = drill(&setup, &tmp);
    assert_eq!(run.code, 10, "{run:#?}");
    let restore = evidence(&report, "database restore successful");
    assert_eq!(
        item(&report, "database restore successful")["status"],
        "fail"
    );
    assert!(restore.contains(&key), "{restore}");
    assert!(
        evidence(&report, "data counts match").contains("not run"),
        "{report:#}"
    );

    let history = setup.run(&["drill", "history", "--json"]).json();
    assert_eq!(history.as_array().unwrap().len(), 3);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["verdict"] == "fail")
    );
}

/// An external server: the drill restores under the configured prefix only, leaves the server's
/// other databases alone, and drops what it created afterwards. Binlogs that name the database
/// inside statements (MIXED logging) would make the replay write into the server's own `app`:
/// that drill is refused before anything is restored.
#[test]
fn an_external_sandbox_only_touches_prefixed_databases() {
    let external = restore_target(SandboxOptions {
        server_id: 921,
        ..Default::default()
    });
    // A database of the external server's own, named like the backup's: never touched.
    external
        .sql("CREATE DATABASE app; CREATE TABLE app.invoices (id INT PRIMARY KEY, status VARCHAR(16), amount DECIMAL(10,2)); INSERT INTO app.invoices VALUES (7, 'mine', 1);")
        .unwrap();
    let untouched = |what: &str| {
        assert_eq!(
            external
                .sql("SELECT COUNT(*) FROM app.invoices; SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'drill%'")
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["1", "0"],
            "{what}: the server's own app is untouched and no drill database is left"
        )
    };
    let configure = |setup: &Setup| {
        std::fs::write(setup.dir.path().join("secrets/external"), "pw\n").unwrap();
        setup.append_config(&format!(
            r#"
[drill]
sandbox = "external"
host = "127.0.0.1"
port = {}
user = "restorer"
password_file = "secrets/external"
database_prefix = "drill_"

[[drill.app_checks]]
command = "test \"$DB_DATABASE\" = drill_app"
"#,
            external.port()
        ));
    };
    let drill_backup = |setup: &Setup| {
        let full = setup
            .run(&["backup", "list", "--kind", "full", "--json"])
            .json()[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let run = Run::from(
            setup
                .coffer(&["drill", "run", "--backup", &full, "--json"])
                .output()
                .unwrap(),
        );
        let report: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("no JSON report ({e}): {run:#?}"));
        assert_eq!(report["backup_id"], full.as_str());
        (run, report)
    };

    let (_mixed, setup) = source_with_history_in(920, BinlogFormat::Mixed, Repo::Folder);
    configure(&setup);
    let (run, report) = drill_backup(&setup);
    assert_eq!(run.code, 10, "{run:#?}");
    let refused = evidence(&report, "database restore successful");
    assert!(
        refused.contains("nothing was restored") && refused.contains("INSERT INTO app.invoices"),
        "{refused}"
    );
    untouched("refused drill");

    let (_row, setup) = source_with_history_in(922, BinlogFormat::Row, Repo::Folder);
    configure(&setup);
    let (run, report) = drill_backup(&setup);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        report["sandbox"].as_str().unwrap().contains("external"),
        "{report:#}"
    );
    assert_eq!(item(&report, "application starts")["status"], "pass");
    assert!(
        evidence(&report, "data counts match").contains("the archive's last position"),
        "{report:#}"
    );
    untouched("passed drill");
}

/// `--keep-sandbox` leaves the restored copy up for inspection, reachable with the printed client
/// options file (the password itself is never printed), until SIGTERM tears it down.
#[test]
fn a_kept_sandbox_is_reachable_until_the_drill_is_stopped() {
    use std::io::BufRead;
    let (_source, setup) = source_with_history(930, Repo::Folder);
    let tmp = setup.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut child = setup
        .coffer(&["drill", "run", "--keep-sandbox"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let options_file = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the drill ended without keeping its sandbox: {seen}"
        );
        seen.push_str(&line);
        if let Some(path) = line
            .trim()
            .strip_prefix("connect with: mariadb --defaults-extra-file=")
        {
            break path.to_string();
        }
    };
    assert!(seen.contains("sandbox kept at 127.0.0.1:"), "{seen}");
    let options = std::fs::read_to_string(&options_file).unwrap();
    let password = options
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert!(!seen.contains(&password), "the password is printed: {seen}");
    let count = std::process::Command::new("mariadb")
        .arg(format!("--defaults-extra-file={options_file}"))
        .args(["-N", "-e", "SELECT COUNT(*) FROM app.invoices"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        "51",
        "{count:?}"
    );

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    assert!(rest.contains("sandbox torn down"), "{rest}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn the_files_item_restores_a_sample_of_the_newest_snapshot_and_fails_on_a_damaged_pack() {
    let (_source, setup) = source_with_history(947, Repo::Folder);
    let tree = setup.dir.path().join("storage");
    std::fs::create_dir_all(tree.join("invoices")).unwrap();
    for n in 0..30u32 {
        let body: Vec<u8> = (0..3000 + n * 41).map(|i| (i * 7 + n) as u8).collect();
        std::fs::write(tree.join(format!("invoices/INV-{n:03}.pdf")), body).unwrap();
    }
    let large: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(tree.join("invoices/ledger.bin"), large).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(tree.join("newest.txt"), b"written last").unwrap();
    setup.append_config(&format!(
        "\n[[files]]\nname = \"storage\"\npath = \"{}\"\n\n[drill]\nfiles_sample = 10\n",
        tree.display()
    ));
    setup.run(&["backup", "run", "files"]).expect_code(0);

    let tmp = setup.dir.path().join("tmp");
    let (run, report) = drill(&setup, &tmp);
    assert_eq!(run.code, 0, "{run:#?}");
    let files = item(&report, "files accessible");
    assert_eq!(files["status"], "pass", "{report:#}");
    let said = evidence(&report, "files accessible");
    assert!(said.contains("10 of 32 files"), "{said}");
    assert!(said.contains("newest newest.txt"), "{said}");
    assert!(said.contains("largest invoices/ledger.bin"), "{said}");

    // Every blob of every pack damaged: whatever the sample, the item fails naming a chunk.
    let mut todo = vec![setup.repo_dir().join("packs")];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let mut bytes = std::fs::read(&path).unwrap();
                for byte in bytes.iter_mut().step_by(16) {
                    *byte ^= 0x01;
                }
                std::fs::write(&path, bytes).unwrap();
            }
        }
    }
    let (run, report) = drill(&setup, &tmp);
    assert_eq!(run.code, 10, "{run:#?}");
    assert_eq!(
        item(&report, "files accessible")["status"],
        "fail",
        "{report:#}"
    );
    assert!(
        evidence(&report, "files accessible").contains("chunk"),
        "{report:#}"
    );
}

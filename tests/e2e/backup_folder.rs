//! Full backups into a local folder: list, show, verify, damage found, restorable by hand.

use std::process::{Command, Stdio};

use coffer_verifier::{Sandbox, SandboxOptions};

use crate::util::{Repo, Setup, source_sql};

fn table_counts(sql: impl Fn(&str) -> String, db: &str) -> Vec<(String, u64)> {
    let tables = sql(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
    ));
    tables
        .lines()
        .map(|t| {
            (
                t.to_string(),
                sql(&format!("SELECT COUNT(*) FROM `{db}`.`{t}`"))
                    .parse()
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn full_backup_to_folder_is_listed_shown_and_verified() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let run = setup.run(&["backup", "run", "full", "--json"]);
    let manifest = run.json();
    let id = manifest["id"].as_str().unwrap().to_string();
    assert!(id.contains("-full-"), "{id}");
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["source"]["server_id"], 101);

    // The snapshot's coordinates are the server's binlog.
    let binlog = &manifest["binlog"];
    assert!(
        binlog["file"].as_str().unwrap().starts_with("mysql-bin."),
        "{binlog}"
    );
    assert!(binlog["position"].as_u64().unwrap() > 4);
    assert!(
        binlog["gtid_position"]
            .as_str()
            .unwrap()
            .starts_with("0-101-"),
        "{binlog}"
    );

    // Expectations: every table with the row count the server has (the source is quiet).
    let db = &manifest["expectations"]["databases"][0];
    assert_eq!(db["name"], "app");
    let recorded: Vec<(String, u64)> = db["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut recorded_sorted = recorded.clone();
    recorded_sorted.sort();
    assert_eq!(recorded_sorted, table_counts(source_sql, "app"));
    assert_eq!(
        recorded.iter().find(|(t, _)| t == "offers").unwrap().1,
        4000
    );
    assert_eq!(db["views"], serde_json::json!(["funded_invoices"]));
    assert_eq!(db["triggers"], serde_json::json!(["invoices_audit"]));
    assert_eq!(db["events"], serde_json::json!(["purge_old_logins"]));
    let mut routines: Vec<&str> = db["routines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    routines.sort();
    assert_eq!(routines, vec!["close_overdue", "net_amount"]);

    // The artifact's digest is what sha256sum says of the stored file.
    let artifact = &manifest["artifacts"][0];
    let path = setup.repo_dir().join(artifact["key"].as_str().unwrap());
    let sha = Command::new("sha256sum").arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&sha.stdout).starts_with(artifact["sha256"].as_str().unwrap()));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        artifact["stored_size"].as_u64().unwrap()
    );
    assert!(
        setup
            .repo_dir()
            .join(format!("manifests/{id}.json"))
            .is_file()
    );

    let list = setup.run(&["backup", "list", "--json"]).json();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 1);
    for field in ["id", "kind", "started_at", "finished_at", "stored_bytes"] {
        assert!(
            !entries[0][field].is_null(),
            "list entry lacks {field}: {}",
            entries[0]
        );
    }
    assert_eq!(entries[0]["id"], id.as_str());
    assert_eq!(entries[0]["stored_bytes"], artifact["stored_size"]);

    let human = setup.run(&["backup", "list"]);
    assert_eq!(human.code, 0);
    assert!(
        human.stdout.contains(&id) && human.stdout.contains("Asia/Riyadh"),
        "{}",
        human.stdout
    );

    let show = setup.run(&["backup", "show", &id, "--json"]).json();
    assert_eq!(show, manifest);
    let latest = setup.run(&["backup", "show", "latest", "--json"]).json();
    assert_eq!(latest["id"], id.as_str());

    let verify = setup.run(&["backup", "verify", &id]);
    assert_eq!(verify.code, 0, "{verify:#?}");
    assert!(verify.stdout.contains("Expectations"), "{}", verify.stdout);
}

#[test]
fn one_flipped_byte_is_found_by_verify() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let manifest = setup.run(&["backup", "run", "full", "--json"]).json();
    let id = manifest["id"].as_str().unwrap();
    let key = manifest["artifacts"][0]["key"].as_str().unwrap();
    let path = setup.repo_dir().join(key);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();

    let verify = setup.run(&["backup", "verify", id]);
    verify.expect_code(6);
    assert!(
        verify.stdout.contains(key) && verify.stdout.contains("SHA-256"),
        "{verify:#?}"
    );

    let json = setup.run(&["backup", "verify", id, "--json"]);
    assert_eq!(json.code, 6);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["artifacts"][0]["ok"], false);

    // A missing object is a finding too.
    std::fs::remove_file(&path).unwrap();
    setup.run(&["backup", "verify", id]).expect_code(6);
}

#[test]
fn unknown_backup_id_exits_not_found() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let run = setup.run(&["backup", "show", "20200101T000000Z-full-0000"]);
    run.expect_code(8);
    assert!(
        run.error_line()
            .contains("no backup 20200101T000000Z-full-0000"),
        "{run:#?}"
    );
    setup
        .run(&["backup", "show", "../../etc/passwd"])
        .expect_code(2);
}

/// FORMAT.md promises a backup can be restored with standard tools if coffer is gone.
#[test]
fn a_backup_restores_by_hand_with_zstd_and_mariadb() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let manifest = setup.run(&["backup", "run", "full", "--json"]).json();
    let object = setup
        .repo_dir()
        .join(manifest["artifacts"][0]["key"].as_str().unwrap());

    let target = Sandbox::start(SandboxOptions {
        server_id: 202,
        log_bin: false,
        ..Default::default()
    })
    .unwrap();
    let mut zstd = Command::new("zstd")
        .arg("-dc")
        .arg(&object)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", target.socket().display()))
        .arg("--user=root")
        .stdin(zstd.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(zstd.wait().unwrap().success());

    let target_sql = |q: &str| target.sql(q).unwrap().trim().to_string();
    assert_eq!(
        table_counts(target_sql, "app"),
        table_counts(source_sql, "app")
    );
    for table in ["invoices", "companies", "payments", "audit_events"] {
        let checksum = format!("CHECKSUM TABLE app.{table}");
        assert_eq!(
            target_sql(&checksum),
            source_sql(&checksum),
            "{table} differs after a hand restore"
        );
    }
    assert_eq!(
        target_sql("SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'app'"),
        "2"
    );
    assert_eq!(
        target_sql("SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'app'"),
        "1"
    );
}

#[test]
fn encrypted_backup_verifies_with_and_without_the_identity() {
    let identity = age_keypair();
    let setup = Setup::new(
        Repo::Folder,
        &["app"],
        &format!(
            "encryption_recipient = \"{}\"\ncompression = \"gzip\"\n",
            identity.1
        ),
    );
    let manifest = setup.run(&["backup", "run", "full", "--json"]).json();
    let artifact = &manifest["artifacts"][0];
    assert_eq!(artifact["encrypted"], true);
    assert_eq!(artifact["compression"], "gzip");
    assert!(
        artifact["key"]
            .as_str()
            .unwrap()
            .ends_with("dump.sql.gz.age")
    );
    let stored = std::fs::read(setup.repo_dir().join(artifact["key"].as_str().unwrap())).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1"));
    assert!(!stored.windows(6).any(|w| w == b"INSERT"));

    let id = manifest["id"].as_str().unwrap();
    let digest_only = setup.run(&["backup", "verify", id]);
    assert_eq!(digest_only.code, 0, "{digest_only:#?}");
    assert!(digest_only.stdout.contains("Digest"));
    let key_file = setup.dir.path().join("identity.txt");
    std::fs::write(&key_file, format!("# test key\n{}\n", identity.0)).unwrap();
    let full = setup.run(&[
        "backup",
        "verify",
        id,
        "--identity-file",
        key_file.to_str().unwrap(),
    ]);
    assert_eq!(full.code, 0, "{full:#?}");
    assert!(full.stdout.contains("Expectations"), "{}", full.stdout);
}

/// (secret key, public key) made by the same age library coffer uses.
fn age_keypair() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    (
        identity.to_string().expose_secret().to_string(),
        identity.to_public().to_string(),
    )
}

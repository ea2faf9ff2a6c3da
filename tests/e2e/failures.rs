//! What goes wrong gets a clear one-line error, its documented exit code, and loses nothing.

use std::time::{Duration, Instant};

use crate::util::{Repo, SLOW_COMPRESSION, Setup, free_port, s3s, source};

#[test]
fn a_dump_killed_midway_leaves_no_backup() {
    let setup = Setup::new(Repo::Folder, &["bulk"], SLOW_COMPRESSION);
    let child = setup
        .coffer(&["backup", "run", "full"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let parent = child.id().to_string();
    // Find the dump tool among coffer's children and kill it mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    let killed = loop {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &parent, "-f", "mariadb-dump|mysqldump"])
            .output()
            .unwrap();
        let pids = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !pids.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
            let status = std::process::Command::new("kill")
                .arg("-KILL")
                .args(pids.split_whitespace())
                .status()
                .unwrap();
            break status.success();
        }
        assert!(Instant::now() < deadline, "the dump never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(killed, "the dump finished before it could be killed");
    let out = crate::util::Run::from(child.wait_with_output().unwrap());
    out.expect_code(5);
    assert!(
        out.error_line().contains("mariadb-dump") || out.error_line().contains("mysqldump"),
        "{out:#?}"
    );
    let list = setup.run(&["backup", "list", "--json"]).json();
    assert_eq!(list, serde_json::json!([]));
    // Nothing half-written is left under data/ (no temp files, no objects).
    let data = setup.repo_dir().join("data");
    let leftovers: Vec<_> = walk(&data);
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}

#[test]
fn bad_config_exits_2_naming_file_and_key() {
    let setup = Setup::new(Repo::Folder, &["app"], "compresion = \"zstd\"\n");
    for args in [
        &["backup", "list"][..],
        &["check"][..],
        &["backup", "run", "full"][..],
    ] {
        let run = setup.run(args);
        run.expect_code(2);
        let line = run.error_line();
        assert!(
            line.contains("coffer.toml") && line.contains("compresion"),
            "{line}"
        );
    }
    let missing = crate::util::coffer_command()
        .args(["--config", "/nonexistent/coffer.toml", "backup", "list"])
        .output()
        .unwrap();
    let run = crate::util::Run::from(missing);
    run.expect_code(2);
    assert!(run.error_line().contains("/nonexistent/coffer.toml"));
}

#[test]
fn database_commands_on_a_files_only_config_exit_2_asking_for_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("coffer.toml");
    std::fs::write(
        &config,
        "[repository]\nurl = \"repo\"\n[[files]]\npath = \"/srv/app/storage/app\"\n[[config_backup]]\npaths = [\"/srv/app/.env\"]\n",
    )
    .unwrap();
    for args in [
        &["backup", "run", "full"][..],
        &["backup", "run", "incremental"][..],
        &["binlog", "stream"][..],
    ] {
        let out = crate::util::coffer_command()
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        let run = crate::util::Run::from(out);
        run.expect_code(2);
        assert_eq!(
            run.error_line(),
            format!(
                "coffer: error: this command needs a [source] section in {}",
                config.display()
            ),
            "{args:?}"
        );
    }
    let listed = crate::util::coffer_command()
        .arg("--config")
        .arg(&config)
        .args(["backup", "list", "--json"])
        .output()
        .unwrap();
    assert!(
        crate::util::Run::from(listed)
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bad_values_exit_2_with_the_key_named() {
    let setup = Setup::new(Repo::Folder, &["app"], "compression_level = 99\n");
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(2);
    assert!(
        run.error_line().contains("repository.compression_level"),
        "{run:#?}"
    );
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.edit_config("timezone = \"Asia/Riyadh\"", "timezone = \"Mars/Base\"");
    let run = setup.run(&["backup", "list"]);
    run.expect_code(2);
    assert!(run.error_line().contains("timezone"), "{run:#?}");
}

#[test]
fn unreachable_database_exits_3() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.edit_config(
        &format!("port = {}", source().sandbox.port()),
        &format!("port = {}", free_port()),
    );
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(3);
    assert!(run.error_line().contains("cannot connect"), "{run:#?}");
    setup.run(&["check"]).expect_code(3);
    assert!(
        setup
            .run(&["backup", "list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn wrong_password_exits_3_without_printing_it() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    std::fs::write(
        setup.dir.path().join("secrets/db-password"),
        "not-the-password\n",
    )
    .unwrap();
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(3);
    assert!(!run.stderr.contains("not-the-password"));
}

#[test]
fn unreachable_storage_exits_4() {
    let server = s3s();
    let setup = Setup::new(
        Repo::S3 {
            server,
            bucket: server.new_bucket("unreachable"),
            prefix: String::new(),
        },
        &["app"],
        "",
    );
    setup.edit_config(
        &server.endpoint,
        &format!("http://127.0.0.1:{}", free_port()),
    );
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(4);
    assert!(run.error_line().contains("cannot reach"), "{run:#?}");
    setup.run(&["check"]).expect_code(4);
    setup.run(&["backup", "list"]).expect_code(4);
}

#[test]
fn missing_bucket_is_a_storage_error() {
    // s3s-fs creates buckets on demand; Garage, like AWS, answers NoSuchBucket.
    let server = crate::util::garage();
    let setup = Setup::new(
        Repo::S3 {
            server,
            bucket: "no-such-bucket".into(),
            prefix: String::new(),
        },
        &["app"],
        "",
    );
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(4);
    assert!(run.error_line().contains("no-such-bucket"), "{run:#?}");
}

#[test]
fn account_without_privileges_fails_check() {
    let sandbox = &source().sandbox;
    sandbox
        .create_user("weak_backup", "weak-pw", "SELECT ON *.*")
        .unwrap();
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.edit_config("user = \"coffer_backup\"", "user = \"weak_backup\"");
    std::fs::write(setup.dir.path().join("secrets/db-password"), "weak-pw\n").unwrap();
    let run = setup.run(&["check"]);
    run.expect_code(3);
    assert!(
        run.stdout.contains("lacks privileges") && run.stdout.contains("RELOAD"),
        "{run:#?}"
    );
}

#[test]
fn check_passes_on_a_good_setup() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let run = setup.run(&["check"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("privileges sufficient"),
        "{}",
        run.stdout
    );
}

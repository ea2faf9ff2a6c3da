//! A backup interrupted by the outside world (storage gone, source gone) leaves no backup.

use std::time::Duration;

use coffer_verifier::{Sandbox, SandboxOptions};

use crate::util::{
    BACKUP_GRANTS, Repo, Run, SLOW_COMPRESSION, SOURCE_PASSWORD, SOURCE_USER, Setup, files_under,
    load_bulk, start_s3s,
};

/// A private source with the `bulk` database and the backup account, for a test that crashes or
/// freezes it.
fn bulk_source(server_id: u32) -> Sandbox {
    let sandbox = Sandbox::start(SandboxOptions {
        server_id,
        ..Default::default()
    })
    .unwrap();
    load_bulk(&sandbox, 60000);
    sandbox
        .create_user(SOURCE_USER, SOURCE_PASSWORD, BACKUP_GRANTS)
        .unwrap();
    sandbox
}

/// Starts `backup run full` and returns once its dump has been streaming for a moment.
fn spawn_slow_backup(setup: &Setup) -> std::process::Child {
    let child = setup
        .coffer(&["backup", "run", "full"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::process::Command::new("pgrep")
            .args([
                "-P",
                &child.id().to_string(),
                "-f",
                "mariadb-dump|mysqldump",
            ])
            .output()
            .unwrap();
        if !out.stdout.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dump never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(700));
    child
}

#[test]
fn storage_dying_mid_upload_fails_with_exit_4_and_no_manifest() {
    let mut server = start_s3s(false);
    let bucket = server.new_bucket("dying");
    let data_dir = server.data_dir.clone().unwrap().join(&bucket);
    let setup = Setup::new(
        Repo::S3 {
            server: &server,
            bucket,
            prefix: String::new(),
        },
        &["bulk"],
        SLOW_COMPRESSION,
    );
    let child = spawn_slow_backup(&setup);
    server.kill();
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(4);
    assert!(
        run.error_line().contains("data/"),
        "the error names the object: {run:#?}"
    );
    let left: Vec<String> = files_under(&data_dir);
    assert!(
        !left.iter().any(|f| f.starts_with("manifests/")),
        "a manifest was written: {left:?}"
    );
    assert!(
        !left.iter().any(|f| f.starts_with("data/")),
        "an artifact was committed: {left:?}"
    );
    // The backup's lock object stays (the storage is gone, it cannot be removed): on this host
    // it is stale at once, its process being gone; elsewhere after stale_after.
    assert!(
        left.iter().filter(|f| f.starts_with("locks/")).count() <= 1,
        "{left:?}"
    );
}

#[test]
fn source_crashing_mid_dump_fails_with_exit_5_and_no_manifest() {
    let mut sandbox = bulk_source(303);
    let setup = Setup::with_source(&sandbox, Repo::Folder, &["bulk"], SLOW_COMPRESSION);
    let child = spawn_slow_backup(&setup);
    sandbox.crash().unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(5);
    assert!(
        run.error_line().contains("mariadb-dump") || run.error_line().contains("mysqldump"),
        "{run:#?}"
    );
    let left = files_under(&setup.repo_dir());
    assert_eq!(
        left,
        vec!["coffer-repository.json".to_string()],
        "only the repository marker may remain"
    );
}

#[test]
fn a_frozen_source_fails_the_backup_after_the_stall_timeout() {
    let sandbox = bulk_source(304);
    let setup = Setup::with_source(&sandbox, Repo::Folder, &["bulk"], SLOW_COMPRESSION);
    setup.edit_config("timezone = ", "stall_timeout_seconds = 3\ntimezone = ");
    let pid = std::fs::read_to_string(sandbox.dir().join("data/mariadbd.pid"))
        .or_else(|_| std::fs::read_to_string(sandbox.dir().join("mariadbd.pid")))
        .unwrap();
    let child = spawn_slow_backup(&setup);
    // SIGSTOP: the server keeps its connections open and answers nothing, as a hung host does.
    let freeze = |signal: &str| {
        std::process::Command::new("kill")
            .args([signal, pid.trim()])
            .status()
            .unwrap()
    };
    freeze("-STOP");
    let started = std::time::Instant::now();
    let run = Run::from(child.wait_with_output().unwrap());
    let waited = started.elapsed();
    freeze("-CONT");
    run.expect_code(5);
    assert!(run.error_line().contains("no progress for 3 s"), "{run:#?}");
    assert!(waited < Duration::from_secs(60), "waited {waited:?}");
    let left = files_under(&setup.repo_dir());
    assert_eq!(left, vec!["coffer-repository.json".to_string()]);
}

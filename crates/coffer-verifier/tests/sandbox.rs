//! The sandbox starts a real server with a binary log and leaves nothing behind.

use coffer_verifier::{Sandbox, SandboxOptions};

fn mariadbd_running_in(dir: &std::path::Path) -> bool {
    let out = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains("mariadbd") && l.contains(&*dir.to_string_lossy()))
}

#[test]
fn sandbox_starts_with_binlog_and_is_gone_after_drop() {
    let sandbox = Sandbox::start(SandboxOptions {
        server_id: 77,
        ..Default::default()
    })
    .unwrap();
    let out = sandbox
        .sql("SELECT @@server_id, @@log_bin, @@bind_address")
        .unwrap();
    assert_eq!(out.trim(), "77\t1\t127.0.0.1");
    let endpoint = sandbox
        .create_user("backup", "pa'ss", "ALL PRIVILEGES ON *.*")
        .unwrap();
    assert_eq!(endpoint.port, sandbox.port());
    let dir = sandbox.dir().to_path_buf();
    assert!(mariadbd_running_in(&dir));
    drop(sandbox);
    assert!(
        !mariadbd_running_in(&dir),
        "mariadbd still running after drop"
    );
    assert!(!dir.exists(), "sandbox folder left behind");
}

#[test]
fn crashed_sandbox_restarts_on_the_same_data() {
    let mut sandbox = Sandbox::start(SandboxOptions::default()).unwrap();
    sandbox.sql("CREATE DATABASE kept; CREATE TABLE kept.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO kept.t VALUES (1),(2);").unwrap();
    sandbox.crash().unwrap();
    assert!(sandbox.sql("SELECT 1").is_err());
    sandbox.restart().unwrap();
    assert_eq!(
        sandbox.sql("SELECT COUNT(*) FROM kept.t").unwrap().trim(),
        "2"
    );
}

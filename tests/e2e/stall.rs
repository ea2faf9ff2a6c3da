//! Servers that stop answering mid-job (`stall_timeout_seconds`): a frozen S3 server during the
//! upload fails the backup with exit 4, a source that goes silent during the privilege check
//! fails it with exit 5; both say what made no progress, and neither leaves a backup.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::util::{Repo, Run, SLOW_COMPRESSION, Setup, files_under, signal, source, start_s3s};

/// A process stopped with SIGSTOP, continued when dropped (also when the test fails: a stopped
/// server would never see its guardian's SIGTERM).
struct Frozen(String);

impl Frozen {
    fn new(pid: String) -> Self {
        signal("-STOP", &pid);
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

/// The pid of the `s3s-fs` listening on `port` (not its guardian shell).
fn s3s_pid(port: &str) -> String {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("s3s-fs.*--port {port} ")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "s3s-fs")
        })
        .unwrap_or_else(|| panic!("no s3s-fs on port {port}"))
        .to_string()
}

/// Starts `backup run full` and returns once its dump tool is running.
fn spawn_backup(setup: &Setup) -> std::process::Child {
    let child = setup
        .coffer(&["backup", "run", "full"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
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
        assert!(Instant::now() < deadline, "the dump never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(700));
    child
}

#[test]
fn a_frozen_s3_server_fails_the_backup_after_the_stall_timeout() {
    // A private server: freezing the shared one would stall every other S3 test.
    let server = start_s3s(false);
    let bucket = server.new_bucket("frozen");
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
    setup.edit_config("timezone = ", "stall_timeout_seconds = 2\ntimezone = ");
    let port = server.endpoint.rsplit(':').next().unwrap().to_string();
    let pid = s3s_pid(&port);
    let child = spawn_backup(&setup);
    let frozen = Frozen::new(pid);
    let started = Instant::now();
    let run = Run::from(child.wait_with_output().unwrap());
    let waited = started.elapsed();
    drop(frozen);
    run.expect_code(4);
    let line = run.error_line();
    assert!(
        line.contains("made no progress for 2 s (stall_timeout_seconds)"),
        "{run:#?}"
    );
    assert!(line.contains("data/"), "the error names the object: {line}");
    // The upload, the abort and the cleanup's listing each wait at most the limit.
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");

    // Once the server answers again, nothing is listed and nothing was committed.
    let list = setup.run(&["backup", "list", "--json"]).json();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let left = files_under(&data_dir);
    assert!(
        !left
            .iter()
            .any(|f| f.starts_with("manifests/") || f.starts_with("data/")),
        "{left:?}"
    );
}

/// A TCP proxy to `upstream` that forwards until the client sends `trigger`, then forwards
/// nothing more, keeping both connections open: to the client, a server that froze.
fn freezing_proxy(upstream: u16, trigger: &'static [u8]) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let mut server = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).unwrap();
            let (mut to_client, mut from_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut frozen = false;
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    frozen = frozen || buf[..n].windows(trigger.len()).any(|w| w == trigger);
                    if !frozen && server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn a_source_that_freezes_during_the_privilege_check_fails_the_backup_after_the_stall_timeout() {
    let source_port = source().sandbox.port();
    // The grants query's first statement: everything before it (handshake, server information)
    // passes.
    let proxy = freezing_proxy(source_port, b"CURRENT_USER");
    let setup = Setup::new(Repo::Folder, &["bulk"], "");
    setup.edit_config("timezone = ", "stall_timeout_seconds = 2\ntimezone = ");
    // Plaintext, so the proxy sees the query.
    setup.edit_config(
        &format!("port = {source_port}\n"),
        &format!("port = {proxy}\ntls = \"disabled\"\n"),
    );
    let started = Instant::now();
    let run = setup.run(&["backup", "run", "full"]);
    let waited = started.elapsed();
    run.expect_code(5);
    let line = run.error_line();
    assert!(
        line.contains("reading grants")
            && line.contains(&format!(
                "127.0.0.1:{proxy} made no progress for 2 s (stall_timeout_seconds)"
            )),
        "{run:#?}"
    );
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    let left = files_under(&setup.repo_dir());
    assert!(
        !left.iter().any(|f| f.starts_with("manifests/")),
        "{left:?}"
    );
}

//! Continuous binlog archiving: `coffer binlog stream` keeps the recovery point fresh, survives the
//! source being killed and restarted mid-stream, and leaves an archive without gap or duplicate
//! (proven by restoring to the newest transaction and comparing with the source).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use coffer_verifier::{Sandbox, SandboxOptions};

use crate::util::{Repo, Setup, gtid_position, private_source, restore_into, restore_target};

/// The stream as a child process, stopped with SIGTERM (as systemd does) on drop.
struct Stream(Option<Child>);

impl Stream {
    fn start(setup: &Setup) -> Stream {
        Stream(Some(
            setup
                .coffer(&["binlog", "stream", "--interval", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    }

    /// SIGTERM, then the exit code and stderr.
    fn stop(mut self) -> (i32, String) {
        let child = self.0.take().expect("running");
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `coffer status --json` until the archive holds every committed transaction.
fn wait_fully_archived(setup: &Setup, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let run = setup.run(&["status", "--json"]);
        if run.code == 0 {
            let status = run.json();
            if status["recovery_point"]["fully_archived"] == true {
                return status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not catch up within {within:?}: {run:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn streaming_survives_a_source_crash_without_gap_or_duplicate() {
    let mut source = private_source(SandboxOptions {
        server_id: 810,
        ..Default::default()
    });
    source
        .sql(
            "CREATE DATABASE app; CREATE TABLE app.invoices (id INT PRIMARY KEY, note VARCHAR(64), amount DECIMAL(10,2)) ENGINE=InnoDB;
             INSERT INTO app.invoices VALUES (1, 'before the full backup', 10);",
        )
        .unwrap();
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);

    let stream = Stream::start(&setup);
    // Writes the stream must ship from the active file (no rotation): a segment.
    for id in 2..=6 {
        source
            .sql(&format!(
                "INSERT INTO app.invoices VALUES ({id}, 'streamed', {id}); UPDATE app.invoices SET amount = amount + 1 WHERE id = 1;"
            ))
            .unwrap();
    }
    let status = wait_fully_archived(&setup, Duration::from_secs(30));
    assert_eq!(status["recovery_point"]["age_seconds"], 0, "{status:#}");
    assert_eq!(
        status["newest_archived_binlog"]["whole"], false,
        "the active file is shipped as segments: {status:#}"
    );

    // A rotation, more writes, then the source dies mid-stream and comes back.
    source
        .sql("FLUSH BINARY LOGS; INSERT INTO app.invoices VALUES (7, 'after rotation', 7); UPDATE app.invoices SET amount = amount + 1 WHERE id = 1;")
        .unwrap();
    wait_fully_archived(&setup, Duration::from_secs(30));
    source
        .sql("INSERT INTO app.invoices VALUES (8, 'just before the crash', 8);")
        .unwrap();
    source.crash().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    source.restart().unwrap();
    source
        .sql("INSERT INTO app.invoices VALUES (9, 'after the restart', 9); UPDATE app.invoices SET amount = amount + 1 WHERE id = 1; FLUSH BINARY LOGS; INSERT INTO app.invoices VALUES (10, 'last', 10);")
        .unwrap();
    // Reconnection waits double from 1 s; the server was away about 3 s.
    wait_fully_archived(&setup, Duration::from_secs(60));
    let (code, stderr) = stream.stop();
    assert_eq!(code, 0, "the stream stops cleanly on SIGTERM: {stderr}");
    assert!(
        stderr.contains("reconnecting"),
        "the stream saw the crash: {stderr}"
    );

    // Each file once: closed files whole, no segment left of them.
    let binlogs = setup
        .run(&["backup", "list", "--kind", "binlog", "--json"])
        .json();
    let files: Vec<String> = binlogs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["binlog_file"]["file"].as_str().unwrap().to_string())
        .collect();
    let mut unique = files.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        files.len(),
        "a file archived twice: {files:?}"
    );
    let segments = setup
        .run(&["backup", "list", "--kind", "segment", "--json"])
        .json();
    for segment in segments.as_array().unwrap() {
        let file = segment["binlog_file"]["file"].as_str().unwrap();
        assert!(
            !files.iter().any(|f| f == file),
            "segments of {file} remain after it was archived whole"
        );
    }
    let window = setup.run(&["binlog", "window", "--json"]);
    let window_json = window.json();
    assert_eq!(window_json["gaps"], serde_json::json!([]), "{window:#?}");

    // The proof: restored to the newest transaction, the data equals the source's.
    let gtid = gtid_position(&source);
    let target = restore_target(SandboxOptions {
        server_id: 811,
        ..Default::default()
    });
    let restore = restore_into(&setup, &target, &["--at-gtid", &gtid]);
    assert_eq!(restore.code, 0, "{restore:#?}");
    let state = |sandbox: &Sandbox| {
        sandbox
            .sql("SELECT id, note, amount FROM app.invoices ORDER BY id")
            .unwrap()
    };
    assert_eq!(state(&target), state(&source));
    assert!(state(&target).contains("after the restart"));
}

#[test]
fn the_replication_client_dies_with_a_stream_killed_by_sigkill() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let mut stream = Stream::start(&setup);
    let coffer = stream.0.as_ref().unwrap().id().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &coffer, "-f", "stop-never"])
            .output()
            .unwrap();
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !pid.is_empty() {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the stream never started its client"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut child = stream.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{client}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{client}/stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mariadb-binlog {client} outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

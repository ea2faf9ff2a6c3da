//! The source password never reaches a command line (`ps`), the logs, or the repository.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::util::{Repo, SOURCE_PASSWORD, Setup};

fn all_command_lines() -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            out.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    out
}

#[test]
fn password_is_absent_from_child_arguments_and_logs() {
    let setup = Setup::new(Repo::Folder, &["app", "bulk"], "");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut samples, mut dumps_seen, mut leaks) = (0u32, 0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                for line in all_command_lines() {
                    if (line.contains("mariadb-dump") || line.contains("mysqldump"))
                        && line.contains("--databases")
                    {
                        dumps_seen += 1;
                        assert!(
                            line.contains("--defaults-file="),
                            "dump without a defaults file: {line}"
                        );
                    }
                    if line.contains("Tr0ub4dor") {
                        leaks.push(line);
                    }
                }
                samples += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            (samples, dumps_seen, leaks)
        })
    };
    let run = setup
        .coffer(&["--log-format", "json", "backup", "run", "full", "--json"])
        .env("COFFER_LOG", "debug")
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (samples, dumps_seen, leaks) = watcher.join().unwrap();
    let run = crate::util::Run::from(run);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        dumps_seen > 0,
        "the dump was never seen in {samples} samples of the process table"
    );
    assert!(leaks.is_empty(), "password on a command line: {leaks:?}");
    assert!(
        !run.stderr.contains("Tr0ub4dor") && !run.stdout.contains("Tr0ub4dor"),
        "password in output"
    );
    // Debug adds lines of its own: each child as it starts (never with a secret in them).
    assert!(
        run.stderr.contains("\"level\":\"DEBUG\"") && run.stderr.contains("starting child"),
        "COFFER_LOG=debug added no debug lines: {}",
        run.stderr
    );

    // Nor in the repository (manifests or anywhere else as plain text).
    let mut stack = vec![setup.repo_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else if entry.path().extension().is_some_and(|e| e == "json") {
                assert!(
                    !std::fs::read_to_string(entry.path())
                        .unwrap()
                        .contains(SOURCE_PASSWORD)
                );
            }
        }
    }
}

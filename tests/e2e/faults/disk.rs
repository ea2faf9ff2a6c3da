//! The repository's disk fills up or turns read-only: a backup (full or incremental) fails with
//! exit 4 naming the object (on a disk already broken, the first object is its lock: every
//! command that locks, `backup verify` included, fails there, and the listings, which take no
//! lock, still read), a drill keeps its verdict but stores no report (exit 4), the binlog
//! stream logs the failure and retries until the disk heals; nothing half-written is left or
//! listed, and what was stored before still reads and, once the disk heals, verifies.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_verifier::{BinlogFormat, Sandbox, SandboxOptions};

use crate::util::{Repo, Run, Setup, files_under, private_source};

/// A small tmpfs mounted over a test's repository folder, unmounted on drop. `None` where this
/// machine does not let the test mount (not root): the test then says so and passes nothing off
/// as checked.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mounted> {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Mounted(dir.to_path_buf()))
    }

    fn read_only(&self) {
        let status = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "cannot remount {:?} read-only", self.0);
    }

    /// Fills what is left of the tmpfs with a filler file, until the kernel says no space is
    /// left; [`Mounted::free`] removes it.
    fn fill(&self) {
        use std::io::Write as _;
        let mut filler = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match filler.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {:?}: {e}", self.0),
            }
        }
        // A partial page may still be free: top it up byte by byte.
        while filler.write(&[0]).is_ok_and(|n| n == 1) {}
        let _ = filler.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }

    fn read_write(&self) {
        let status = std::process::Command::new("mount")
            .args(["-o", "remount,rw"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "cannot remount {:?} read-write", self.0);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_backup_with_exit_4_and_leaves_nothing_half_written() {
    let setup = Setup::new(Repo::Folder, &["bulk"], "");
    let Some(_mount) = Mounted::tmpfs(&setup.repo_dir(), "2m") else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs (needs root)");
        return;
    };
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(4);
    assert!(run.error_line().contains("data/"), "{run:#?}");
    let left = files_under(&setup.repo_dir());
    assert_eq!(
        left,
        vec!["coffer-repository.json".to_string()],
        "only the marker may remain"
    );
    let list = setup.run(&["backup", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 0);
}

#[test]
fn a_read_only_repository_refuses_new_backups_and_still_reads_the_old_ones() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let Some(mount) = Mounted::tmpfs(&setup.repo_dir(), "64m") else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs (needs root)");
        return;
    };
    setup.run(&["backup", "run", "full"]).expect_code(0);
    mount.read_only();
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(4);
    // The backup's shared lock is the first object it writes: that is what fails.
    assert!(
        run.error_line().contains("Read-only") && run.error_line().contains("locks/"),
        "{run:#?}"
    );
    // Listing and showing take no lock.
    let list = setup.run(&["backup", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    setup.run(&["backup", "show", "latest"]).expect_code(0);
    // Verifying takes the shared lock, which cannot be written here either: a storage error
    // naming it (as restic without --no-lock). Once writable, the old backup verifies.
    let verify = setup.run(&["backup", "verify", "latest"]);
    verify.expect_code(4);
    assert!(verify.error_line().contains("locks/"), "{verify:#?}");
    mount.read_write();
    setup.run(&["backup", "verify", "latest"]).expect_code(0);
    assert!(files_under(&setup.repo_dir().join("locks")).is_empty());
}

/// A private source writing row events (so the binlogs hold what the test wrote, byte for byte),
/// with database `app` and its table `notes`.
fn binlog_source(server_id: u32) -> Sandbox {
    let source = private_source(SandboxOptions {
        server_id,
        binlog_format: BinlogFormat::Row,
        ..Default::default()
    });
    source
        .sql("CREATE DATABASE app; CREATE TABLE app.notes (id INT PRIMARY KEY, body TEXT) ENGINE=InnoDB;")
        .unwrap();
    source
}

/// Inserts notes `from..from + count`, one transaction each.
fn write_notes(source: &Sandbox, from: u32, count: u32) {
    let sql: String = (from..from + count)
        .map(|id| format!("INSERT INTO app.notes VALUES ({id}, REPEAT(SHA2({id}, 256), 8));\n"))
        .collect();
    source.sql(&sql).unwrap();
}

/// A scratch folder of the test's own (`TMPDIR` of every coffer it runs), to see what is left in it.
fn scratch(setup: &Setup) -> PathBuf {
    let tmp = setup.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    tmp
}

/// Runs `coffer … args` with its scratch folder under `tmp`.
fn run_in(setup: &Setup, tmp: &Path, args: &[&str]) -> Run {
    Run::from(setup.coffer(args).env("TMPDIR", tmp).output().unwrap())
}

/// The archived binlogs, oldest first, as `(id, file)`.
fn binlogs(setup: &Setup, tmp: &Path) -> Vec<(String, String)> {
    run_in(
        setup,
        tmp,
        &["backup", "list", "--kind", "binlog", "--json"],
    )
    .json()
    .as_array()
    .unwrap()
    .iter()
    .map(|m| {
        (
            m["id"].as_str().unwrap().to_string(),
            m["binlog_file"]["file"].as_str().unwrap().to_string(),
        )
    })
    .collect()
}

/// Each file once, numbers without a hole.
fn assert_each_file_once_without_a_hole(files: &[(String, String)]) {
    let mut numbers: Vec<u64> = files
        .iter()
        .map(|(_, f)| f.rsplit('.').next().unwrap().parse().unwrap())
        .collect();
    numbers.sort_unstable();
    let expected: Vec<u64> = (numbers[0]..numbers[0] + numbers.len() as u64).collect();
    assert_eq!(
        numbers, expected,
        "a file archived twice or missing: {files:?}"
    );
}

/// What a failed write must not leave in the repository: an unfinished `.coffer-partial-` file,
/// objects under `data/ID/` without `manifests/ID.json`, a drill report's Markdown without its
/// JSON. (`filler` is the test's own.)
fn assert_nothing_half_written(repo: &Path) {
    for file in files_under(repo) {
        let name = file.rsplit('/').next().unwrap();
        assert!(
            !name.starts_with(".coffer-partial-"),
            "an unfinished write is left: {file}"
        );
        if let Some(rest) = file.strip_prefix("data/") {
            let id = rest.split('/').next().unwrap();
            assert!(
                repo.join(format!("manifests/{id}.json")).exists(),
                "{file} belongs to no manifest"
            );
        }
        if let Some(id) = file
            .strip_prefix("reports/drills/")
            .and_then(|f| f.strip_suffix(".md"))
        {
            assert!(
                repo.join(format!("reports/drills/{id}.json")).exists(),
                "{file} is a report that was never stored whole"
            );
        }
    }
}

fn fully_archived(setup: &Setup, tmp: &Path) -> bool {
    let run = run_in(setup, tmp, &["status", "--json"]);
    run.code == 0 && run.json()["recovery_point"]["fully_archived"] == true
}

/// Polls `coffer status` until the archive holds every committed transaction.
fn wait_fully_archived(setup: &Setup, tmp: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while !fully_archived(setup, tmp) {
        assert!(
            Instant::now() < deadline,
            "the archive did not catch up within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_full_or_read_only_disk_fails_the_incremental_backup_with_exit_4_and_the_next_run_catches_up() {
    let source = binlog_source(1501);
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    let Some(mount) = Mounted::tmpfs(&setup.repo_dir(), "16m") else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs (needs root)");
        return;
    };
    let tmp = scratch(&setup);
    write_notes(&source, 1, 3);
    run_in(&setup, &tmp, &["backup", "run", "incremental"]).expect_code(0);
    let archived = binlogs(&setup, &tmp);
    assert!(!archived.is_empty());

    for (id, break_disk, says) in [
        (4, Mounted::fill as fn(&Mounted), "No space left on device"),
        (7, Mounted::read_only, "Read-only file system"),
    ] {
        break_disk(&mount);
        write_notes(&source, id, 3);
        let run = run_in(&setup, &tmp, &["backup", "run", "incremental"]);
        run.expect_code(4);
        let line = run.error_line();
        // The disk broke before the run: its first write, the shared lock, is what fails.
        assert!(
            line.contains("locks/") && line.contains(says),
            "the error names the object and the cause: {run:#?}"
        );
        assert_eq!(binlogs(&setup, &tmp), archived, "nothing new may be listed");
        // Verifying needs the lock too (exit 4 naming it); what was archived verifies below,
        // once the disk healed.
        let verify = run_in(&setup, &tmp, &["backup", "verify", &archived[0].0]);
        verify.expect_code(4);
        assert!(verify.error_line().contains("locks/"), "{verify:#?}");
        assert_nothing_half_written(&setup.repo_dir());
        let left = files_under(&tmp);
        assert!(left.is_empty(), "left in the scratch folder: {left:?}");
        assert!(!fully_archived(&setup, &tmp));
        if says.starts_with("No space") {
            mount.free();
        } else {
            mount.read_write();
        }
    }

    for (id, _) in &archived {
        run_in(&setup, &tmp, &["backup", "verify", id]).expect_code(0);
    }
    // The disk healed: the next run archives everything the failed ones could not, once.
    run_in(&setup, &tmp, &["backup", "run", "incremental"]).expect_code(0);
    let after = binlogs(&setup, &tmp);
    assert!(after.starts_with(&archived), "{after:?}");
    assert_each_file_once_without_a_hole(&after);
    assert!(fully_archived(&setup, &tmp));
    assert_nothing_half_written(&setup.repo_dir());
}

#[test]
fn a_drill_whose_report_cannot_be_stored_exits_4_and_stores_no_half_report() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let Some(mount) = Mounted::tmpfs(&setup.repo_dir(), "64m") else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs (needs root)");
        return;
    };
    let tmp = scratch(&setup);
    run_in(&setup, &tmp, &["backup", "run", "full"]).expect_code(0);
    for (break_disk, says) in [
        (Mounted::fill as fn(&Mounted), "No space left on device"),
        (Mounted::read_only, "Read-only file system"),
    ] {
        // The disk breaks once the drill holds its shared lock (the first thing it writes; on a
        // disk broken before, that write fails with exit 4): what then fails is the report.
        let child = setup
            .coffer(&["drill", "run", "--json"])
            .env("TMPDIR", &tmp)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while files_under(&setup.repo_dir().join("locks")).is_empty() {
            assert!(Instant::now() < deadline, "the drill never took its lock");
            std::thread::sleep(Duration::from_millis(5));
        }
        break_disk(&mount);
        let run = Run::from(child.wait_with_output().unwrap());
        run.expect_code(4);
        // The verdict is printed: the drill proved the backup, only its record is missing.
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(report["verdict"], "pass", "{run:#?}");
        let warning = run
            .stderr
            .lines()
            .find(|l| l.starts_with("coffer: warning: the report could not be stored"))
            .unwrap_or_else(|| panic!("the operator is not told: {run:#?}"));
        assert!(
            warning.contains("reports/drills/") && warning.contains(says),
            "{warning}"
        );
        let history = run_in(&setup, &tmp, &["drill", "history", "--json"]).json();
        assert_eq!(history, serde_json::json!([]));
        assert_nothing_half_written(&setup.repo_dir());
        assert!(
            !files_under(&setup.repo_dir())
                .iter()
                .any(|f| f.starts_with("reports/")),
            "{:?}",
            files_under(&setup.repo_dir())
        );
        let left = files_under(&tmp);
        assert!(left.is_empty(), "left in the scratch folder: {left:?}");
        let locks = files_under(&setup.repo_dir().join("locks"));
        if says.starts_with("No space") {
            // Removing an object needs no space: the lock was released.
            assert!(locks.is_empty(), "{locks:?}");
            mount.free();
        } else {
            // A read-only disk keeps the lock object; its process is gone, so the next
            // command takes it over as stale.
            assert_eq!(locks.len(), 1, "{locks:?}");
            mount.read_write();
        }
        let verify = run_in(&setup, &tmp, &["backup", "verify", "latest"]);
        verify.expect_code(0);
        assert!(
            says.starts_with("No space") || verify.stderr.contains("taking over stale"),
            "{verify:#?}"
        );
        assert!(files_under(&setup.repo_dir().join("locks")).is_empty());
    }
}

/// `coffer binlog stream` as a child process with its scratch folder under `tmp`; its stderr is
/// collected as it comes. Killed on drop.
struct Stream {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Stream {
    fn start(setup: &Setup, tmp: &Path, interval: &str) -> Stream {
        let mut child = setup
            .coffer(&["binlog", "stream", "--interval", interval])
            .env("TMPDIR", tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Stream { child, log }
    }

    /// Waits for a log line containing `needle` and returns it.
    fn wait_for_line(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self
                .log
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.contains(needle))
            {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {within:?}: {}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM (as systemd stops it); the exit code (`None` for a signal) and the whole log.
    fn stop(mut self, within: Duration) -> (Option<i32>, String) {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the stream did not stop within {within:?} of SIGTERM: {}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread sees the pipe close with the process.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        (status.code(), log)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_full_or_read_only_disk_under_binlog_stream_is_logged_and_retried_until_it_heals() {
    let source = binlog_source(1503);
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    let Some(mount) = Mounted::tmpfs(&setup.repo_dir(), "16m") else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs (needs root)");
        return;
    };
    let tmp = scratch(&setup);
    run_in(&setup, &tmp, &["backup", "run", "full"]).expect_code(0);
    let mut stream = Stream::start(&setup, &tmp, "1");
    write_notes(&source, 1, 3);
    wait_fully_archived(&setup, &tmp, Duration::from_secs(30));

    let mut next = 4;
    for (break_disk, says) in [
        (Mounted::fill as fn(&Mounted), "No space left on device"),
        (Mounted::read_only, "Read-only file system"),
    ] {
        let listed = run_in(&setup, &tmp, &["backup", "list", "--json"]).json();
        break_disk(&mount);
        write_notes(&source, next, 3);
        next += 3;
        // Documented: a failure is logged and retried (1, 2, 4 … 30 s apart); only a bad
        // configuration stops the stream.
        let line = stream.wait_for_line(says, Duration::from_secs(30));
        assert!(
            // The shipment's lock is its first write; its data the next.
            line.contains("binlog stream failed; retrying")
                && (line.contains("data/") || line.contains("locks/")),
            "{line}"
        );
        assert!(
            stream.running(),
            "the stream gave up: {}",
            stream.log.lock().unwrap()
        );
        assert!(!fully_archived(&setup, &tmp));
        assert_eq!(
            run_in(&setup, &tmp, &["backup", "list", "--json"]).json(),
            listed,
            "nothing new may be listed while the disk is broken"
        );
        assert_nothing_half_written(&setup.repo_dir());
        if says.starts_with("No space") {
            mount.free();
        } else {
            mount.read_write();
        }
        // Healed: the next attempt resumes from what the repository holds.
        wait_fully_archived(&setup, &tmp, Duration::from_secs(30));
    }
    let (code, log) = stream.stop(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // Each shipment released its shared lock, the failed ones included.
    let locks = files_under(&setup.repo_dir().join("locks"));
    assert!(locks.is_empty(), "{locks:?}");

    let window = run_in(&setup, &tmp, &["binlog", "window", "--json"]).json();
    assert_eq!(window["gaps"], serde_json::json!([]), "{window:#}");
    assert_nothing_half_written(&setup.repo_dir());
    let left = files_under(&tmp);
    assert!(left.is_empty(), "left in the scratch folder: {left:?}");
}

#[test]
fn sigterm_while_the_stream_cannot_store_its_last_shipment_stops_it_cleanly() {
    let source = binlog_source(1504);
    let setup = Setup::with_source(&source, Repo::Folder, &["app"], "");
    let Some(mount) = Mounted::tmpfs(&setup.repo_dir(), "16m") else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs (needs root)");
        return;
    };
    let tmp = scratch(&setup);
    run_in(&setup, &tmp, &["backup", "run", "full"]).expect_code(0);
    // Shipments 3 s apart: the signal below lands between two, so the stream's last shipment
    // (the one SIGTERM triggers) is the one that meets the read-only disk.
    let stream = Stream::start(&setup, &tmp, "3");
    write_notes(&source, 1, 2);
    wait_fully_archived(&setup, &tmp, Duration::from_secs(30));
    let listed = run_in(&setup, &tmp, &["backup", "list", "--json"]).json();
    mount.read_only();
    write_notes(&source, 3, 2);
    std::thread::sleep(Duration::from_millis(300));
    let (code, log) = stream.stop(Duration::from_secs(20));
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("Read-only file system"),
        "the failure is not logged: {log}"
    );
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        run_in(&setup, &tmp, &["backup", "list", "--json"]).json(),
        listed
    );
    assert_nothing_half_written(&setup.repo_dir());
    let left = files_under(&tmp);
    assert!(left.is_empty(), "left in the scratch folder: {left:?}");
    // The last shipment's lock was its first write, refused by the read-only disk: no lock
    // object was made, so none is left.
    assert!(files_under(&setup.repo_dir().join("locks")).is_empty());
    // What the stream could not ship, the next run archives.
    mount.read_write();
    let next = run_in(&setup, &tmp, &["backup", "run", "incremental"]);
    next.expect_code(0);
    assert!(files_under(&setup.repo_dir().join("locks")).is_empty());
    assert!(fully_archived(&setup, &tmp));
    let window = run_in(&setup, &tmp, &["binlog", "window", "--json"]).json();
    assert_eq!(window["gaps"], serde_json::json!([]), "{window:#}");
}

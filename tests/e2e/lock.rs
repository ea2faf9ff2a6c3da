//! The repository lock end to end. `coffer lock list|break` on a folder repository, with lock
//! objects written by hand as another coffer would have left them (no database: the config names
//! one that is never reached); every locking command meeting a prune's lock; a prune meeting a
//! running backup's; two daemons on one repository, one backing up, one pruning.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{
    Repo as SetupRepo, Run, SLOW_COMPRESSION, Setup, coffer_command, files_under, free_port,
};

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("coffer.toml"),
            "[repository]\nurl = \"repo\"\n\n[source]\nhost = \"127.0.0.1\"\nport = 9\nuser = \"nobody\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("repo/locks")).unwrap();
        Repo { dir }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut command = coffer_command();
        command
            .arg("--config")
            .arg(self.dir.path().join("coffer.toml"))
            .args(args);
        Run::from(command.output().unwrap())
    }

    fn locks(&self) -> std::path::PathBuf {
        self.dir.path().join("repo/locks")
    }

    /// A lock object as `coffer_core::lock` writes it.
    fn plant(&self, id: &str, kind: &str, host: &str, pid: u32, heartbeat: jiff::Timestamp) {
        let record = serde_json::json!({
            "id": id,
            "kind": kind,
            "purpose": "backup full",
            "host": host,
            "pid": pid,
            "created": heartbeat,
            "heartbeat": heartbeat,
            "created_by": "coffer 0.1.0",
        });
        std::fs::write(
            self.locks().join(format!("{id}.json")),
            serde_json::to_vec_pretty(&record).unwrap(),
        )
        .unwrap();
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn exists(path: &Path) -> bool {
    path.exists()
}

#[test]
fn lock_list_shows_locks_and_break_removes_only_stale_ones_unless_forced() {
    let repo = Repo::new();
    let now = jiff::Timestamp::now();
    // This test process is alive on this host: its lock is live.
    let live = "20261202T010000Z-00000000live";
    repo.plant(live, "exclusive", &host_name(), std::process::id(), now);
    // Another host's lock whose heartbeat is two hours old: stale.
    let stale = "20261202T000000Z-0000000stale";
    repo.plant(
        stale,
        "shared",
        "elsewhere",
        4242,
        now - jiff::SignedDuration::from_hours(2),
    );

    let listed = repo.run(&["lock", "list", "--json"]).json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert_eq!(listed[0]["id"], stale);
    assert_eq!(listed[0]["state"], "stale");
    assert!(
        listed[0]["stale_reason"]
            .as_str()
            .unwrap()
            .contains("heartbeat is 2 h 0 min old")
    );
    assert_eq!(listed[1]["id"], live);
    assert_eq!(listed[1]["state"], "live");
    assert_eq!(listed[1]["kind"], "exclusive");
    assert_eq!(listed[1]["host"], host_name());
    assert_eq!(listed[1]["pid"], std::process::id());
    assert_eq!(listed[1]["purpose"], "backup full");
    assert!(listed[1]["heartbeat_age_seconds"].as_i64().unwrap() < 60);

    let text = repo.run(&["lock", "list"]);
    text.expect_code(0);
    assert!(
        text.stdout.contains(live) && text.stdout.contains("live"),
        "{text:#?}"
    );

    // A live lock is not broken without --force.
    let refused = repo.run(&["lock", "break", live]);
    refused.expect_code(9);
    assert!(refused.error_line().contains("--force"), "{refused:#?}");
    assert!(exists(&repo.locks().join(format!("{live}.json"))));

    // --stale removes the stale one only, and says so.
    let broken = repo.run(&["lock", "break", "--stale"]);
    broken.expect_code(0);
    assert!(broken.stdout.contains(stale), "{broken:#?}");
    assert!(broken.stderr.contains("removed stale"), "{broken:#?}");
    assert!(!exists(&repo.locks().join(format!("{stale}.json"))));
    assert!(exists(&repo.locks().join(format!("{live}.json"))));

    // An unknown id is not found; a malformed one is bad input.
    repo.run(&["lock", "break", "20261202T000000Z-000000000000"])
        .expect_code(8);
    repo.run(&["lock", "break", "../x"]).expect_code(2);

    // With --force, the live one goes too.
    repo.run(&["lock", "break", "--force", live]).expect_code(0);
    assert!(!exists(&repo.locks().join(format!("{live}.json"))));
    assert_eq!(
        repo.run(&["lock", "list", "--json"]).json(),
        serde_json::json!([])
    );
}

#[test]
fn a_lock_of_a_dead_process_on_this_host_is_stale() {
    let repo = Repo::new();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let id = "20261202T010000Z-000000000dead";
    repo.plant(id, "exclusive", &host_name(), pid, jiff::Timestamp::now());
    let listed = repo.run(&["lock", "list", "--json"]).json();
    assert_eq!(listed[0]["state"], "stale", "{listed:#?}");
    assert_eq!(
        listed[0]["stale_reason"],
        format!("process {pid} is not running on {}", host_name())
    );
    repo.run(&["lock", "break", id]).expect_code(0);
    assert!(!exists(&repo.locks().join(format!("{id}.json"))));
}

/// Waits until `child` has a child process whose command line matches `pattern`.
fn wait_for_child(child: &mut std::process::Child, pattern: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &child.id().to_string(), "-f", pattern])
            .output()
            .unwrap();
        if !out.stdout.is_empty() {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "it finished before {pattern} was seen"
        );
        assert!(Instant::now() < deadline, "no child matching {pattern}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lock objects of a folder repository.
fn lock_files(repo: &Path) -> Vec<String> {
    files_under(&repo.join("locks"))
}

#[test]
fn a_prune_while_a_full_backup_runs_exits_7_naming_the_backups_lock() {
    let setup = Setup::new(SetupRepo::Folder, &["bulk"], SLOW_COMPRESSION);
    let mut backup = setup
        .coffer(&["backup", "run", "full", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_child(&mut backup, "mariadb-dump|mysqldump");
    let held = setup.run(&["lock", "list", "--json"]).json();
    assert_eq!(held.as_array().unwrap().len(), 1, "{held:#}");
    assert_eq!(held[0]["kind"], "shared");
    assert_eq!(held[0]["purpose"], "backup full");
    assert_eq!(held[0]["pid"], backup.id());

    let prune = setup.run(&["prune", "--lock-wait", "0"]);
    prune.expect_code(7);
    let line = prune.error_line();
    let id = held[0]["id"].as_str().unwrap();
    for part in [
        "exclusive repository lock for prune",
        "shared lock",
        id,
        "(backup full)",
        &format!("of {} pid {}", host_name(), backup.id()),
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    assert_eq!(
        prune
            .stderr
            .lines()
            .filter(|l| l.contains("coffer: error"))
            .count(),
        1
    );

    // The backup was not disturbed, and let go of its lock when done.
    let run = Run::from(backup.wait_with_output().unwrap());
    run.expect_code(0);
    assert!(
        lock_files(&setup.repo_dir()).is_empty(),
        "{:?}",
        lock_files(&setup.repo_dir())
    );
    setup.run(&["backup", "verify", "latest"]).expect_code(0);
    setup.run(&["prune", "--lock-wait", "0"]).expect_code(0);
}

#[test]
fn while_a_prune_holds_the_lock_every_locking_command_exits_7_after_its_lock_wait() {
    let repo = Repo::new();
    // As a prune of this (live) process would hold it.
    let id = "20261202T010000Z-0000000prune";
    repo.plant(
        id,
        "exclusive",
        &host_name(),
        std::process::id(),
        jiff::Timestamp::now(),
    );
    let path = repo.locks().join(format!("{id}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("backup full", "prune");
    std::fs::write(&path, text).unwrap();
    for args in [
        &["backup", "run", "full"][..],
        &["backup", "run", "incremental"],
        &["backup", "verify", "latest"],
        &["binlog", "stream"],
        &["restore", "db", "--latest", "--target", "127.0.0.1:9"],
        &["drill", "run"],
    ] {
        let mut with_flag = args.to_vec();
        with_flag.extend(["--lock-wait", "0"]);
        let run = repo.run(&with_flag);
        run.expect_code(7);
        let line = run.error_line();
        assert!(
            line.contains("shared repository lock")
                && line.contains(&format!(
                    "exclusive lock {id} (prune) of {} pid {}",
                    host_name(),
                    std::process::id()
                )),
            "{args:?}: {line}"
        );
        assert_eq!(
            std::fs::read_dir(repo.locks()).unwrap().count(),
            1,
            "{args:?} left its lock object"
        );
    }
    // Without the flag, `[daemon] lock_wait_seconds` decides how long to wait.
    let config = repo.dir.path().join("coffer.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[daemon]\nlock_wait_seconds = 2\n");
    std::fs::write(&config, text).unwrap();
    let started = Instant::now();
    let run = repo.run(&["backup", "verify", "latest"]);
    run.expect_code(7);
    assert!(
        run.error_line().contains("not obtained within 2 s"),
        "{run:#?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A flag of 1 s overrides it.
    let run = repo.run(&["backup", "verify", "latest", "--lock-wait", "1"]);
    run.expect_code(7);
    assert!(
        run.error_line().contains("not obtained within 1 s"),
        "{run:#?}"
    );
    // Read-only listings take no lock.
    repo.run(&["backup", "list"]).expect_code(0);
    repo.run(&["lock", "list"]).expect_code(0);
}

/// `coffer daemon` for `setup`, its stderr in `NAME.log` of the setup's folder.
fn spawn_daemon(setup: &Setup, name: &str) -> std::process::Child {
    let log = std::fs::File::create(setup.dir.path().join(format!("{name}.log"))).unwrap();
    setup.coffer(&["daemon"]).stderr(log).spawn().unwrap()
}

fn daemon_log(setup: &Setup, name: &str) -> String {
    std::fs::read_to_string(setup.dir.path().join(format!("{name}.log"))).unwrap_or_default()
}

#[test]
fn two_daemons_on_one_repository_prune_waits_for_the_others_backups_and_deletes_nothing_in_flight()
{
    // Daemon A backs up every 4 s (each backup takes a few seconds through gzip -9); daemon B,
    // another process with its own config on the same repository, prunes to the newest full
    // every 3 s. A waiting prune keeps no lock object, so shared locks that always overlap
    // would keep it out (lock.rs); A's runs leave gaps between them.
    let a = Setup::new(SetupRepo::Folder, &["bulk"], SLOW_COMPRESSION);
    let b = Setup::new(SetupRepo::Folder, &["bulk"], "");
    b.edit_config(
        "url = \"repo\"",
        &format!("url = \"{}\"", a.repo_dir().display()),
    );
    a.append_config(&format!(
        "\n[schedule]\nfull = \"*/4 * * * * *\"\n\n[daemon]\nlisten = \"127.0.0.1:{}\"\nshutdown_grace_seconds = 5\nretry_backoff_seconds = 1\n",
        free_port()
    ));
    b.append_config(&format!(
        "\n[schedule]\nprune = \"*/3 * * * * *\"\n\n[retention.full]\nkeep_last = 1\n\n[daemon]\nlisten = \"127.0.0.1:{}\"\nshutdown_grace_seconds = 5\nretry_backoff_seconds = 1\nlock_wait_seconds = 30\n",
        free_port()
    ));
    let mut daemon_a = spawn_daemon(&a, "a");
    let mut daemon_b = spawn_daemon(&b, "b");
    let fail = |why: String| -> ! {
        panic!(
            "{why}\n--- daemon A:\n{}\n--- daemon B:\n{}",
            daemon_log(&a, "a"),
            daemon_log(&b, "b")
        )
    };
    // Every backup the repository lists, while both run, verifies: a prune deletes only whole
    // backups (gone from the listing first), never what a backup is writing. `latest` is
    // resolved under the shared lock, so it cannot vanish while it is read.
    let started = Instant::now();
    let mut verified = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(24) {
        std::thread::sleep(Duration::from_millis(1500));
        let run = a.run(&["backup", "verify", "latest", "--json", "--lock-wait", "30"]);
        match run.code {
            0 => {
                verified.insert(run.json()["backup_id"].as_str().unwrap().to_string());
            }
            8 if verified.is_empty() => {} // no backup finished yet
            _ => fail(format!(
                "verifying the newest backup while both run: {run:#?}"
            )),
        }
        // With both logs, so that a daemon stopping says why.
        for (daemon, name) in [(&mut daemon_a, "A"), (&mut daemon_b, "B")] {
            if let Some(status) = daemon.try_wait().unwrap() {
                fail(format!("daemon {name} stopped: {status}"));
            }
        }
    }
    for daemon in [&daemon_a, &daemon_b] {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert!(daemon_a.wait().unwrap().success(), "daemon A's exit");
    assert!(daemon_b.wait().unwrap().success(), "daemon B's exit");

    let (log_a, log_b) = (daemon_log(&a, "a"), daemon_log(&b, "b"));
    if verified.len() < 2 {
        fail(format!("too few backups seen: {verified:?}"));
    }
    // B's prunes waited while A's backups held their shared locks, then deleted old backups.
    // (It may also have waited for this test's own `verify`.)
    let a_pid = format!("pid {}", daemon_a.id());
    if !log_b.lines().any(|l| {
        l.contains("waiting up to 30 s for the repository lock")
            && l.contains("(backup full)")
            && l.contains(&a_pid)
    }) {
        fail("prune never waited for a backup's lock".into());
    }
    if !log_b.contains("backup deleted") {
        fail("prune never deleted anything".into());
    }
    assert!(!log_a.contains("panicked") && !log_b.contains("panicked"));
    // Both let go of their locks; every backup listed now verifies, and every object under
    // data/ belongs to a listed backup: nothing of one in flight was deleted or left half.
    let repo = a.repo_dir();
    assert!(lock_files(&repo).is_empty(), "{:?}", lock_files(&repo));
    let listed = a.listed(None);
    assert!(!listed.is_empty());
    for id in &listed {
        let run = a.run(&["backup", "verify", id]);
        if run.code != 0 {
            fail(format!("backup {id} no longer verifies: {run:#?}"));
        }
    }
    for file in files_under(&repo.join("data")) {
        let id = file.split('/').next().unwrap();
        assert!(
            listed.iter().any(|l| l == id),
            "data/{file} belongs to no listed backup"
        );
    }
}

#[test]
fn a_prune_runs_beside_a_binlog_stream_which_ships_before_and_after_it() {
    let source = crate::util::private_source(coffer_verifier::SandboxOptions {
        server_id: 1711,
        binlog_format: coffer_verifier::BinlogFormat::Row,
        ..Default::default()
    });
    source
        .sql("CREATE DATABASE app; CREATE TABLE app.notes (id INT PRIMARY KEY) ENGINE=InnoDB;")
        .unwrap();
    let setup = Setup::with_source(&source, SetupRepo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    let log = setup.dir.path().join("stream.log");
    let mut stream = setup
        .coffer(&["binlog", "stream", "--interval", "1"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let segments = || setup.listed(Some("segment")).len();
    let wait_for_segments = |at_least: usize| {
        let started = Instant::now();
        while segments() < at_least {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no segment shipped: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    source.sql("INSERT INTO app.notes VALUES (1);").unwrap();
    wait_for_segments(1);
    // The stream holds no lock between shipments: the prune gets its exclusive one.
    let prune = setup.run(&["prune", "--lock-wait", "10"]);
    prune.expect_code(0);
    let before = segments();
    source.sql("INSERT INTO app.notes VALUES (2);").unwrap();
    wait_for_segments(before + 1);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &stream.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(stream.wait().unwrap().success());
    assert!(files_under(&setup.repo_dir().join("locks")).is_empty());
    for id in setup.listed(None) {
        setup.run(&["backup", "verify", &id]).expect_code(0);
    }
}

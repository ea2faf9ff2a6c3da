//! SIGINT and SIGTERM stop every command cleanly: children killed, temp files (the client option
//! file with the password) removed, no manifest written, `after` hooks run, the state of the
//! target named, exit 130/143. Hooks see none of coffer's secrets.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use coffer_verifier::SandboxOptions;

use crate::util::{Repo, Run, SLOW_COMPRESSION, Setup, files_under, restore_target};

/// Waits until `child` has a child process whose command line matches `pattern`.
fn wait_for_child(child: &Child, pattern: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &child.id().to_string(), "-f", pattern])
            .output()
            .unwrap();
        if !out.stdout.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "no child matching {pattern}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigint_during_a_restore_runs_the_after_hook_and_names_the_half_restored_target() {
    let setup = Setup::new(Repo::Folder, &["bulk"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    let dir = setup.dir.path();
    setup.append_config(&format!(
        "\n[restore]\nbefore = [\"env > {0}/before.env\"]\nafter = [\"touch {0}/after.ran\"]\n",
        dir.display()
    ));
    let target = restore_target(SandboxOptions {
        server_id: 1301,
        ..Default::default()
    });
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let child = setup
        .coffer(&[
            "restore",
            "db",
            "--latest",
            "--target",
            &format!("127.0.0.1:{}", target.port()),
        ])
        .env("COFFER_TARGET_USER", "restorer")
        .env("COFFER_TARGET_PASSWORD", "pw")
        .env("AWS_SECRET_ACCESS_KEY", "must-not-reach-hooks")
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The client is loading rows: interrupt it half-way.
    wait_for_child(&child, "max-allowed-packet");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "INT");
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(130);
    let line = run.error_line();
    assert!(
        line.contains("interrupted by SIGINT") && line.contains("half-restored"),
        "{run:#?}"
    );
    assert!(dir.join("after.ran").exists(), "the after hook did not run");
    let env = std::fs::read_to_string(dir.join("before.env")).unwrap();
    assert!(
        !env.contains("must-not-reach-hooks") && !env.contains("COFFER_TARGET_PASSWORD"),
        "a secret reached the hook: {env}"
    );
    let left = files_under(&tmp);
    assert!(left.is_empty(), "left behind: {left:?}");
    // The rerun refuses the half-loaded database unless told to replace it.
    let again = crate::util::restore_into(&setup, &target, &["--latest"]);
    again.expect_code(9);
    assert!(
        again.error_line().contains("half-restored") && again.error_line().contains("SIGINT"),
        "the refusal does not say the target is half-restored: {again:#?}"
    );
    // Replacing it is a whole restore, and leaves no mark.
    let replaced =
        crate::util::restore_into(&setup, &target, &["--latest", "--drop-existing", "--yes"]);
    assert_eq!(replaced.code, 0, "{replaced:#?}");
    let comment = target
        .sql("SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'bulk'")
        .unwrap();
    assert!(!comment.contains("half-restored"), "{comment}");
}

#[test]
fn sigterm_during_a_full_backup_records_nothing_and_leaves_no_option_file() {
    let setup = Setup::new(Repo::Folder, &["bulk"], SLOW_COMPRESSION);
    let tmp = setup.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let child = setup
        .coffer(&["backup", "run", "full"])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_child(&child, "mariadb-dump|mysqldump");
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "TERM");
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(143);
    assert!(
        run.error_line().contains("interrupted by SIGTERM"),
        "{run:#?}"
    );
    let list = setup.run(&["backup", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 0, "{list:#}");
    let stored = files_under(&setup.repo_dir());
    assert!(
        stored.iter().all(|f| f.ends_with("coffer-repository.json")),
        "{stored:?}"
    );
    assert!(files_under(&tmp).is_empty(), "{:?}", files_under(&tmp));
}

#[test]
fn a_leftover_of_a_killed_run_is_removed_at_the_next_start() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let state = setup.dir.path().join("state");
    setup.edit_config(
        "timezone = ",
        &format!("state_dir = \"{}\"\ntimezone = ", state.display()),
    );
    // What `kill -9` leaves: a run folder whose lock nobody holds, with a client option file.
    let dead = state.join("tmp/run-999999-dead");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join(".lock"), "").unwrap();
    std::fs::write(dead.join("client-x.cnf"), "[client]\npassword=secret\n").unwrap();
    setup.run(&["backup", "list"]).expect_code(0);
    assert!(!dead.exists(), "the dead run's folder is still there");
}

#[test]
fn sigterm_during_a_drill_stores_no_report_and_leaves_no_sandbox() {
    let setup = Setup::new(Repo::Folder, &["bulk"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    let tmp = setup.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let child = setup
        .coffer(&["drill", "run", "--json"])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The dump is loading into the sandbox.
    wait_for_child(&child, "max-allowed-packet");
    signal(&child, "TERM");
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect_code(143);
    let history = setup.run(&["drill", "history", "--json"]).json();
    assert_eq!(history.as_array().unwrap().len(), 0, "{history:#}");
    // The sandbox's server and files are gone with the drill.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let running = std::process::Command::new("pgrep")
            .args(["-f", &tmp.display().to_string()])
            .output()
            .unwrap();
        let left = files_under(&tmp);
        if running.stdout.is_empty() && left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {left:?}, running: {}",
            String::from_utf8_lossy(&running.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

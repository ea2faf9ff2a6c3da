//! `coffer lock list|break` on a folder repository, with lock objects written by hand as another
//! coffer would have left them. Needs no database: the config names one that is never reached.

use std::path::Path;

use crate::util::{Run, coffer_command};

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

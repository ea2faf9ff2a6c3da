//! The repository's disk fills up or turns read-only: the backup fails with exit 4 naming the
//! object, nothing half-written is left or listed, and what was stored before still reads.

use std::path::{Path, PathBuf};

use crate::util::{Repo, Setup, files_under};

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
    assert!(run.error_line().contains("Read-only"), "{run:#?}");
    let list = setup.run(&["backup", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    setup.run(&["backup", "verify", "latest"]).expect_code(0);
}

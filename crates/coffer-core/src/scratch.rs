//! Private scratch space: every temporary file and folder coffer makes (client option files,
//! binlog spools, decrypted binlogs for a replay, sandboxes) lives under one root, readable by us
//! only, and nothing of a run that died survives the next start.
//!
//! Layout: `ROOT/run-PID-XXXX/…`, where `ROOT` is `state_dir/tmp` when `state_dir` is configured,
//! else `$TMPDIR/coffer-UID`. The root and every folder in it are created 0700 and every file
//! 0600, whatever the umask (a umask can only remove permission bits, and these ask for none
//! beyond the owner's). A run holds an exclusive lock on its folder's `.lock` file for as long as
//! it lives; the kernel releases it when the process dies, even by `kill -9`, so [`init`] removes
//! every run folder whose lock it can take: those are leftovers of dead runs.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tracing::{debug, warn};

use crate::error::{Error, Result};

/// This process's run folder and the lock that marks it alive.
struct Run {
    root: PathBuf,
    dir: PathBuf,
    _lock: File,
}

static RUN: OnceLock<Run> = OnceLock::new();
/// Serializes [`init`] so two threads never create two run folders.
static INIT: Mutex<()> = Mutex::new(());

/// The scratch root for `state_dir` (`state_dir/tmp`), or `$TMPDIR/coffer-UID` without one.
pub fn root_for(state_dir: Option<&Path>) -> PathBuf {
    match state_dir {
        Some(dir) => dir.join("tmp"),
        None => {
            let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
            std::env::temp_dir().join(format!("coffer-{uid}"))
        }
    }
}

/// Sets up this process's scratch folder under [`root_for`]`(state_dir)`, removing what dead
/// runs left there. Called once at start by the binary; later calls (and the first use of
/// [`dir`] or [`file()`] without it) return the folder already made.
pub fn init(state_dir: Option<&Path>) -> Result<&'static Path> {
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(run) = RUN.get() {
        return Ok(&run.dir);
    }
    let root = root_for(state_dir);
    let fail =
        |what: &str, e: std::io::Error| Error::other(format!("{what} {}: {e}", root.display()));
    // Another coffer may be making the same root at this moment, or removing it (empty) as it
    // exits ([`finish`]): a folder that appears (EEXIST) or vanishes (ENOENT) between two steps
    // is tried again before giving up.
    let mut attempts = 0;
    let dir = loop {
        attempts += 1;
        let again = |e: &std::io::Error| {
            attempts < 5
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotFound
                )
        };
        if let Err(e) = DirBuilder::new().recursive(true).mode(0o700).create(&root) {
            if again(&e) {
                continue;
            }
            return Err(fail("creating the scratch folder", e));
        }
        match std::fs::symlink_metadata(&root) {
            Ok(meta) => check_private(&root, &meta)?,
            Err(e) if again(&e) => continue,
            Err(e) => return Err(fail("looking at the scratch folder", e)),
        }
        remove_dead_runs(&root);
        match tempfile::Builder::new()
            .prefix(&format!("run-{}-", std::process::id()))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&root)
        {
            Ok(dir) => break dir.keep(),
            Err(e) if again(&e) => continue,
            Err(e) => return Err(fail("creating a run folder in", e)),
        }
    };
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(".lock"))
        .and_then(|f| f.try_lock().map(|()| f).map_err(std::io::Error::other))
        .map_err(|e| fail("locking a run folder in", e))?;
    let run = RUN.get_or_init(|| Run {
        root,
        dir,
        _lock: lock,
    });
    Ok(&run.dir)
}

/// Refuses a scratch root that someone else owns or can read: it would hold decrypted binlogs
/// and option files with passwords.
fn check_private(root: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let own_uid = std::fs::metadata("/proc/self").map_or(meta.uid(), |m| m.uid());
    if !meta.is_dir() || meta.uid() != own_uid {
        return Err(Error::config(format!(
            "scratch folder {} is not a folder owned by this user; remove it or set state_dir",
            root.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::other(format!("making {} private: {e}", root.display())))?;
    }
    Ok(())
}

/// Removes run folders whose owner is gone (their lock is free), and folders of runs that died
/// before they could lock theirs.
fn remove_dead_runs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("run-") {
            continue;
        }
        let path = entry.path();
        let dead = match File::open(path.join(".lock")) {
            Ok(lock) => lock.try_lock().is_ok(),
            // No lock file: a run that died between creating its folder and locking it, unless
            // it is being created right now (then it is young).
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 60)),
        };
        if dead {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => debug!(folder = %path.display(), "removed what a dead run left"),
                Err(e) => {
                    warn!(folder = %path.display(), error = %e, "cannot remove what a dead run left")
                }
            }
        }
    }
}

fn run_dir() -> Result<&'static Path> {
    match RUN.get() {
        Some(run) => Ok(&run.dir),
        None => init(None),
    }
}

/// A new private folder (0700) in this run's scratch space, removed when dropped.
pub fn dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(run_dir()?)
        .map_err(|e| Error::other(format!("creating a private temp folder: {e}")))
}

/// A new private file (0600) in this run's scratch space, removed when dropped.
pub fn file(prefix: &str, suffix: &str) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(run_dir()?)
        .map_err(|e| Error::other(format!("creating a private temp file: {e}")))
}

/// Creates a file that must not exist yet, 0600 whatever the umask (for files written into a
/// scratch folder by name, such as a binlog being decoded).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Removes this run's scratch folder, and the root if nothing else is left in it. Called by the
/// binary as it exits; what is still open is removed by the next run's [`init`].
pub fn finish() {
    if let Some(run) = RUN.get() {
        let _ = std::fs::remove_dir_all(&run.dir);
        // Fails while other runs use the root: that is what should happen.
        let _ = std::fs::remove_dir(&run.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_files_and_folders_are_private_whatever_the_umask() {
        let folder = dir("coffer-test-").unwrap();
        let mode = folder.path().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let file = file("coffer-test-", ".cnf").unwrap();
        let mode = file.path().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let made = create_private(&folder.path().join("x")).unwrap();
        drop(made);
        let mode = folder
            .path()
            .join("x")
            .metadata()
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let run = run_dir().unwrap();
        assert!(folder.path().starts_with(run) && file.path().starts_with(run));
    }

    #[test]
    fn what_a_dead_run_left_is_removed_and_a_live_run_is_kept() {
        let state = tempfile::tempdir().unwrap();
        let root = root_for(Some(state.path()));
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .unwrap();
        // A dead run: its lock file exists but nobody holds it.
        let dead = root.join("run-1-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(".lock"), "").unwrap();
        std::fs::write(dead.join("mysql-bin.000001"), "plaintext").unwrap();
        // A live run: its lock is held (here by this test).
        let live = root.join("run-2-live");
        std::fs::create_dir(&live).unwrap();
        let held = File::create(live.join(".lock")).unwrap();
        held.lock().unwrap();
        remove_dead_runs(&root);
        assert!(!dead.exists());
        assert!(live.exists());
    }
}

//! Change notifications for the daemon: the folders a `[[config_backup]]` table can match
//! watched with inotify (the `notify` crate), so a change is versioned within seconds instead of
//! at the next poll.
//!
//! Editors often write a new file and rename it over the old one, so a literal path's *folder*
//! is watched, not the file (a watch on the file would follow the old inode and go quiet after
//! the first save). A glob's root is watched recursively. Only events on a path a table's
//! patterns match wake the daemon, so a busy folder (logs beside `.env`) does not. What a watch
//! misses (a folder created later, a watch limit reached, a network file system) the poll at
//! `poll_interval` still catches: the watcher only makes a capture sooner, never decides one.

use std::path::{Path, PathBuf};

use coffer_core::config::ConfigBackup;
use coffer_core::error::{Error, Result};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::paths::{Root, root};

/// The folders to watch for `tables`, each with whether it is watched recursively; a folder
/// that is watched recursively is not also listed plainly.
pub fn watched_folders(tables: &[ConfigBackup]) -> Result<Vec<(PathBuf, RecursiveMode)>> {
    let mut recursive: Vec<PathBuf> = Vec::new();
    let mut plain: Vec<PathBuf> = Vec::new();
    for table in tables {
        for pattern in &table.paths.patterns {
            match root(pattern)? {
                Root::File(path) => {
                    if let Some(parent) = path.parent() {
                        plain.push(parent.to_path_buf());
                    }
                }
                Root::Walk { dir, .. } => recursive.push(dir),
            }
        }
    }
    recursive.sort();
    recursive.dedup();
    // A folder inside another recursive one is covered by it.
    let covered = |dir: &Path, by: &[PathBuf]| by.iter().any(|r| dir.starts_with(r));
    let mut kept: Vec<PathBuf> = Vec::new();
    for dir in recursive {
        if !covered(&dir, &kept) {
            kept.push(dir);
        }
    }
    plain.sort();
    plain.dedup();
    let mut folders: Vec<(PathBuf, RecursiveMode)> = kept
        .iter()
        .map(|d| (d.clone(), RecursiveMode::Recursive))
        .collect();
    folders.extend(
        plain
            .into_iter()
            .filter(|d| !covered(d, &kept))
            .map(|d| (d, RecursiveMode::NonRecursive)),
    );
    Ok(folders)
}

/// A running watch: dropping it stops watching.
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    /// Folders that could not be watched (missing, no permission), each with why: the poll
    /// still covers them.
    pub unwatched: Vec<(PathBuf, String)>,
}

/// Starts watching the folders of `tables`. Each event on a path a table matches sends one
/// `()` on the returned channel (extra events are dropped while one is pending: the receiver
/// only needs to know that something changed).
pub fn watch(tables: &[ConfigBackup]) -> Result<(ConfigWatch, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let patterns: Vec<coffer_core::config::GlobList> =
        tables.iter().map(|t| t.paths.clone()).collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(event) => {
                !event.kind.is_access()
                    && event
                        .paths
                        .iter()
                        .any(|p| patterns.iter().any(|g| g.is_match(p)))
            }
            // An overflowed queue may have hidden a change: look.
            Err(_) => true,
        };
        if relevant {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| Error::other(format!("starting the configuration watcher: {e}")))?;
    let mut unwatched = Vec::new();
    for (folder, mode) in watched_folders(tables)? {
        if let Err(e) = watcher.watch(&folder, mode) {
            unwatched.push((folder, e.to_string()));
        }
    }
    Ok((
        ConfigWatch {
            _watcher: watcher,
            unwatched,
        },
        rx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(paths: &[&str]) -> Vec<ConfigBackup> {
        let text = format!(
            "[repository]\nurl = \"/var/backups/coffer\"\n\n[[config_backup]]\npaths = [{}]\n",
            paths
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let no_env = |_: &str| None;
        coffer_core::config::Config::parse(&text, Path::new("/etc/coffer/coffer.toml"), &no_env)
            .unwrap()
            .config_backup
    }

    #[test]
    fn a_literal_file_watches_its_folder_and_a_glob_its_root_recursively() {
        let folders = watched_folders(&tables(&[
            "/srv/app/.env",
            "/etc/nginx/**/*.conf",
            "/etc/nginx/sites/default",
            "/etc/php/*/fpm/php.ini",
        ]))
        .unwrap();
        assert_eq!(
            folders,
            vec![
                (PathBuf::from("/etc/nginx"), RecursiveMode::Recursive),
                (PathBuf::from("/etc/php"), RecursiveMode::Recursive),
                (PathBuf::from("/srv/app"), RecursiveMode::NonRecursive),
            ]
        );
    }

    #[tokio::test]
    async fn an_edit_in_place_and_a_replace_by_rename_each_wake_the_receiver() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        std::fs::write(&env, "A=1\n").unwrap();
        std::fs::write(dir.path().join("app.log"), "").unwrap();
        let (_watch, mut changed) = watch(&tables(&[env.to_str().unwrap()])).unwrap();
        let wait = std::time::Duration::from_secs(5);

        // A file the table does not name: no wake-up.
        std::fs::write(dir.path().join("app.log"), "busy\n").unwrap();
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(500), changed.recv());
        assert!(quiet.await.is_err(), "an unrelated file woke the watcher");

        std::fs::write(&env, "A=2\n").unwrap();
        tokio::time::timeout(wait, changed.recv())
            .await
            .expect("an edit in place is seen");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        while changed.try_recv().is_ok() {}

        let tmp = dir.path().join(".env.swp");
        std::fs::write(&tmp, "A=3\n").unwrap();
        std::fs::rename(&tmp, &env).unwrap();
        tokio::time::timeout(wait, changed.recv())
            .await
            .expect("a replace by rename is seen");
    }
}

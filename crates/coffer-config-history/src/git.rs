//! The git mirror: each new version committed to a local bare git repository, secret values
//! masked, so `git log -p` shows what changed when.
//!
//! Only git plumbing, run as `git --git-dir=MIRROR …` with contents and messages fed on stdin,
//! never on a command line: `init --bare` (once), `hash-object -w --stdin` per file,
//! `mktree -z` per folder, `commit-tree`, then `update-ref refs/heads/main NEW OLD`, which
//! refuses to move the branch if another writer moved it meanwhile. A file's path in the tree is
//! its absolute path without the leading `/`. Commits carry a `Coffer-Version: ID` trailer.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use coffer_core::error::{Error, Result};

use crate::version::Version;

/// The branch versions are committed to.
pub const BRANCH: &str = "refs/heads/main";

/// Runs `git --git-dir=DIR ARGS` with `input` on stdin; its stdout, trimmed.
fn git(dir: &Path, args: &[&str], input: &[u8]) -> Result<String> {
    git_with_env(dir, args, input, &[])
}

/// [`git`] with extra environment variables (the commit dates).
fn git_with_env(dir: &Path, args: &[&str], input: &[u8], env: &[(&str, &str)]) -> Result<String> {
    let mut child = Command::new("git")
        .arg(format!("--git-dir={}", dir.display()))
        .args(args)
        // Neither the operator's nor the system's git configuration changes what is written.
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env("GIT_AUTHOR_NAME", "coffer")
        .env("GIT_AUTHOR_EMAIL", "coffer@localhost")
        .env("GIT_COMMITTER_NAME", "coffer")
        .env("GIT_COMMITTER_EMAIL", "coffer@localhost")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::other(format!("running git (is it installed?): {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let output = std::thread::scope(|s| {
        // Fed from a thread so a child that writes while it reads cannot block us both.
        let writer = s.spawn(move || stdin.write_all(input));
        let output = child.wait_with_output();
        let written = writer.join().expect("the stdin writer does not panic");
        (output, written)
    });
    let (output, written) = output;
    let output = output.map_err(|e| Error::other(format!("running git {}: {e}", args[0])))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        let tail = &stderr[stderr.floor_char_boundary(stderr.len().saturating_sub(400))..];
        return Err(Error::other(format!(
            "git {} in {} exited with {}: {tail}",
            args[0],
            dir.display(),
            output.status
        )));
    }
    written.map_err(|e| Error::other(format!("feeding git {}: {e}", args[0])))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Creates the bare repository at `dir` unless it exists; its HEAD is [`BRANCH`].
pub fn ensure_repository(dir: &Path) -> Result<()> {
    if dir.join("HEAD").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::other(format!("creating the git mirror {}: {e}", dir.display())))?;
    git(dir, &["init", "--bare", "--quiet"], b"")?;
    git(dir, &["symbolic-ref", "HEAD", BRANCH], b"")?;
    Ok(())
}

/// The version the mirror's newest commit holds (its `Coffer-Version` trailer); `None` for a
/// mirror that does not exist yet or has no commit.
pub fn mirrored_version(dir: &Path) -> Result<Option<String>> {
    if !dir.join("HEAD").exists() {
        return Ok(None);
    }
    let Ok(message) = git(dir, &["log", "-1", "--format=%B", BRANCH], b"") else {
        return Ok(None);
    };
    Ok(message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Coffer-Version: "))
        .map(|id| id.trim().to_string()))
}

enum Node {
    Blob { id: String, executable: bool },
    Tree(BTreeMap<String, Node>),
}

fn write_tree(dir: &Path, tree: &BTreeMap<String, Node>) -> Result<String> {
    let mut input = Vec::new();
    for (name, node) in tree {
        let (mode, kind, id) = match node {
            Node::Blob { id, executable } => (
                if *executable { "100755" } else { "100644" },
                "blob",
                id.clone(),
            ),
            Node::Tree(children) => ("040000", "tree", write_tree(dir, children)?),
        };
        input.extend_from_slice(format!("{mode} {kind} {id}\t").as_bytes());
        input.extend_from_slice(name.as_bytes());
        input.push(0);
    }
    git(dir, &["mktree", "-z"], &input)
}

/// Commits `version` to the mirror at `dir`: its files, each with the (masked) content
/// `contents` gives for its path. Returns the new commit's id.
pub fn commit_version(
    dir: &Path,
    version: &Version,
    contents: &BTreeMap<String, Vec<u8>>,
) -> Result<String> {
    ensure_repository(dir)?;
    let mut root: BTreeMap<String, Node> = BTreeMap::new();
    for file in &version.files {
        let Some(content) = contents.get(&file.path) else {
            continue;
        };
        let id = git(dir, &["hash-object", "-w", "--stdin"], content)?;
        let mut components: Vec<&str> = file.path.trim_start_matches('/').split('/').collect();
        let leaf = components.pop().expect("a checked path has a file name");
        let mut level = &mut root;
        for component in components {
            let node = level
                .entry(component.to_string())
                .or_insert_with(|| Node::Tree(BTreeMap::new()));
            level = match node {
                Node::Tree(children) => children,
                // A file where a folder is needed cannot happen for real paths.
                Node::Blob { .. } => {
                    return Err(Error::other(format!(
                        "{} is both a file and a folder",
                        file.path
                    )));
                }
            };
        }
        level.insert(
            leaf.to_string(),
            Node::Blob {
                id,
                executable: file.mode & 0o111 != 0,
            },
        );
    }
    let tree = write_tree(dir, &root)?;
    let parent = git(
        dir,
        &[
            "rev-parse",
            "--quiet",
            "--verify",
            &format!("{BRANCH}^{{commit}}"),
        ],
        b"",
    )
    .ok();
    let mut message = format!("{}: version {}\n\n", version.name, version.id);
    for change in &version.changes {
        message.push_str(&format!("{} {}\n", change.change, change.path));
    }
    message.push_str(&format!("\nCoffer-Version: {}\n", version.id));
    let date = format!("@{} +0000", version.created_at.as_second());
    let mut args = vec!["commit-tree".to_string(), tree];
    if let Some(parent) = &parent {
        args.push("-p".into());
        args.push(parent.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let commit = git_with_env(
        dir,
        &args,
        message.as_bytes(),
        &[("GIT_AUTHOR_DATE", &date), ("GIT_COMMITTER_DATE", &date)],
    )?;
    let old = parent.unwrap_or_default();
    git(dir, &["update-ref", BRANCH, &commit, &old], b"")?;
    Ok(commit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Change, ChangeKind, FORMAT_VERSION, FileRecord};

    fn version(id: &str, files: &[(&str, u32)], changes: &[(&str, ChangeKind)]) -> Version {
        let at: jiff::Timestamp = "2026-12-02T18:00:00Z".parse().unwrap();
        Version {
            format_version: FORMAT_VERSION,
            id: id.into(),
            name: "config".into(),
            created_at: at,
            created_by: "coffer".into(),
            encrypted: false,
            files: files
                .iter()
                .map(|(path, mode)| FileRecord {
                    path: path.to_string(),
                    size: 0,
                    mode: *mode,
                    mtime: at,
                    uid: 0,
                    gid: 0,
                    chunks: vec![],
                })
                .collect(),
            changes: changes
                .iter()
                .map(|(path, change)| Change {
                    path: path.to_string(),
                    change: *change,
                })
                .collect(),
            unreadable: vec![],
        }
    }

    #[test]
    fn each_version_is_one_commit_with_the_absolute_paths_as_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("config.git");
        let mut contents = BTreeMap::new();
        contents.insert("/etc/app/a.conf".to_string(), b"a=1\n".to_vec());
        contents.insert("/srv/run.sh".to_string(), b"#!/bin/sh\n".to_vec());
        let first = version(
            "20261202T180000Z-config-0001",
            &[("/etc/app/a.conf", 0o644), ("/srv/run.sh", 0o755)],
            &[
                ("/etc/app/a.conf", ChangeKind::Added),
                ("/srv/run.sh", ChangeKind::Added),
            ],
        );
        commit_version(&mirror, &first, &contents).unwrap();
        contents.insert("/etc/app/a.conf".to_string(), b"a=2\n".to_vec());
        let second = version(
            "20261202T180100Z-config-0002",
            &[("/etc/app/a.conf", 0o644), ("/srv/run.sh", 0o755)],
            &[("/etc/app/a.conf", ChangeKind::Modified)],
        );
        let head = commit_version(&mirror, &second, &contents).unwrap();
        assert_eq!(git(&mirror, &["rev-parse", BRANCH], b"").unwrap(), head);
        let count = git(&mirror, &["rev-list", "--count", BRANCH], b"").unwrap();
        assert_eq!(count, "2");
        let tree = git(&mirror, &["ls-tree", "-r", BRANCH], b"").unwrap();
        assert!(
            tree.contains("100644 blob") && tree.contains("\tetc/app/a.conf"),
            "{tree}"
        );
        assert!(
            tree.contains("100755 blob") && tree.contains("\tsrv/run.sh"),
            "{tree}"
        );
        let shown = git(&mirror, &["show", &format!("{BRANCH}:etc/app/a.conf")], b"").unwrap();
        assert_eq!(shown, "a=2");
        let message = git(&mirror, &["log", "-1", "--format=%B", BRANCH], b"").unwrap();
        assert!(
            message.contains("Coffer-Version: 20261202T180100Z-config-0002"),
            "{message}"
        );
        assert!(message.contains("modified /etc/app/a.conf"), "{message}");
    }
}

//! File snapshots through the binary: `backup run files`, `restore files`, `files ls|find|list`
//! and `backup verify` of a snapshot, with a config that has no `[source]` (no database).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Run, coffer_command};

/// A test's folder: a config with only `[repository]` (a folder) and `[[files]]` of `tree/`.
struct FilesSetup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl FilesSetup {
    fn new(extra: &str) -> FilesSetup {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let config = dir.path().join("coffer.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"state\"\n\n[repository]\nurl = \"repo\"\n{extra}\n[[files]]\nname = \"storage\"\npath = \"{}\"\n",
                tree.display()
            ),
        )
        .unwrap();
        FilesSetup { dir, config }
    }

    fn tree(&self) -> PathBuf {
        self.dir.path().join("tree")
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut command = coffer_command();
        command.arg("--config").arg(&self.config).args(args);
        Run::from(command.output().unwrap())
    }

    fn backup(&self) -> serde_json::Value {
        let taken = self.run(&["backup", "run", "files", "--json"]).json();
        assert_eq!(taken.as_array().unwrap().len(), 1, "{taken}");
        taken[0].clone()
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The runbook's tree: nested folders, empty files, a large file, a hard link, symlinks (one
/// out of the tree), odd names, and 300 small files.
fn make_tree(root: &Path) {
    let w = |rel: &str, bytes: &[u8]| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    for n in 0..300 {
        w(
            &format!("documents/tenant-{}/invoice-{n:04}.pdf", n % 5),
            &pseudo_random(2000 + n * 53, n as u64 + 1),
        );
    }
    w("documents/empty.pdf", b"");
    w("avatars/a/b/c/empty", b"");
    w("big/archive.bin", &pseudo_random(24 * 1024 * 1024, 7));
    w("odd/with space.txt", b"space");
    w("odd/caf\u{e9} \u{1f600}.txt", b"utf-8");
    w("odd/new\nline", b"newline");
    w("odd/-rf", b"leading dash");
    std::fs::write(
        root.join(OsStr::from_bytes(b"odd/latin1-\xe9")),
        b"not utf-8",
    )
    .unwrap();
    std::fs::hard_link(root.join("odd/-rf"), root.join("documents/hard-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("odd/outside")).unwrap();
    std::os::unix::fs::symlink("../big", root.join("documents/big-link")).unwrap();
    std::fs::set_permissions(root.join("odd/-rf"), std::fs::Permissions::from_mode(0o751)).unwrap();
    std::fs::create_dir(root.join("empty-dir")).unwrap();
    std::fs::set_permissions(
        root.join("empty-dir"),
        std::fs::Permissions::from_mode(0o705),
    )
    .unwrap();
}

/// Every entry under `root` as `find` sees it (type, mode, mtime, symlink target, and for
/// files their length and content), by path bytes.
fn scan(root: &Path) -> BTreeMap<Vec<u8>, (String, Vec<u8>)> {
    let out = Command::new("find")
        .arg(root)
        .args(["-mindepth", "1", "-printf", "%P\\t%y\\t%m\\t%T@\\t%l\\0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .map(|record| {
            let tab = record.iter().position(|&b| b == b'\t').unwrap();
            let (path, rest) = (record[..tab].to_vec(), &record[tab + 1..]);
            let meta = String::from_utf8_lossy(rest).into_owned();
            let content = if meta.starts_with("f\t") {
                std::fs::read(root.join(OsStr::from_bytes(&path))).unwrap()
            } else {
                Vec::new()
            };
            (path, (meta, content))
        })
        .collect()
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (left, right) = (scan(a), scan(b));
    let names = |m: &BTreeMap<Vec<u8>, (String, Vec<u8>)>| -> Vec<String> {
        m.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert_eq!(names(&left), names(&right), "the same entries");
    for (path, (meta, content)) in &left {
        let (other_meta, other_content) = &right[path];
        let shown = String::from_utf8_lossy(path);
        assert_eq!(meta, other_meta, "{shown}: type, mode, mtime or target");
        assert!(content == other_content, "{shown}: content differs");
    }
}

/// Changes 1 % of the small files (3 of 300) in place, and adds two.
fn change_one_percent(root: &Path) -> u64 {
    let mut changed = 0;
    for n in [3usize, 150, 297] {
        let path = root.join(format!("documents/tenant-{}/invoice-{n:04}.pdf", n % 5));
        let bytes = pseudo_random(2000 + n * 53, n as u64 + 1000);
        changed += bytes.len() as u64;
        std::fs::write(path, bytes).unwrap();
    }
    for n in 0..2 {
        let bytes = pseudo_random(5000, 500 + n);
        changed += bytes.len() as u64;
        std::fs::write(root.join(format!("documents/new-{n}.pdf")), bytes).unwrap();
    }
    changed
}

#[test]
fn a_tree_snapshots_twice_and_restores_whole_and_by_folder_byte_for_byte() {
    let setup = FilesSetup::new("");
    make_tree(&setup.tree());
    let first = setup.backup();
    assert_eq!(first["source"], "storage");
    assert!(first["parent"].is_null());
    let first_files = first["snapshot"]["files"].as_u64().unwrap();
    assert!(first_files >= 300, "{first}");

    let changed = change_one_percent(&setup.tree());
    let second = setup.backup();
    assert_eq!(second["parent"], first["id"]);
    // Only the changed and new files are read; the rest keep the parent's chunks.
    assert_eq!(second["snapshot"]["read_files"], 5, "{second}");
    let new_bytes = second["stored"]["new_bytes"].as_u64().unwrap();
    // Roughly only what changed: the changed contents plus the listing's changed chunk(s).
    assert!(
        new_bytes >= changed && new_bytes < changed + 3 * 1024 * 1024,
        "{new_bytes} new bytes for {changed} changed"
    );

    // The latest, whole.
    let whole = setup.dir.path().join("whole");
    let run = setup.run(&[
        "restore",
        "files",
        "--latest",
        "--to",
        whole.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_same_tree(&setup.tree(), &whole);
    // Hard links come back as one file with two names.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(whole.join("odd/-rf")).unwrap().ino(),
        std::fs::metadata(whole.join("documents/hard-link"))
            .unwrap()
            .ino()
    );

    // One folder, kept at its path under the target.
    let part = setup.dir.path().join("part");
    let run = setup.run(&[
        "restore",
        "files",
        "--latest",
        "--path",
        "documents/tenant-3/",
        "--to",
        part.to_str().unwrap(),
        "--json",
    ]);
    let result = run.json();
    assert_eq!(result["files"], 60, "{result}");
    assert_same_tree(
        &setup.tree().join("documents/tenant-3"),
        &part.join("documents/tenant-3"),
    );
    let top: Vec<_> = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, vec![std::ffi::OsString::from("documents")]);

    // The first snapshot still restores as it was.
    let old = setup.dir.path().join("old");
    let id = first["id"].as_str().unwrap();
    let run = setup.run(&[
        "restore",
        "files",
        "--snapshot",
        id,
        "--path",
        "documents/new-0.pdf",
        "--to",
        old.to_str().unwrap(),
    ]);
    run.expect_code(8);
    assert!(
        run.error_line().contains("nothing at documents/new-0.pdf"),
        "{run:#?}"
    );
    assert!(
        !old.exists(),
        "nothing created for a path the snapshot lacks"
    );
}

#[test]
fn a_non_empty_target_needs_overwrite_and_a_dry_run_writes_nothing() {
    let setup = FilesSetup::new("");
    make_tree(&setup.tree());
    setup.backup();
    let target = setup.dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep.txt"), b"operator's file").unwrap();
    let run = setup.run(&[
        "restore",
        "files",
        "--latest",
        "--to",
        target.to_str().unwrap(),
    ]);
    run.expect_code(9);
    assert!(run.error_line().contains("not empty"), "{run:#?}");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        1,
        "nothing written"
    );

    let dry = setup.dir.path().join("dry");
    let result = setup
        .run(&[
            "restore",
            "files",
            "--latest",
            "--dry-run",
            "--to",
            dry.to_str().unwrap(),
            "--json",
        ])
        .json();
    assert!(result["files"].as_u64().unwrap() >= 300, "{result}");
    assert!(!dry.exists(), "a dry run creates nothing");

    let run = setup.run(&[
        "restore",
        "files",
        "--latest",
        "--overwrite",
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        std::fs::read(target.join("odd/-rf")).unwrap(),
        b"leading dash"
    );
    assert_eq!(
        std::fs::read(target.join("keep.txt")).unwrap(),
        b"operator's file"
    );
}

#[test]
fn snapshots_are_browsed_without_restoring() {
    let setup = FilesSetup::new("");
    make_tree(&setup.tree());
    let first = setup.backup();
    let id = first["id"].as_str().unwrap();

    let listed = setup.run(&["files", "list", "--json"]).json();
    assert_eq!(listed[0]["id"], id);
    // No database configured: status still answers, with the source's newest snapshot.
    let status = setup.run(&["status", "--json"]).json();
    assert_eq!(
        status["file_snapshots"][0]["source"], "storage",
        "{status:#}"
    );
    assert_eq!(status["file_snapshots"][0]["id"], id);
    assert!(status["recovery_point"].is_null());

    let entries = setup.run(&["files", "ls", id, "odd/", "--json"]).json();
    let paths: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"odd/-rf"), "{paths:?}");
    assert!(paths.iter().all(|p| p.starts_with("odd")), "{paths:?}");
    let outside = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "odd/outside")
        .unwrap();
    assert_eq!(outside["type"], "symlink");
    assert_eq!(outside["target"], "/etc/hostname");

    let found = setup
        .run(&["files", "find", "invoice-001*.pdf", "--json"])
        .json();
    assert_eq!(found.as_array().unwrap().len(), 10, "{found}");
    assert!(
        found
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["snapshot"] == id)
    );
    let text = setup.run(&["files", "find", "documents/tenant-0/*.pdf"]);
    assert_eq!(text.code, 0);
    assert_eq!(
        text.stdout.matches("invoice-").count(),
        60,
        "{}",
        text.stdout
    );

    // A reader that goes away (`| head`) ends the listing quietly, as it does `ls`.
    let mut command = coffer_command();
    command
        .arg("--config")
        .arg(&setup.config)
        .args(["files", "ls", id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "{:?}: {stderr}",
        out.status
    );
}

/// Flips one byte in the middle of the largest pack file.
fn damage_largest_pack(repo: &Path) {
    let mut packs = Vec::new();
    let mut todo = vec![repo.join("packs")];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                todo.push(entry.path());
            } else {
                packs.push((entry.metadata().unwrap().len(), entry.path()));
            }
        }
    }
    let (len, path) = packs.into_iter().max().expect("a pack");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(len / 3) as usize] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_by_read_data_and_by_restore() {
    let setup = FilesSetup::new("");
    make_tree(&setup.tree());
    let id = setup.backup()["id"].as_str().unwrap().to_string();
    let clean = setup
        .run(&["backup", "verify", &id, "--read-data", "--json"])
        .json();
    assert_eq!(clean["ok"], true, "{clean}");
    assert!(clean["packs_read"].as_u64().unwrap() >= 1);

    damage_largest_pack(&setup.dir.path().join("repo"));
    // Without --read-data only presence and sizes are checked: a flipped byte passes.
    let quick = setup.run(&["backup", "verify", &id]);
    assert_eq!(quick.code, 0, "{quick:#?}");
    let deep = setup.run(&["backup", "verify", &id, "--read-data"]);
    deep.expect_code(6);
    assert!(deep.stdout.contains("FAILED"), "{deep:#?}");
    // A tenth of the packs: a pass or a finding, never a crash.
    let subset = setup.run(&["backup", "verify", &id, "--read-data-subset", "1/10"]);
    assert!(subset.code == 0 || subset.code == 6, "{subset:#?}");

    let target = setup.dir.path().join("restored");
    let run = setup.run(&[
        "restore",
        "files",
        "--latest",
        "--to",
        target.to_str().unwrap(),
    ]);
    run.expect_code(6);
    assert!(run.error_line().contains("chunk"), "{run:#?}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let setup = FilesSetup::new("");
    make_tree(&setup.tree());
    // No snapshot yet.
    let run = setup.run(&["restore", "files", "--latest", "--to", "/tmp/never"]);
    run.expect_code(8);
    // An unknown source.
    let run = setup.run(&["backup", "run", "files", "--source", "nope"]);
    run.expect_code(2);
    assert!(
        run.error_line().contains("storage"),
        "names the known sources: {run:#?}"
    );
    setup.backup();
    // A path filter that could escape.
    let run = setup.run(&[
        "restore",
        "files",
        "--latest",
        "--path",
        "../etc",
        "--to",
        "/tmp/never",
    ]);
    run.expect_code(2);
    // A database command without [source].
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(2);
    assert!(run.error_line().contains("[source]"), "{run:#?}");
}

/// A source under `[retention.files] keep_last = 1`, snapshotted twice (1 % changed between):
/// the setup and both snapshots' JSON.
fn two_snapshots_keeping_the_last() -> (FilesSetup, serde_json::Value, serde_json::Value) {
    let setup = FilesSetup::new("");
    std::fs::write(&setup.config, {
        let mut text = std::fs::read_to_string(&setup.config).unwrap();
        text.push_str("\n[retention.files]\nkeep_last = 1\n");
        text
    })
    .unwrap();
    make_tree(&setup.tree());
    let first = setup.backup();
    change_one_percent(&setup.tree());
    let second = setup.backup();
    (setup, first, second)
}

#[test]
fn prune_deletes_the_snapshots_retention_no_longer_keeps_and_the_newest_restores() {
    let (setup, first, second) = two_snapshots_keeping_the_last();

    let dry = setup.run(&["prune", "--dry-run", "--json"]).json();
    let planned: Vec<(&str, bool)> = dry["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["keep"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        planned,
        vec![
            (first["id"].as_str().unwrap(), false),
            (second["id"].as_str().unwrap(), true)
        ]
    );
    let pruned = setup.run(&["prune", "--json"]).json();
    // The first snapshot's own chunks (the 1 % changed since, its listing) are garbage now:
    // marked, not deleted before the grace period.
    let chunks = &pruned["chunks"];
    assert!(chunks["chunks_marked"].as_u64().unwrap() >= 1, "{pruned:#}");
    assert_eq!(chunks["chunks_deleted"], 0, "{pruned:#}");
    let listed = setup.run(&["files", "list", "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], second["id"]);
    let target = setup.dir.path().join("after-prune");
    let run = setup.run(&[
        "restore",
        "files",
        "--latest",
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_same_tree(&setup.tree(), &target);
}

#[test]
fn a_pinned_snapshot_is_kept_whatever_retention_says_until_unpinned() {
    let (setup, first, _) = two_snapshots_keeping_the_last();
    let first = first["id"].as_str().unwrap();

    let run = setup.run(&["backup", "pin", first, "--reason", "incident 42"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let dry = setup.run(&["prune", "--dry-run", "--json"]).json();
    let item = dry["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == first)
        .unwrap()
        .clone();
    assert_eq!(item["keep"], true, "{dry:#}");
    assert!(
        item["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "pinned: incident 42"),
        "{item:#}"
    );
    setup.run(&["prune", "--json"]).json();
    let listed = setup.run(&["files", "list", "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed:#}");

    // A snapshot id that does not exist is refused, and nothing is pinned.
    let other = if first.ends_with('0') { '1' } else { '0' };
    let missing = format!("{}{other}", &first[..first.len() - 1]);
    let run = setup.run(&["backup", "pin", &missing, "--reason", "x"]);
    assert_ne!(run.code, 0, "{run:#?}");

    let run = setup.run(&["backup", "unpin", first]);
    assert_eq!(run.code, 0, "{run:#?}");
    setup.run(&["prune", "--json"]).json();
    let listed = setup.run(&["files", "list", "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    assert_ne!(listed[0]["id"], first);
}

#[test]
fn an_encrypted_repository_skips_unchanged_files_and_restores_elsewhere_with_the_identity() {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let setup = FilesSetup::new(&format!(
        "encryption_recipient = \"{}\"\n",
        identity.to_public()
    ));
    make_tree(&setup.tree());
    setup.backup();
    change_one_percent(&setup.tree());
    let second = setup.backup();
    // The backup host holds only the recipient, yet reads only what changed: it kept its own
    // copy of the last listing.
    assert_eq!(second["snapshot"]["read_files"], 5, "{second}");

    // No plain content in the repository.
    let grep = Command::new("grep")
        .args(["-rlF", "leading dash"])
        .arg(setup.dir.path().join("repo"))
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "plain text stored: {}",
        String::from_utf8_lossy(&grep.stdout)
    );

    // Another host: a state folder of its own, no key, only the identity.
    let other = setup.dir.path().join("other-host.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&setup.config)
            .unwrap()
            .replace("state_dir = \"state\"", "state_dir = \"other-state\""),
    )
    .unwrap();
    let key_file = setup.dir.path().join("identity.txt");
    std::fs::write(
        &key_file,
        format!("{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let target = setup.dir.path().join("elsewhere");
    let restore = |extra: &[&str]| {
        let mut command = coffer_command();
        command
            .arg("--config")
            .arg(&other)
            .args([
                "restore",
                "files",
                "--latest",
                "--to",
                target.to_str().unwrap(),
            ])
            .args(extra);
        Run::from(command.output().unwrap())
    };
    let without = restore(&[]);
    without.expect_code(2);
    assert!(without.error_line().contains("identity"), "{without:#?}");
    let with = restore(&["--identity-file", key_file.to_str().unwrap()]);
    assert_eq!(with.code, 0, "{with:#?}");
    assert_same_tree(&setup.tree(), &target);
}

#[test]
fn the_daemon_snapshots_the_files_on_its_schedule() {
    let port = crate::util::free_port();
    let setup = FilesSetup::new("");
    make_tree(&setup.tree());
    std::fs::write(&setup.config, {
        let mut text = std::fs::read_to_string(&setup.config).unwrap();
        text.push_str(&format!(
            "\n[schedule]\nfiles = \"*/2 * * * * *\"\n\n[daemon]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_seconds = 5\n"
        ));
        text
    })
    .unwrap();
    let log = std::fs::File::create(setup.dir.path().join("daemon.log")).unwrap();
    let mut daemon = coffer_command()
        .arg("--config")
        .arg(&setup.config)
        .arg("daemon")
        .stderr(log)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let snapshots = loop {
        let listed = setup.run(&["files", "list", "--json"]);
        let count = if listed.code == 0 {
            listed.json().as_array().unwrap().len()
        } else {
            0
        };
        if count >= 2 || started.elapsed() > std::time::Duration::from_secs(40) {
            break count;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    crate::util::signal("-TERM", &daemon.id().to_string());
    let status = daemon.wait().unwrap();
    let log = std::fs::read_to_string(setup.dir.path().join("daemon.log")).unwrap();
    assert!(
        snapshots >= 2,
        "the daemon took {snapshots} snapshots: {log}"
    );
    assert!(status.success(), "{status:?}: {log}");
    let state = std::fs::read_to_string(setup.dir.path().join("repo/state/files.json")).unwrap();
    assert!(state.contains("file snapshots stored"), "{state}");
}

//! Snapshots of a real folder, restored into another, against a folder repository and an
//! s3s-fs server: the tree comes back byte for byte with its metadata, a second snapshot reads
//! and stores only what changed, and a crafted listing or a planted symlink cannot make a
//! restore write outside its target.

#[allow(dead_code)]
#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use coffer_core::error::ErrorKind;
use coffer_files::backup::{Filters, SnapshotOptions, take_snapshot};
use coffer_files::chunk_id::ChunkIdKey;
use coffer_files::entry::{Entry, EntryKind};
use coffer_files::index::ChunkIndex;
use coffer_files::restore::{RestoreOptions, list_entries, restore_snapshot};
use coffer_files::store::ChunkStore;
use coffer_files::tree::SnapshotSummary;
use support::{Backend, Repo, pseudo_random};

const KEY: [u8; 32] = [7; 32];
const SMALL_FILES: usize = 200;

/// The tree of the runbook: nested folders, empty files, a 20 MiB file, a hard link, a symlink
/// out of the tree, odd names, and 200 small files to change 1 % of.
fn make_tree(root: &Path) {
    let w = |rel: &str, bytes: &[u8]| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    for n in 0..SMALL_FILES {
        w(
            &format!("documents/tenant-{}/invoice-{n:04}.pdf", n % 7),
            &pseudo_random(1000 + n * 37, n as u64 + 1),
        );
    }
    w("documents/empty.txt", b"");
    w("avatars/deep/er/still/empty", b"");
    w("big/video.bin", &pseudo_random(20 * 1024 * 1024, 99));
    w("names/with space.txt", b"space");
    w("names/caf\u{e9} \u{1f600}.txt", b"utf-8");
    w("names/new\nline", b"newline");
    w("names/-rf", b"leading dash");
    std::fs::write(
        root.join(OsStr::from_bytes(b"names/latin1-\xe9.txt")),
        b"not utf-8",
    )
    .unwrap();
    std::fs::hard_link(
        root.join("names/-rf"),
        root.join("documents/hard-link-to-rf"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("names/outside")).unwrap();
    std::os::unix::fs::symlink("../big", root.join("documents/big-dir")).unwrap();
    std::fs::set_permissions(
        root.join("names/-rf"),
        std::fs::Permissions::from_mode(0o751),
    )
    .unwrap();
    std::fs::create_dir(root.join("empty-dir")).unwrap();
    std::fs::set_permissions(
        root.join("empty-dir"),
        std::fs::Permissions::from_mode(0o705),
    )
    .unwrap();
}

/// What a comparison looks at for one entry.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    mtime: (i64, i64),
    content: Vec<u8>,
    inode: u64,
}

/// Every entry under `root` (not the root itself), by path bytes.
fn scan(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for child in std::fs::read_dir(&dir).unwrap() {
            let path = child.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let kind = meta.file_type();
            let (kind, content) = if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ("symlink", target.as_os_str().as_bytes().to_vec())
            } else if kind.is_dir() {
                todo.push(path.clone());
                ("dir", Vec::new())
            } else {
                ("file", std::fs::read(&path).unwrap())
            };
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            out.insert(
                rel,
                Seen {
                    kind,
                    mode: if kind == "symlink" {
                        0
                    } else {
                        meta.mode() & 0o7777
                    },
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    content,
                    inode: meta.ino(),
                },
            );
        }
    }
    out
}

/// Compares two trees entry by entry (inodes aside, which differ between copies).
fn assert_same(source: &BTreeMap<Vec<u8>, Seen>, restored: &BTreeMap<Vec<u8>, Seen>) {
    let names = |m: &BTreeMap<Vec<u8>, Seen>| -> Vec<String> {
        m.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert_eq!(names(source), names(restored), "the same entries");
    for (path, a) in source {
        let b = &restored[path];
        let shown = String::from_utf8_lossy(path);
        assert_eq!(a.kind, b.kind, "{shown}");
        assert!(a.content == b.content, "{shown}: content differs");
        assert_eq!(a.mode, b.mode, "{shown}: mode");
        assert_eq!(a.mtime, b.mtime, "{shown}: mtime");
    }
}

fn store(repo: &Repo) -> ChunkStore<'_> {
    ChunkStore::new(
        repo.storage.as_ref(),
        ChunkIdKey::from_bytes(KEY),
        None,
        ChunkIndex::new(),
    )
}

async fn reopen(repo: &Repo) -> ChunkStore<'_> {
    ChunkStore::open(repo.storage.as_ref(), ChunkIdKey::from_bytes(KEY), None)
        .await
        .unwrap()
}

async fn snapshot(
    store: &mut ChunkStore<'_>,
    root: &Path,
    parent: Option<&SnapshotSummary>,
) -> SnapshotSummary {
    take_snapshot(
        store,
        root,
        &Filters::all(),
        parent,
        &SnapshotOptions::default(),
    )
    .await
    .unwrap()
}

async fn a_tree_restores_whole_and_by_folder_then_a_second_snapshot_reads_only_changes(
    backend: Backend,
) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("storage");
    make_tree(&source);
    let before = scan(&source);

    let mut first_store = store(&repo);
    let first = snapshot(&mut first_store, &source, None).await;
    assert_eq!(first.skipped, vec![], "nothing skipped");
    assert_eq!(first.files as usize, SMALL_FILES + 8);
    assert_eq!((first.symlinks, first.hardlinks), (2, 1));
    assert_eq!(first.read_files, first.files);
    assert_eq!(first.reused_files, 0);
    assert!(first.new_bytes >= 20 * 1024 * 1024, "{first:?}");
    assert_eq!(first.source_name, "storage");
    // The summary round-trips through JSON (it goes into the manifest).
    let json = serde_json::to_string(&first).unwrap();
    assert_eq!(
        serde_json::from_str::<SnapshotSummary>(&json).unwrap(),
        first
    );
    drop(first_store);

    // Restore everything, from a fresh store (the index comes from the index files).
    let reader = reopen(&repo).await;
    let whole = work.path().join("whole");
    let done = restore_snapshot(&reader, &first, None, &whole, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (done.files, done.symlinks, done.hardlinks),
        (first.files, 2, 1)
    );
    let restored = scan(&whole);
    assert_same(&before, &restored);
    assert_eq!(
        restored[&b"names/-rf"[..]].inode,
        restored[&b"documents/hard-link-to-rf"[..]].inode,
        "the hard link shares its inode"
    );
    assert_eq!(
        std::fs::read_link(whole.join("names/outside")).unwrap(),
        Path::new("/etc/passwd")
    );

    // One folder: only its subtree, under its own path.
    let part = work.path().join("part");
    restore_snapshot(
        &reader,
        &first,
        Some("documents/"),
        &part,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    let got = scan(&part);
    let want: BTreeMap<Vec<u8>, Seen> = scan(&source)
        .into_iter()
        .filter(|(p, _)| p.starts_with(b"documents"))
        .collect();
    assert_same(&want, &got);
    // Its hard link's first name (names/-rf) is not restored: it comes back as a file.
    assert_eq!(
        std::fs::read(part.join("documents/hard-link-to-rf")).unwrap(),
        b"leading dash"
    );

    // `ls` of one folder, streamed.
    let mut listed = Vec::new();
    let mut entries = list_entries(&reader, &first, Some("names")).unwrap();
    while let Some(e) = entries.next().await.unwrap() {
        listed.push(e.display());
    }
    assert_eq!(listed.len(), 7, "{listed:?}");
    assert_eq!(listed[0], "names");
    drop(reader);

    // Change 1 % of the small files (2 of 200, same length), add 3.
    for n in [10usize, 150] {
        let path = source.join(format!("documents/tenant-{}/invoice-{n:04}.pdf", n % 7));
        std::fs::write(&path, pseudo_random(1000 + n * 37, 7777 + n as u64)).unwrap();
    }
    for n in 0..3u64 {
        std::fs::write(
            source.join(format!("documents/new-{n}.pdf")),
            pseudo_random(5000, 600 + 2 * n),
        )
        .unwrap();
    }
    // And remove one, so the merge with the parent listing passes over a record.
    std::fs::remove_file(source.join("documents/tenant-3/invoice-0003.pdf")).unwrap();
    let mut second_store = reopen(&repo).await;
    let second = snapshot(&mut second_store, &source, Some(&first)).await;
    assert_eq!(second.files, first.files + 3 - 1);
    assert_eq!(
        second.read_files, 5,
        "only the changed and new files are read"
    );
    assert_eq!(second.reused_files, first.files - 3);
    let changed_bytes = (1000 + 10 * 37) + (1000 + 150 * 37) + 3 * 5000;
    assert_eq!(second.new_bytes, changed_bytes as u64, "{second:?}");
    // The listing changed in a few records: most of it is not stored again either.
    let stats = second_store.stats();
    assert!(
        stats.raw_bytes < 2 * 1024 * 1024,
        "the second snapshot stored {} bytes",
        stats.raw_bytes
    );
    drop(second_store);

    // A full scan reads everything again and stores nothing new.
    let mut third_store = reopen(&repo).await;
    let full = take_snapshot(
        &mut third_store,
        &source,
        &Filters::all(),
        Some(&second),
        &SnapshotOptions {
            full_scan: true,
            ..SnapshotOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((full.read_files, full.reused_files), (second.files, 0));
    assert_eq!(full.new_bytes, 0);
    assert_eq!(
        full.listing, second.listing,
        "the same tree, the same listing"
    );
    drop(third_store);

    let reader = reopen(&repo).await;
    let latest = work.path().join("latest");
    restore_snapshot(&reader, &second, None, &latest, &RestoreOptions::default())
        .await
        .unwrap();
    assert_same(&scan(&source), &scan(&latest));
}

async fn a_crafted_listing_with_a_parent_path_is_refused_and_writes_nothing_outside(
    backend: Backend,
) {
    let repo = Repo::new(backend);
    let mut store = store(&repo);
    let mut listing = Vec::new();
    for path in ["a", "a/../../x"] {
        let entry = Entry {
            path: path.as_bytes().to_vec(),
            kind: if path == "a" {
                EntryKind::Dir
            } else {
                EntryKind::File
            },
            size: 0,
            mode: 0o644,
            mtime_ns: 0,
            ctime_ns: 0,
            uid: 0,
            gid: 0,
            inode: 1,
            device: 1,
            target: None,
            link: None,
            chunks: Vec::new(),
            object: None,
        };
        // Written by hand: the writer itself would refuse nothing here, the reader must.
        listing.extend(entry.to_json_line());
    }
    let (id, _) = store.write(&listing).await.unwrap();
    store.flush().await.unwrap();
    let mut summary = SnapshotSummary::new("crafted", "/");
    summary.listing = vec![id];

    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t/target");
    let err = restore_snapshot(&store, &summary, None, &target, &RestoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("a/../../x"), "{err}");
    assert!(!work.path().join("x").exists() && !work.path().join("t/x").exists());
    // And a dry run refuses it too.
    let err = restore_snapshot(
        &store,
        &summary,
        None,
        &work.path().join("dry"),
        &RestoreOptions {
            dry_run: true,
            overwrite: false,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(
        !work.path().join("dry").exists(),
        "a dry run creates nothing"
    );
}

fn record(path: &str, kind: EntryKind) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        size: 0,
        mode: 0o644,
        mtime_ns: 0,
        ctime_ns: 0,
        uid: 0,
        gid: 0,
        inode: 1,
        device: 1,
        target: None,
        link: None,
        chunks: Vec::new(),
        object: None,
    }
}

async fn a_crafted_symlink_then_a_file_under_it_does_not_write_through_the_link(backend: Backend) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut store = store(&repo);
    let (content, _) = store.write(b"planted").await.unwrap();
    let mut link = record("a", EntryKind::Symlink);
    link.target = Some(outside.as_os_str().as_bytes().to_vec());
    let mut file = record("a/x", EntryKind::File);
    file.size = 7;
    file.chunks = vec![content];
    // A hard link naming the symlink's path is written as a file, not linked through it.
    let mut hard = record("b", EntryKind::Hardlink);
    hard.link = Some(b"a".to_vec());
    hard.size = 7;
    hard.chunks = vec![content];
    let mut listing = link.to_json_line();
    listing.extend(hard.to_json_line());
    let (id, _) = store.write(&listing).await.unwrap();
    let mut listing = link.to_json_line();
    listing.extend(file.to_json_line());
    let (id_file, _) = store.write(&listing).await.unwrap();
    store.flush().await.unwrap();

    let mut summary = SnapshotSummary::new("crafted", "/");
    summary.listing = vec![id];
    let target = work.path().join("t1");
    let done = restore_snapshot(&store, &summary, None, &target, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!((done.symlinks, done.hardlinks, done.files), (1, 0, 1));
    assert!(
        std::fs::symlink_metadata(target.join("b"))
            .unwrap()
            .is_file()
    );

    summary.listing = vec![id_file];
    let target = work.path().join("t2");
    let err = restore_snapshot(&store, &summary, None, &target, &RestoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    let overwrite = RestoreOptions {
        dry_run: false,
        overwrite: true,
    };
    restore_snapshot(&store, &summary, None, &target, &overwrite)
        .await
        .unwrap();
    assert_eq!(std::fs::read(target.join("a/x")).unwrap(), b"planted");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing outside"
    );
}

async fn an_encrypted_repository_restores_with_the_identity_and_a_dry_run_writes_nothing(
    backend: Backend,
) {
    let repo = Repo::new(backend);
    let identity = age::x25519::Identity::generate();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("src");
    std::fs::create_dir_all(source.join("d")).unwrap();
    std::fs::write(source.join("d/f"), pseudo_random(3 * 1024 * 1024, 3)).unwrap();
    let mut store = ChunkStore::new(
        repo.storage.as_ref(),
        ChunkIdKey::from_bytes(KEY),
        Some(identity.to_public()),
        ChunkIndex::new(),
    );
    let summary = snapshot(&mut store, &source, None).await;
    drop(store);

    // The listing itself is encrypted: without the identity nothing can be read.
    let without = reopen(&repo).await;
    let target = work.path().join("real");
    let err = restore_snapshot(
        &without,
        &summary,
        None,
        &target,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");

    let with = reopen(&repo).await.with_identity(identity);
    let dry_target = work.path().join("dry");
    let dry = restore_snapshot(
        &with,
        &summary,
        None,
        &dry_target,
        &RestoreOptions {
            dry_run: true,
            overwrite: false,
        },
    )
    .await
    .unwrap();
    assert_eq!((dry.files, dry.dirs, dry.bytes), (1, 1, 3 * 1024 * 1024));
    assert!(!dry_target.exists(), "a dry run writes nothing");
    restore_snapshot(&with, &summary, None, &target, &RestoreOptions::default())
        .await
        .unwrap();
    assert_same(&scan(&source), &scan(&target));
}

async fn a_planted_symlinked_folder_in_the_target_is_not_followed(backend: Backend) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("src");
    std::fs::create_dir_all(source.join("documents/inner")).unwrap();
    std::fs::write(source.join("documents/inner/secret.txt"), b"data").unwrap();
    std::fs::write(source.join("documents/top.txt"), b"top").unwrap();
    let mut store = store(&repo);
    let summary = snapshot(&mut store, &source, None).await;

    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    for filter in [None, Some("documents/inner")] {
        let target = work.path().join(format!("target-{}", filter.is_some()));
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("documents")).unwrap();
        // A target with something in it needs overwrite.
        let err = restore_snapshot(
            &store,
            &summary,
            filter,
            &target,
            &RestoreOptions::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
        let options = RestoreOptions {
            dry_run: false,
            overwrite: true,
        };
        restore_snapshot(&store, &summary, filter, &target, &options)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written through the symlink"
        );
        let documents = std::fs::symlink_metadata(target.join("documents")).unwrap();
        assert!(
            documents.is_dir(),
            "the symlink was replaced by a real folder"
        );
        assert_eq!(
            std::fs::read(target.join("documents/inner/secret.txt")).unwrap(),
            b"data"
        );
    }
}

async fn unreadable_entries_are_reported_not_fatal(backend: Backend) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("fine.txt"), b"fine").unwrap();
    let fifo = source.join("a-fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    // A file that grows all the time it is read: changed while read.
    let growing = source.join("growing.log");
    std::fs::write(&growing, pseudo_random(16 * 1024 * 1024, 5)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (stop, growing) = (stop.clone(), growing.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(growing)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                f.write_all(b"another log line\n").unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };

    let mut store = store(&repo);
    let summary = snapshot(&mut store, &source, None).await;
    let strict = take_snapshot(
        &mut store,
        &source,
        &Filters::all(),
        None,
        &SnapshotOptions {
            fail_on_unreadable: true,
            ..SnapshotOptions::default()
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    appender.join().unwrap();

    let reasons: BTreeMap<&str, &str> = summary
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(summary.skipped_count, 2, "{reasons:?}");
    assert!(reasons["a-fifo"].contains("FIFO"), "{reasons:?}");
    assert!(
        reasons["growing.log"].contains("changed while read"),
        "{reasons:?}"
    );
    assert_eq!(summary.files, 1);
    let err = strict.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backup, "{err}");

    // The snapshot restores what it has.
    let target = work.path().join("restored");
    restore_snapshot(&store, &summary, None, &target, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(target.join("fine.txt")).unwrap(), b"fine");
    assert!(!target.join("growing.log").exists());
}

async fn filters_leave_out_excluded_entries(backend: Backend) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("src");
    for rel in ["keep/a.pdf", "keep/b.tmp", "cache/x.pdf", "top.pdf"] {
        let path = source.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, rel).unwrap();
    }
    let mut store = store(&repo);
    let filters = Filters::new(&["**/*.pdf".into()], &["cache".into(), "**/*.tmp".into()]).unwrap();
    let summary = take_snapshot(
        &mut store,
        &source,
        &filters,
        None,
        &SnapshotOptions::default(),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut entries = list_entries(&store, &summary, None).unwrap();
    while let Some(e) = entries.next().await.unwrap() {
        seen.push(e.display());
    }
    assert_eq!(seen, vec!["keep", "keep/a.pdf", "top.pdf"]);
}

async fn thousands_of_unchanged_files_behind_a_changed_one_keep_their_order(backend: Backend) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("src");
    std::fs::create_dir_all(source.join("many")).unwrap();
    // More unchanged entries than the walk queues behind a file being read.
    for n in 0..5000 {
        std::fs::write(source.join(format!("many/{n:05}.txt")), format!("note {n}")).unwrap();
    }
    std::fs::write(source.join("a-changed.txt"), "first").unwrap();
    let mut store = store(&repo);
    let first = snapshot(&mut store, &source, None).await;
    std::fs::write(source.join("a-changed.txt"), "second, longer").unwrap();
    let second = snapshot(&mut store, &source, Some(&first)).await;
    assert_eq!(second.read_files, 1);
    assert_eq!(second.reused_files, 5000);
    let target = work.path().join("restored");
    restore_snapshot(&store, &second, None, &target, &RestoreOptions::default())
        .await
        .unwrap();
    assert_same(&scan(&source), &scan(&target));
}

on_both_backends!(
    thousands_of_unchanged_files_behind_a_changed_one_keep_their_order,
    a_tree_restores_whole_and_by_folder_then_a_second_snapshot_reads_only_changes,
    a_crafted_listing_with_a_parent_path_is_refused_and_writes_nothing_outside,
    a_planted_symlinked_folder_in_the_target_is_not_followed,
    a_crafted_symlink_then_a_file_under_it_does_not_write_through_the_link,
    an_encrypted_repository_restores_with_the_identity_and_a_dry_run_writes_nothing,
    unreadable_entries_are_reported_not_fatal,
    filters_leave_out_excluded_entries,
);

//! Snapshots of an S3 prefix, restored to another prefix and into a folder, against real S3
//! servers: moto (raw keys, ETags, folder markers, content types and metadata) and s3s-fs
//! (content types and metadata, but no ETags in listings: change detection by time). The
//! repository itself is a folder: what is tested here is the source and the target.

#[allow(dead_code, unused_macros)]
mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use coffer_core::error::ErrorKind;
use coffer_core::storage::{BodyStream, ObjectAttrs, S3Objects};
use coffer_files::backup::{Filters, SnapshotOptions};
use coffer_files::chunk_id::ChunkIdKey;
use coffer_files::restore::{RestoreOptions, list_entries, restore_snapshot};
use coffer_files::s3source::{restore_to_s3, take_s3_snapshot};
use coffer_files::store::ChunkStore;
use coffer_files::tree::SnapshotSummary;
use support::{Backend, Repo, Server, pseudo_random, s3_prefix};

const KEY: [u8; 32] = [9; 32];
const OBJECTS: usize = 1000;
const BIG: usize = 6 * 1024 * 1024 + 123;

fn body(bytes: Vec<u8>) -> BodyStream {
    Box::pin(tokio_stream_once(Bytes::from(bytes)))
}

fn tokio_stream_once(
    bytes: Bytes,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::iter([Ok(bytes)])
}

async fn put(objects: &S3Objects, key: &str, bytes: Vec<u8>, attrs: &ObjectAttrs) {
    objects.put(key, attrs, body(bytes)).await.unwrap();
}

/// The key, content and attributes of object `n` of the source.
fn object(n: usize) -> (String, Vec<u8>, ObjectAttrs) {
    let key = match n {
        0 => "empty".to_string(),
        1 => "tenants-big/video.bin".to_string(),
        2 => "t1/R\u{e9}sum\u{e9} 2026 \u{2603}.pdf".to_string(),
        3 => "with space/and more spaces.txt".to_string(),
        // `a-b` lists before `a/b` bytewise, after it in listing order.
        4 => "a-b".to_string(),
        5 => "a/b".to_string(),
        n => format!("t{}/docs/{:02}/doc-{n:04}.txt", n % 7, n % 13),
    };
    let bytes = match n {
        0 => Vec::new(),
        1 => pseudo_random(BIG, 1),
        n => pseudo_random(100 + n * 3, n as u64 + 10),
    };
    let mut attrs = ObjectAttrs::default();
    if !n.is_multiple_of(3) {
        attrs.content_type = Some(if n.is_multiple_of(2) {
            "application/pdf".into()
        } else {
            "text/plain; charset=utf-8".into()
        });
    }
    if n % 4 != 1 {
        attrs
            .metadata
            .insert("tenant".into(), format!("t{}", n % 7));
        attrs.metadata.insert("seq".into(), n.to_string());
    }
    (key, bytes, attrs)
}

/// Every object under `objects`: key → (bytes, content type, metadata).
async fn read_all(objects: &S3Objects) -> BTreeMap<String, (Vec<u8>, ObjectAttrs)> {
    use tokio::io::AsyncReadExt;
    let mut out = BTreeMap::new();
    for listed in objects.list().await.unwrap() {
        let (head, mut reader) = objects.get(&listed.key).await.unwrap();
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.unwrap();
        out.insert(listed.key, (bytes, head.attrs));
    }
    out
}

fn store(repo: &Repo) -> ChunkStore<'_> {
    ChunkStore::new(
        repo.storage.as_ref(),
        ChunkIdKey::from_bytes(KEY),
        None,
        coffer_files::index::ChunkIndex::new(),
    )
}

async fn reopen(repo: &Repo) -> ChunkStore<'_> {
    ChunkStore::open(repo.storage.as_ref(), ChunkIdKey::from_bytes(KEY), None)
        .await
        .unwrap()
}

async fn snapshot(
    store: &mut ChunkStore<'_>,
    source: &S3Objects,
    parent: Option<&SnapshotSummary>,
) -> SnapshotSummary {
    take_s3_snapshot(
        store,
        source,
        &Filters::all(),
        parent,
        &SnapshotOptions::default(),
    )
    .await
    .unwrap()
}

async fn a_prefix_of_1000_objects_restores_to_another_prefix_byte_exact_with_metadata(
    server: Server,
) {
    let bucket = format!("docs-{}", server_name(server));
    let source = S3Objects::new(s3_prefix(server, &bucket, "tenants"));
    for n in 0..OBJECTS {
        let (key, bytes, attrs) = object(n);
        put(&source, &key, bytes, &attrs).await;
    }
    // Next to the prefix, not under it: never part of the snapshot.
    let beside = S3Objects::new(s3_prefix(server, &bucket, "tenants-old"));
    put(&beside, "x", b"not mine".to_vec(), &ObjectAttrs::default()).await;
    let before = read_all(&source).await;
    assert_eq!(before.len(), OBJECTS);
    // The servers keep what the test needs to compare.
    let (_, attrs) = &before["t1/R\u{e9}sum\u{e9} 2026 \u{2603}.pdf"];
    assert_eq!(attrs.content_type.as_deref(), Some("application/pdf"));
    assert_eq!(attrs.metadata["tenant"], "t2");

    let repo = Repo::new(Backend::Folder);
    let mut first_store = store(&repo);
    let first = snapshot(&mut first_store, &source, None).await;
    assert_eq!(first.skipped, vec![], "nothing skipped");
    assert_eq!(first.files as usize, OBJECTS);
    assert_eq!(
        (first.read_files as usize, first.reused_files),
        (OBJECTS, 0)
    );
    let total: u64 = before.values().map(|(b, _)| b.len() as u64).sum();
    assert_eq!(first.bytes, total);
    assert!(first.new_bytes >= BIG as u64, "{first:?}");
    assert_eq!(first.source_name, "tenants");
    assert_eq!(first.source_root, format!("s3://{bucket}/tenants/"));
    // t0..t6, t*/docs, t*/docs/NN, tenants-big, a, with space.
    assert!(first.dirs > 7 + 7 + 13, "{}", first.dirs);
    drop(first_store);

    // Restore to another prefix: the same bytes, content types and metadata.
    let reader = reopen(&repo).await;
    let target = S3Objects::new(s3_prefix(server, &bucket, "restored/copy"));
    let dry = restore_to_s3(
        &reader,
        &first,
        None,
        &target,
        &RestoreOptions {
            dry_run: true,
            overwrite: false,
        },
    )
    .await
    .unwrap();
    assert_eq!((dry.files, dry.bytes), (first.files, first.bytes));
    assert!(target.is_empty().await.unwrap(), "a dry run writes nothing");
    let done = restore_to_s3(&reader, &first, None, &target, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!((done.files, done.bytes), (first.files, first.bytes));
    let after = read_all(&target).await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (key, (bytes, attrs)) in &before {
        let (got, got_attrs) = &after[key];
        assert!(bytes == got, "{key}: content differs");
        assert_eq!(attrs, got_attrs, "{key}: content type or metadata");
    }

    // A target that holds anything is refused, naming it, unless overwriting.
    let err = restore_to_s3(&reader, &first, None, &target, &RestoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("restored/copy/"), "{err}");
    let overwrite = RestoreOptions {
        dry_run: false,
        overwrite: true,
    };
    restore_to_s3(&reader, &first, Some("t1/"), &target, &overwrite)
        .await
        .unwrap();

    // Into a folder, one tenant only, through the folder restore.
    let work = tempfile::tempdir().unwrap();
    let folder = work.path().join("t3");
    restore_snapshot(
        &reader,
        &first,
        Some("t3/"),
        &folder,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    let mut restored = 0;
    for (key, (bytes, _)) in before.iter().filter(|(k, _)| k.starts_with("t3/")) {
        assert!(std::fs::read(folder.join(key)).unwrap() == *bytes, "{key}");
        restored += 1;
    }
    assert!(restored > 100, "{restored}");
    assert!(!folder.join("t1").exists());
    // `ls` sees the synthesized folders.
    let mut entries = list_entries(&reader, &first, Some("t3/docs")).unwrap();
    let first_entry = entries.next().await.unwrap().unwrap();
    assert_eq!(first_entry.display(), "t3/docs");
    drop(reader);

    // Change 10 objects and add 5: the next snapshot reads only those 15.
    // (moto and s3s-fs date objects to the second or millisecond; a change must be later.)
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut changed_bytes = 0u64;
    for n in (100..200).step_by(10) {
        let (key, bytes, attrs) = object(n);
        let new = pseudo_random(bytes.len() + 1, 5000 + 2 * n as u64);
        changed_bytes += new.len() as u64;
        put(&source, &key, new, &attrs).await;
    }
    for n in 0..5u64 {
        let new = pseudo_random(4000, 9000 + 2 * n);
        changed_bytes += new.len() as u64;
        put(
            &source,
            &format!("new/n-{n}.bin"),
            new,
            &ObjectAttrs::default(),
        )
        .await;
    }
    let mut second_store = reopen(&repo).await;
    let second = snapshot(&mut second_store, &source, Some(&first)).await;
    assert_eq!(second.files as usize, OBJECTS + 5);
    assert_eq!(second.read_files, 15, "only the changed and new objects");
    assert_eq!(second.reused_files as usize, OBJECTS - 10);
    assert_eq!(second.new_bytes, changed_bytes);
    assert!(
        second_store.stats().raw_bytes < changed_bytes + 2 * 1024 * 1024,
        "the listing is mostly shared: {:?}",
        second_store.stats()
    );
    drop(second_store);

    // The second snapshot restores to the changed source, metadata of reused objects included.
    let reader = reopen(&repo).await;
    let latest = S3Objects::new(s3_prefix(server, &bucket, "latest"));
    restore_to_s3(&reader, &second, None, &latest, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(read_all(&latest).await, read_all(&source).await);
}

fn server_name(server: Server) -> &'static str {
    match server {
        Server::S3sFs => "s3s",
        Server::Moto => "moto",
    }
}

/// moto keeps raw keys and folder markers (s3s-fs stores keys as paths, so it has neither).
#[tokio::test]
async fn keys_that_are_not_paths_are_skipped_and_reported_and_markers_come_back() {
    let server = Server::Moto;
    let source = S3Objects::new(s3_prefix(server, "odd-keys", "src"));
    let plain = ObjectAttrs::default();
    put(&source, "ok.txt", b"ok".to_vec(), &plain).await;
    put(&source, "a/../b", b"parent".to_vec(), &plain).await;
    put(&source, "a//b", b"empty component".to_vec(), &plain).await;
    let mut marker = ObjectAttrs::default();
    marker.metadata.insert("kind".into(), "folder".into());
    put(&source, "docs/", Vec::new(), &marker).await;
    put(&source, "docs/inner.txt", b"inner".to_vec(), &plain).await;
    put(&source, "only-marker/", Vec::new(), &plain).await;

    let repo = Repo::new(Backend::Folder);
    let mut store = store(&repo);
    let summary = snapshot(&mut store, &source, None).await;
    assert_eq!(summary.skipped_count, 2, "{:?}", summary.skipped);
    let skipped: Vec<&str> = summary.skipped.iter().map(|s| s.path.as_str()).collect();
    assert!(
        skipped.contains(&"a/../b") && skipped.contains(&"a//b"),
        "{skipped:?}"
    );
    assert!(
        summary.skipped[0].reason.contains("not a valid path"),
        "{:?}",
        summary.skipped
    );
    assert_eq!((summary.files, summary.dirs), (2, 2));

    // Unchanged, the next snapshot reads nothing; with a full scan, everything.
    let again = snapshot(&mut store, &source, Some(&summary)).await;
    assert_eq!((again.read_files, again.reused_files), (0, 2));
    assert_eq!(
        again.listing, summary.listing,
        "the same objects, the same listing"
    );
    let full = take_s3_snapshot(
        &mut store,
        &source,
        &Filters::all(),
        Some(&summary),
        &SnapshotOptions {
            full_scan: true,
            ..SnapshotOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (full.read_files, full.reused_files, full.new_bytes),
        (2, 0, 0)
    );

    // The strict mode fails on them instead.
    let err = take_s3_snapshot(
        &mut store,
        &source,
        &Filters::all(),
        None,
        &SnapshotOptions {
            fail_on_unreadable: true,
            ..SnapshotOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backup, "{err}");

    let target = S3Objects::new(s3_prefix(server, "odd-keys", "dst"));
    let done = restore_to_s3(&store, &summary, None, &target, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!((done.files, done.dirs), (2, 2));
    let keys: Vec<String> = target
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["docs/", "docs/inner.txt", "ok.txt", "only-marker/"]);
    assert_eq!(
        target.head("docs/").await.unwrap().attrs.metadata["kind"],
        "folder"
    );

    // A folder restore makes the markers folders.
    let work = tempfile::tempdir().unwrap();
    restore_snapshot(
        &store,
        &summary,
        None,
        work.path(),
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert!(work.path().join("only-marker").is_dir());
    assert_eq!(
        std::fs::read(work.path().join("docs/inner.txt")).unwrap(),
        b"inner"
    );
}

mod moto {
    #[tokio::test]
    async fn a_prefix_of_1000_objects_restores_to_another_prefix_byte_exact_with_metadata() {
        super::a_prefix_of_1000_objects_restores_to_another_prefix_byte_exact_with_metadata(
            super::Server::Moto,
        )
        .await
    }
}

mod s3s_fs {
    #[tokio::test]
    async fn a_prefix_of_1000_objects_restores_to_another_prefix_byte_exact_with_metadata() {
        super::a_prefix_of_1000_objects_restores_to_another_prefix_byte_exact_with_metadata(
            super::Server::S3sFs,
        )
        .await
    }
}

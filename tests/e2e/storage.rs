//! The storage backends' newer operations (range reads, heads, listings with last-modified,
//! batched deletes, the abort of a cancelled multipart upload) against a folder and s3s-fs.

use std::time::{Duration, Instant};

use coffer_core::error::ErrorKind;
use coffer_core::storage::{LocalStorage, S3Storage, Storage, body_from_reader};
use tokio::io::AsyncReadExt;

use crate::util;

async fn read_range(storage: &dyn Storage, key: &str, start: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    storage
        .get_range(key, start, len)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

async fn exercise(storage: &dyn Storage) {
    let begun = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
    storage
        .put("data/s/a", b"0123456789".to_vec().into())
        .await
        .unwrap();
    storage.put("data/s/b", b"b".to_vec().into()).await.unwrap();
    storage
        .put("data/t/c", b"kept".to_vec().into())
        .await
        .unwrap();

    assert_eq!(read_range(storage, "data/s/a", 2, 5).await, b"23456");
    assert_eq!(read_range(storage, "data/s/a", 9, 1).await, b"9");
    assert_eq!(read_range(storage, "data/s/a", 10, 0).await, b"");
    for (start, len) in [(8, 3), (10, 1), (11, 0)] {
        let past = storage
            .get_range("data/s/a", start, len)
            .await
            .err()
            .unwrap();
        assert_eq!(past.kind(), ErrorKind::Integrity, "{start}+{len}: {past}");
    }
    let missing = storage.get_range("data/s/none", 0, 1).await.err().unwrap();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");

    let head = storage.head("data/s/a").await.unwrap();
    assert_eq!((head.key.as_str(), head.size), ("data/s/a", 10));
    let modified = head.last_modified.expect("a last-modified time");
    assert!(
        modified >= begun
            && modified <= jiff::Timestamp::now() + jiff::SignedDuration::from_secs(5),
        "{modified}"
    );
    let missing = storage.head("data/s/none").await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");

    let listed = storage.list("data/s/").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.key.as_str(), m.size))
            .collect::<Vec<_>>(),
        [("data/s/a", 10), ("data/s/b", 1)]
    );
    assert!(
        listed
            .iter()
            .all(|m| m.last_modified.is_some_and(|t| t >= begun))
    );

    storage
        .delete_many(&[
            "data/s/a".to_string(),
            "data/s/missing".to_string(),
            "data/s/b".to_string(),
        ])
        .await
        .unwrap();
    let left: Vec<_> = storage
        .list("data/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(left, ["data/t/c"]);
    storage.delete_many(&[]).await.unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn folder_ranges_heads_listings_and_batched_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path().join("repo"));
    runtime().block_on(exercise(&storage));
    assert!(
        !dir.path().join("repo/data/s").exists(),
        "no empty folder left behind"
    );
}

#[test]
fn s3_ranges_heads_listings_and_batched_deletes() {
    let server = util::s3s();
    let bucket = server.new_bucket("storage-ops");
    let storage = S3Storage::new(server.s3_config(&bucket, "repo"));
    runtime().block_on(async {
        exercise(&storage).await;
        // A multipart upload (two parts at 5 MiB) completes, and a range spans its parts.
        let size = 6 * 1024 * 1024 + 3;
        let body = body_from_reader(tokio::io::repeat(b'm').take(size));
        assert_eq!(storage.put_stream("data/m/big", body).await.unwrap(), size);
        assert_eq!(storage.head("data/m/big").await.unwrap().size, size);
        let across = read_range(&storage, "data/m/big", 5 * 1024 * 1024 - 2, 4).await;
        assert_eq!(across, b"mmmm");
        storage
            .delete_many(&["data/m/big".to_string()])
            .await
            .unwrap();
    });
}

/// s3s-fs keeps `.upload-ID.json` in its data folder while a multipart upload is open.
fn open_uploads(data: &std::path::Path) -> usize {
    std::fs::read_dir(data)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with(".upload-") && name.ends_with(".json")
        })
        .count()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn s3_upload_dropped_mid_way_aborts_its_multipart_upload() {
    // A private server: the shared one's data folder sees other tests' uploads.
    let server = util::start_s3s(true);
    let data = server.data_dir.clone().unwrap();
    let bucket = server.new_bucket("cancelled");
    let storage = S3Storage::new(server.s3_config(&bucket, "repo"));
    let runtime = runtime();
    // More than one 5 MiB part, then a producer that never finishes.
    let (_silent_writer, silent) = tokio::io::duplex(64);
    let body = body_from_reader(tokio::io::repeat(b'x').take(6 * 1024 * 1024).chain(silent));
    let upload = runtime.spawn(async move { storage.put_stream("data/big", body).await });
    wait_until("the multipart upload starts", || open_uploads(&data) == 1);
    upload.abort();
    wait_until("the multipart upload is aborted", || {
        open_uploads(&data) == 0
    });
    assert!(runtime.block_on(upload).unwrap_err().is_cancelled());
    assert!(!data.join(&bucket).join("repo/data/big").exists());
}

/// Starts an upload that never ends and abandons it as a killed writer would: the future is
/// forgotten, so nothing aborts it. Returns once `storage` shows it begun.
async fn abandon_an_upload(storage: &(dyn Storage + Sync), key: &str) {
    let (writer, silent) = tokio::io::duplex(64);
    let body = body_from_reader(tokio::io::repeat(b'x').take(6 * 1024 * 1024).chain(silent));
    let mut upload = Box::pin(storage.put_stream(key, body));
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Drive the upload a little, then look for it.
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut upload).await;
        if !storage.abandoned_uploads(later).await.unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never began");
    }
    std::mem::forget(upload);
    std::mem::forget(writer);
}

/// Abandoned uploads are found only once older than the cut-off, aborted, and gone after.
async fn sweep(storage: &(dyn Storage + Sync), key: &str) {
    abandon_an_upload(storage, key).await;
    let earlier = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    assert!(
        storage.abandoned_uploads(earlier).await.unwrap().is_empty(),
        "an upload begun just now is work in flight, not abandoned"
    );
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let found = storage.abandoned_uploads(later).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].key.starts_with("data/abandoned/"), "{found:?}");
    assert!(found[0].started.is_some());
    storage.abort_upload(&found[0]).await.unwrap();
    storage.abort_upload(&found[0]).await.unwrap(); // gone already: not an error
    assert!(storage.abandoned_uploads(later).await.unwrap().is_empty());
    assert!(storage.list("data/abandoned/").await.unwrap().is_empty());
}

#[test]
fn uploads_a_killed_writer_left_are_found_and_aborted_on_garage_and_a_folder() {
    let runtime = runtime();
    let garage = util::garage();
    let bucket = garage.new_bucket("abandoned");
    let s3 = S3Storage::new(garage.s3_config(&bucket, "abandoned-uploads-test"));
    runtime.block_on(sweep(&s3, "data/abandoned/dump.sql.zst"));
    let dir = tempfile::tempdir().unwrap();
    let folder = LocalStorage::new(dir.path().join("repo"));
    runtime.block_on(sweep(&folder, "data/abandoned/dump.sql.zst"));
    // Nothing but partial files is ever removed by an abort in a folder.
    let forged = coffer_core::storage::AbandonedUpload {
        key: "manifests/x.json".into(),
        upload_id: "x".into(),
        started: None,
    };
    assert!(runtime.block_on(folder.abort_upload(&forged)).is_err());
}

#[test]
fn a_server_that_cannot_list_uploads_reports_none() {
    let runtime = runtime();
    let server = util::s3s();
    let bucket = server.new_bucket("no-upload-listing");
    let s3 = S3Storage::new(server.s3_config(&bucket, "repo"));
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    assert!(
        runtime
            .block_on(s3.abandoned_uploads(later))
            .unwrap()
            .is_empty()
    );
}

//! Pruning chunks against a folder repository and an s3s-fs server: a dropped snapshot's chunks
//! are marked first and deleted only after the grace period, a mostly-garbage pack is repacked,
//! a chunk referenced again before the sweep is kept, a prune running during a backup does not
//! break it, a dry run changes nothing, an unreadable kept listing stops the prune, and an
//! encrypted repository is repacked with its identity.

#[allow(dead_code)]
#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use coffer_core::error::ErrorKind;
use coffer_files::backup::{Filters, SnapshotOptions, take_snapshot};
use coffer_files::chunk_id::ChunkIdKey;
use coffer_files::gc::{MARKS, PruneOptions, PruneReport, prune_chunks, referenced_chunks};
use coffer_files::index::ChunkIndex;
use coffer_files::pack::{PackReader, PackWriter};
use coffer_files::restore::{RestoreOptions, restore_snapshot};
use coffer_files::store::ChunkStore;
use coffer_files::tree::SnapshotSummary;
use coffer_files::verify::{ReadData, verify_snapshot};
use jiff::{SignedDuration, Timestamp};
use support::{Backend, Repo, pseudo_random};

const KEY: [u8; 32] = [3; 32];
const PACK: usize = 1024 * 1024;

/// `files` files of 300 to 700 KiB (one chunk each) under `root`, seeded from `seed`.
fn make_tree(root: &Path, files: usize, seed: u64) {
    std::fs::create_dir_all(root.join("data")).unwrap();
    for n in 0..files {
        let len = 300 * 1024 + (n * 53 * 1024) % (400 * 1024);
        std::fs::write(
            root.join(format!("data/{n:03}.bin")),
            pseudo_random(len, seed + n as u64),
        )
        .unwrap();
    }
}

/// Every file under `root` and its bytes.
fn contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

async fn open(repo: &Repo) -> ChunkStore<'_> {
    let storage = repo.storage.as_ref();
    ChunkStore::open(storage, ChunkIdKey::from_bytes(KEY), None)
        .await
        .unwrap()
        .with_pack_writer(PackWriter::new(storage).with_target_size(PACK))
}

async fn snapshot(store: &mut ChunkStore<'_>, root: &Path) -> SnapshotSummary {
    take_snapshot(
        store,
        root,
        &Filters::all(),
        None,
        &SnapshotOptions::default(),
    )
    .await
    .unwrap()
}

fn options() -> PruneOptions {
    PruneOptions {
        pack_target_size: PACK,
        ..PruneOptions::default()
    }
}

async fn prune(repo: &Repo, kept: &[SnapshotSummary], now: Timestamp) -> PruneReport {
    prune_with(repo, kept, now, &options()).await
}

async fn prune_with(
    repo: &Repo,
    kept: &[SnapshotSummary],
    now: Timestamp,
    options: &PruneOptions,
) -> PruneReport {
    let store = open(repo).await;
    prune_chunks(&store, kept, now, options).await.unwrap()
}

fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

/// Every object key and size of the repository.
async fn objects(repo: &Repo) -> Vec<(String, u64)> {
    let mut all = Vec::new();
    for prefix in ["packs/", "index/", "gc/", "keys/"] {
        for o in repo.storage.list(prefix).await.unwrap() {
            all.push((o.key, o.size));
        }
    }
    all
}

/// The snapshot restores byte-exact to `source` and verifies clean reading all its data, with a
/// store opened afresh.
async fn assert_intact(repo: &Repo, summary: &SnapshotSummary, source: &Path) {
    let store = open(repo).await;
    let report = verify_snapshot(&store, summary, ReadData::All)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let target = tempfile::tempdir().unwrap();
    let out = target.path().join("restored");
    restore_snapshot(&store, summary, None, &out, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(contents(&out), contents(source), "restored byte-exact");
}

/// Two snapshots of different trees, each in its own packs: the first to drop, the second kept.
async fn two_snapshots(
    repo: &Repo,
    work: &Path,
    files: usize,
) -> (SnapshotSummary, SnapshotSummary) {
    make_tree(&work.join("a"), files, 1000);
    make_tree(&work.join("b"), 6, 2000);
    let dropped = snapshot(&mut open(repo).await, &work.join("a")).await;
    let kept = snapshot(&mut open(repo).await, &work.join("b")).await;
    (dropped, kept)
}

async fn a_dropped_snapshot_is_marked_first_and_swept_only_after_the_grace_period(
    backend: Backend,
) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let (_dropped, kept) = two_snapshots(&repo, work.path(), 12).await;
    let packs_before = repo.storage.list("packs/").await.unwrap();
    let t0 = Timestamp::now();

    let first = prune(&repo, std::slice::from_ref(&kept), t0).await;
    assert!(first.chunks_marked >= 12, "{first:?}");
    assert_eq!(
        (first.packs_deleted, first.chunks_deleted),
        (0, 0),
        "{first:?}"
    );
    assert_eq!(first.marks_written, 1);
    assert_eq!(repo.storage.list("packs/").await.unwrap(), packs_before);

    let early = prune(&repo, std::slice::from_ref(&kept), t0 + hours(23)).await;
    assert_eq!(
        (early.packs_deleted, early.chunks_deleted),
        (0, 0),
        "{early:?}"
    );
    assert_eq!(
        (early.chunks_marked, early.marks_written),
        (0, 0),
        "marked once"
    );
    assert_eq!(repo.storage.list("packs/").await.unwrap(), packs_before);

    let sweep = prune(&repo, std::slice::from_ref(&kept), t0 + hours(25)).await;
    assert!(sweep.packs_deleted >= 3, "{sweep:?}");
    assert_eq!(sweep.chunks_deleted, first.chunks_marked);
    assert_eq!(sweep.packs_repacked, 0);
    assert!(sweep.bytes_freed > 12 * 300 * 1024, "{sweep:?}");
    assert!(repo.storage.list(MARKS).await.unwrap().is_empty());

    // What is left is exactly what the kept snapshot references.
    let store = open(&repo).await;
    let referenced = referenced_chunks(&store, std::slice::from_ref(&kept))
        .await
        .unwrap();
    let index = ChunkIndex::load(repo.storage.as_ref()).await.unwrap();
    assert_eq!(index.len(), referenced.len());
    assert!(referenced.iter().all(|c| index.contains(c)));
    let (rebuilt, damaged) = coffer_files::index::rebuild(repo.storage.as_ref())
        .await
        .unwrap();
    assert!(damaged.is_empty());
    assert_eq!(rebuilt, index, "no pack left that the index does not name");
    assert_intact(&repo, &kept, &work.path().join("b")).await;

    let again = prune(&repo, std::slice::from_ref(&kept), t0 + hours(50)).await;
    assert_eq!(
        (
            again.garbage_blobs,
            again.packs_deleted,
            again.marks_written
        ),
        (0, 0, 0)
    );
}

async fn a_mostly_garbage_pack_is_repacked_and_the_kept_snapshot_still_restores(backend: Backend) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("src");
    make_tree(&root, 10, 3000);
    // One big pack for all ten files.
    let storage = repo.storage.as_ref();
    let mut store = ChunkStore::open(storage, ChunkIdKey::from_bytes(KEY), None)
        .await
        .unwrap();
    let first = snapshot(&mut store, &root).await;
    let big = PackReader::new(storage).list().await.unwrap();
    assert_eq!(big.len(), 1);
    // Eight files deleted: the second snapshot keeps two of the pack's eleven blobs.
    for n in 2..10 {
        std::fs::remove_file(root.join(format!("data/{n:03}.bin"))).unwrap();
    }
    let second = snapshot(&mut store, &root).await;
    drop(store);
    drop(first);

    let t0 = Timestamp::now();
    let mark = prune(&repo, std::slice::from_ref(&second), t0).await;
    assert_eq!(mark.chunks_marked, 9, "eight files and the first listing");
    let sweep = prune(&repo, std::slice::from_ref(&second), t0 + hours(25)).await;
    assert_eq!(
        (sweep.packs_repacked, sweep.packs_deleted),
        (1, 0),
        "{sweep:?}"
    );
    assert_eq!(
        (sweep.packs_written, sweep.chunks_deleted),
        (1, 9),
        "{sweep:?}"
    );
    assert!(sweep.bytes_rewritten > 600 * 1024, "{sweep:?}");
    assert!(sweep.bytes_freed > 8 * 300 * 1024, "{sweep:?}");
    assert_eq!(sweep.index_files_deleted, 1, "the big pack's index file");
    let packs = PackReader::new(storage).list().await.unwrap();
    assert!(
        !packs.iter().any(|(p, _)| *p == big[0].0),
        "the old pack is gone"
    );
    assert_intact(&repo, &second, &root).await;
}

async fn a_chunk_referenced_again_between_mark_and_sweep_is_kept(backend: Backend) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let (dropped, kept) = two_snapshots(&repo, work.path(), 8).await;
    // A backup that loaded the index before the mark: it deduplicates against every chunk.
    let storage = repo.storage.as_ref();
    let index = ChunkIndex::load(storage).await.unwrap();
    let mut early = ChunkStore::new(storage, ChunkIdKey::from_bytes(KEY), None, index);

    let t0 = Timestamp::now();
    let mark = prune(&repo, std::slice::from_ref(&kept), t0).await;
    assert!(mark.chunks_marked >= 8);
    // It finishes after the mark, within the grace period, reusing the marked chunks.
    let reused = snapshot(&mut early, &work.path().join("a")).await;
    assert_eq!(reused.new_bytes, 0, "every content chunk deduplicated");
    let both = [kept.clone(), reused.clone()];
    let sweep = prune(&repo, &both, t0 + hours(25)).await;
    assert_eq!(sweep.packs_deleted, 0, "{sweep:?}");
    assert_eq!(sweep.packs_repacked, 0, "{sweep:?}");
    assert_intact(&repo, &reused, &work.path().join("a")).await;
    assert_intact(&repo, &kept, &work.path().join("b")).await;
    // The same tree again: even the listing is the dropped one's. Nothing is garbage, and the
    // marks no longer name what is referenced again.
    assert_eq!(reused.listing, dropped.listing);
    assert_eq!(
        (sweep.garbage_blobs, sweep.chunks_marked),
        (0, 0),
        "{sweep:?}"
    );
    assert!(repo.storage.list(MARKS).await.unwrap().is_empty());
}

async fn a_prune_running_during_a_backup_does_not_break_it(backend: Backend) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let (_dropped, kept) = two_snapshots(&repo, work.path(), 40).await;
    let source = work.path().join("a");
    let only_b = std::slice::from_ref(&kept);

    // A grace period shorter than a backup is refused.
    let store = open(&repo).await;
    for grace in [Duration::ZERO, Duration::from_secs(60)] {
        let zero = PruneOptions { grace, ..options() };
        let err = prune_chunks(&store, only_b, Timestamp::now(), &zero)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    drop(store);

    // The worst case in order: a backup of the dropped tree opens the repository after the mark,
    // the sweep deletes the marked packs, then the backup runs. It stored its own copies.
    let t0 = Timestamp::now();
    prune(&repo, only_b, t0).await;
    let mut backup = open(&repo).await;
    let sweep = prune(&repo, only_b, t0 + hours(25)).await;
    assert!(sweep.packs_deleted >= 10, "{sweep:?}");
    let between = snapshot(&mut backup, &source).await;
    drop(backup);
    assert!(
        between.new_bytes > 40 * 300 * 1024,
        "no marked chunk reused"
    );
    assert_intact(&repo, &between, &source).await;

    // And truly at the same time: that snapshot dropped, marked, then a backup of the same tree
    // and the sweep run concurrently, each with its own store.
    let t1 = Timestamp::now();
    let mark = prune(&repo, only_b, t1).await;
    assert!(mark.chunks_marked >= 40, "{mark:?}");
    let mut backup = open(&repo).await;
    let sweeper = open(&repo).await;
    let (filters, snapshot_options, prune_options) =
        (Filters::all(), SnapshotOptions::default(), options());
    let (during, sweep) = tokio::join!(
        take_snapshot(&mut backup, &source, &filters, None, &snapshot_options),
        prune_chunks(&sweeper, only_b, t1 + hours(25), &prune_options),
    );
    let (during, sweep) = (during.unwrap(), sweep.unwrap());
    drop((backup, sweeper));
    assert!(sweep.packs_deleted >= 10, "{sweep:?}");
    assert_intact(&repo, &during, &source).await;
    assert_intact(&repo, &kept, &work.path().join("b")).await;

    // After the grace period the next prune sees both kept snapshots and deletes nothing of them.
    let both = [kept.clone(), during.clone()];
    prune(&repo, &both, t1 + hours(26)).await;
    prune(&repo, &both, t1 + hours(60)).await;
    assert_intact(&repo, &during, &source).await;
}

async fn a_backup_that_ignores_the_marks_would_lose_chunks(backend: Backend) {
    // Why the store does not deduplicate against marked chunks: one that does (its index
    // loaded by hand, marks not) and runs during the sweep names chunks that are gone.
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let (_dropped, kept) = two_snapshots(&repo, work.path(), 6).await;
    let t0 = Timestamp::now();
    prune(&repo, std::slice::from_ref(&kept), t0).await;
    let storage = repo.storage.as_ref();
    let index = ChunkIndex::load(storage).await.unwrap();
    let mut careless = ChunkStore::new(storage, ChunkIdKey::from_bytes(KEY), None, index);
    prune(&repo, std::slice::from_ref(&kept), t0 + hours(25)).await;
    let broken = snapshot(&mut careless, &work.path().join("a")).await;
    let store = open(&repo).await;
    let report = verify_snapshot(&store, &broken, ReadData::None)
        .await
        .unwrap();
    // Its listing is the dropped one's, deleted: unreadable.
    assert!(!report.is_clean(), "{report:?}");
}

async fn a_dry_run_changes_nothing(backend: Backend) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let (_dropped, kept) = two_snapshots(&repo, work.path(), 8).await;
    let dry = PruneOptions {
        dry_run: true,
        ..options()
    };
    let only_b = std::slice::from_ref(&kept);
    let before = objects(&repo).await;
    let t0 = Timestamp::now();
    let report = prune_with(&repo, only_b, t0, &dry).await;
    assert!(report.dry_run && report.chunks_marked >= 8, "{report:?}");
    assert_eq!(objects(&repo).await, before);

    prune(&repo, only_b, t0).await;
    let marked = objects(&repo).await;
    let report = prune_with(&repo, only_b, t0 + hours(25), &dry).await;
    assert!(
        report.packs_deleted >= 3 && report.bytes_freed > 0,
        "{report:?}"
    );
    assert_eq!(objects(&repo).await, marked);
    let real = prune(&repo, only_b, t0 + hours(25)).await;
    assert_eq!(
        (real.packs_deleted, real.packs_repacked, real.chunks_deleted),
        (
            report.packs_deleted,
            report.packs_repacked,
            report.chunks_deleted
        )
    );
}

async fn an_unreadable_kept_listing_stops_the_prune_before_anything_changes(backend: Backend) {
    let repo = Repo::new(backend);
    let work = tempfile::tempdir().unwrap();
    let (_dropped, kept) = two_snapshots(&repo, work.path(), 4).await;
    let t0 = Timestamp::now();
    prune(&repo, std::slice::from_ref(&kept), t0).await;
    let before = objects(&repo).await;
    let mut lost = kept.clone();
    lost.listing
        .push(coffer_files::chunk_id::ChunkId([0xee; 32]));
    let store = open(&repo).await;
    let err = prune_chunks(&store, &[lost], t0 + hours(25), &options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("nothing was pruned"), "{err}");
    assert_eq!(objects(&repo).await, before);
}

async fn an_encrypted_repository_is_repacked_with_the_identity(backend: Backend) {
    let repo = Repo::new(backend);
    let identity = age::x25519::Identity::generate();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("src");
    make_tree(&root, 6, 4000);
    let storage = repo.storage.as_ref();
    let key = || ChunkIdKey::from_bytes(KEY);
    let mut store = ChunkStore::open(storage, key(), Some(identity.to_public()))
        .await
        .unwrap();
    let first = snapshot(&mut store, &root).await;
    for n in 1..6 {
        std::fs::remove_file(root.join(format!("data/{n:03}.bin"))).unwrap();
    }
    let second = snapshot(&mut store, &root).await;
    drop((store, first));
    let reader = || async {
        ChunkStore::open(storage, key(), None)
            .await
            .unwrap()
            .with_identity(identity.clone())
    };
    let kept = std::slice::from_ref(&second);

    // Without the identity a listing cannot be read: nothing is pruned.
    let blind = ChunkStore::open(storage, key(), None).await.unwrap();
    let t0 = Timestamp::now();
    assert!(prune_chunks(&blind, kept, t0, &options()).await.is_err());

    let t0 = Timestamp::now();
    prune_chunks(&reader().await, kept, t0, &options())
        .await
        .unwrap();
    let sweep = prune_chunks(&reader().await, kept, t0 + hours(25), &options())
        .await
        .unwrap();
    assert_eq!(
        (sweep.packs_repacked, sweep.packs_written),
        (1, 1),
        "{sweep:?}"
    );
    let store = reader().await;
    let report = verify_snapshot(&store, &second, ReadData::All)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let out = work.path().join("restored");
    restore_snapshot(&store, &second, None, &out, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(contents(&out), contents(&root));
}

on_both_backends!(
    an_encrypted_repository_is_repacked_with_the_identity,
    an_unreadable_kept_listing_stops_the_prune_before_anything_changes,
    a_dropped_snapshot_is_marked_first_and_swept_only_after_the_grace_period,
    a_mostly_garbage_pack_is_repacked_and_the_kept_snapshot_still_restores,
    a_chunk_referenced_again_between_mark_and_sweep_is_kept,
    a_prune_running_during_a_backup_does_not_break_it,
    a_backup_that_ignores_the_marks_would_lose_chunks,
    a_dry_run_changes_nothing,
);

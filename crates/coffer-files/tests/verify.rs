//! `coffer backup verify`'s library side against a folder repository and an s3s-fs server: a
//! clean snapshot verifies at every depth, a flipped byte in a pack is found by reading the data
//! (all of it, or the subset holding that pack) but not by the structure check, a deleted pack
//! is found by the structure check, and the subsets of a split read every pack once.

#[allow(dead_code)]
#[macro_use]
mod support;

use coffer_files::backup::{Filters, SnapshotOptions, take_snapshot};
use coffer_files::chunk_id::{ChunkId, ChunkIdKey};
use coffer_files::index::ChunkIndex;
use coffer_files::pack::{PackId, PackWriter};
use coffer_files::restore::list_entries;
use coffer_files::store::ChunkStore;
use coffer_files::tree::SnapshotSummary;
use coffer_files::verify::{Problem, ReadData, VerifyReport, verify_snapshot};
use support::{Backend, Repo, flip_byte, pseudo_random};

const KEY: [u8; 32] = [9; 32];
const FILES: usize = 24;

/// Files of one or two chunks, two of them with the same content (one chunk used twice), and an
/// empty one; snapshotted into packs of about 1 MiB, so the snapshot spans many packs.
async fn snapshot(repo: &Repo) -> SnapshotSummary {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("storage");
    std::fs::create_dir_all(root.join("invoices")).unwrap();
    for n in 0..FILES {
        let len = 300 * 1024 + n * 37 * 1024;
        std::fs::write(
            root.join(format!("invoices/{n:03}.pdf")),
            pseudo_random(len, n as u64 + 1),
        )
        .unwrap();
    }
    std::fs::write(root.join("copy.pdf"), pseudo_random(300 * 1024, 1)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    let storage = repo.storage.as_ref();
    let mut store = ChunkStore::new(
        storage,
        ChunkIdKey::from_bytes(KEY),
        None,
        ChunkIndex::new(),
    )
    .with_pack_writer(PackWriter::new(storage).with_target_size(1024 * 1024));
    take_snapshot(
        &mut store,
        &root,
        &Filters::all(),
        None,
        &SnapshotOptions::default(),
    )
    .await
    .unwrap()
}

async fn open(repo: &Repo) -> ChunkStore<'_> {
    ChunkStore::open(repo.storage.as_ref(), ChunkIdKey::from_bytes(KEY), None)
        .await
        .unwrap()
}

async fn verify(store: &ChunkStore<'_>, summary: &SnapshotSummary, read: ReadData) -> VerifyReport {
    verify_snapshot(store, summary, read).await.unwrap()
}

/// The content chunks of the snapshot's files, with the first path using each, in listing order.
async fn content_chunks(
    store: &ChunkStore<'_>,
    summary: &SnapshotSummary,
) -> Vec<(ChunkId, String)> {
    let mut out: Vec<(ChunkId, String)> = Vec::new();
    let mut entries = list_entries(store, summary, None).unwrap();
    while let Some(entry) = entries.next().await.unwrap() {
        for id in &entry.chunks {
            if !out.iter().any(|(seen, _)| seen == id) {
                out.push((*id, entry.display()));
            }
        }
    }
    out
}

/// A pack holding file contents and none of the listing's chunks, and a chunk in it.
async fn a_content_pack(
    store: &ChunkStore<'_>,
    summary: &SnapshotSummary,
) -> (PackId, ChunkId, String) {
    let listing_packs: Vec<PackId> = summary
        .listing
        .iter()
        .map(|id| store.index().get(id).unwrap().pack)
        .collect();
    content_chunks(store, summary)
        .await
        .into_iter()
        .map(|(id, path)| (store.index().get(&id).unwrap().pack, id, path))
        .find(|(pack, _, _)| !listing_packs.contains(pack))
        .expect("a pack of contents only")
}

fn subsets(of: u32) -> Vec<ReadData> {
    (1..=of).map(|n| ReadData::Subset { n, of }).collect()
}

async fn a_clean_snapshot_verifies_at_every_depth(backend: Backend) {
    let repo = Repo::new(backend);
    let summary = snapshot(&repo).await;
    let store = open(&repo).await;

    let structure = verify(&store, &summary, ReadData::None).await;
    assert!(structure.is_clean(), "{:?}", structure.problems);
    assert_eq!(structure.files, FILES as u64 + 2);
    assert!(
        structure.unique_chunks < structure.chunks_referenced,
        "{structure:?}"
    );
    assert!(structure.packs_referenced > 5, "{structure:?}");
    assert_eq!((structure.packs_read, structure.bytes_read), (0, 0));

    let all = verify(&store, &summary, ReadData::All).await;
    assert!(all.is_clean(), "{:?}", all.problems);
    assert!(all.packs_read > 5, "{all:?}");
    assert!(all.bytes_read > FILES as u64 * 300 * 1024, "{all:?}");
    assert_eq!(all.unique_chunks, structure.unique_chunks);

    for read in subsets(3) {
        let part = verify(&store, &summary, read).await;
        assert!(part.is_clean(), "{read:?}: {:?}", part.problems);
    }
}

async fn subsets_together_read_every_pack_exactly_once(backend: Backend) {
    let repo = Repo::new(backend);
    let summary = snapshot(&repo).await;
    let store = open(&repo).await;
    let all = verify(&store, &summary, ReadData::All).await;
    let mut packs = 0;
    let mut bytes = 0;
    let mut nonempty = 0;
    for read in subsets(3) {
        let part = verify(&store, &summary, read).await;
        assert!(part.packs_read < all.packs_read, "{read:?} reads a part");
        nonempty += (part.packs_read > 0) as u32;
        packs += part.packs_read;
        bytes += part.bytes_read;
    }
    assert_eq!((packs, bytes), (all.packs_read, all.bytes_read));
    assert!(nonempty >= 2, "the packs are spread over the subsets");
}

async fn a_flipped_byte_in_a_pack_is_found_by_reading_it_and_not_by_the_structure(
    backend: Backend,
) {
    let repo = Repo::new(backend);
    let summary = snapshot(&repo).await;
    let store = open(&repo).await;
    let (pack, chunk, path) = a_content_pack(&store, &summary).await;
    let at = store.index().get(&chunk).unwrap();
    flip_byte(
        &repo.file(&pack.key()),
        (at.offset + at.length as u64 / 2) as usize,
    );

    let structure = verify(&store, &summary, ReadData::None).await;
    assert!(structure.is_clean(), "{:?}", structure.problems);

    let all = verify(&store, &summary, ReadData::All).await;
    assert_eq!(all.problem_count, 1, "{:?}", all.problems);
    match &all.problems[0] {
        Problem::DamagedChunk {
            chunk: c,
            pack: p,
            path: first,
            error,
        } => {
            assert_eq!((c, p), (&chunk, &pack));
            assert_eq!(first.as_deref(), Some(path.as_str()));
            assert!(error.contains(&chunk.to_hex()), "{error}");
        }
        other => panic!("not a damaged chunk: {other}"),
    }
    let shown = all.problems[0].to_string();
    assert!(
        shown.contains(&pack.to_hex()) && shown.contains(&path),
        "{shown}"
    );

    let found: Vec<ReadData> = {
        let mut found = Vec::new();
        for read in subsets(3) {
            let part = verify(&store, &summary, read).await;
            if !part.is_clean() {
                assert_eq!(part.problems, all.problems, "{read:?}");
                found.push(read);
            }
            assert_eq!(read.reads(&pack), !part.is_clean(), "{read:?}");
        }
        found
    };
    assert_eq!(
        found.len(),
        1,
        "exactly the subset holding the pack finds it"
    );
}

async fn a_deleted_pack_is_found_by_the_structure_check(backend: Backend) {
    let repo = Repo::new(backend);
    let summary = snapshot(&repo).await;
    let store = open(&repo).await;
    let (pack, _, _) = a_content_pack(&store, &summary).await;
    repo.storage.delete(&pack.key()).await.unwrap();

    for read in [ReadData::None, ReadData::All] {
        let report = verify(&store, &summary, read).await;
        assert_eq!(
            report.problems,
            vec![Problem::MissingPack { pack }],
            "{read:?}"
        );
        assert_eq!(report.problem_count, 1);
    }
}

async fn a_truncated_pack_and_a_chunk_missing_from_the_index_are_reported(backend: Backend) {
    let repo = Repo::new(backend);
    let summary = snapshot(&repo).await;
    let full = open(&repo).await;
    let (pack, chunk, path) = a_content_pack(&full, &summary).await;
    let file = repo.file(&pack.key());
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let report = verify(&full, &summary, ReadData::None).await;
    assert_eq!(report.problem_count, 1, "{:?}", report.problems);
    assert!(
        matches!(report.problems[0], Problem::PackTooShort { pack: p, actual, expected }
            if p == pack && actual + 100 == expected),
        "{:?}",
        report.problems
    );

    // An index that lost one chunk (a listing chunk stays known, so the listing reads).
    let mut partial = ChunkIndex::new();
    for (id, at) in full.index().entries() {
        if id != chunk {
            partial.insert(id, at).unwrap();
        }
    }
    let store = ChunkStore::new(
        repo.storage.as_ref(),
        ChunkIdKey::from_bytes(KEY),
        None,
        partial,
    );
    let report = verify(&store, &summary, ReadData::None).await;
    assert!(
        report
            .problems
            .contains(&Problem::ChunkNotInIndex { path, chunk }),
        "{:?}",
        report.problems
    );
}

async fn verify_snapshot_leaves_the_repository_alone(backend: Backend) {
    let repo = Repo::new(backend);
    let summary = snapshot(&repo).await;
    let before = repo.storage.list("").await.unwrap().len();
    let store = open(&repo).await;
    verify(&store, &summary, ReadData::All).await;
    assert_eq!(repo.storage.list("").await.unwrap().len(), before);
}

#[test]
fn bad_subsets_are_refused() {
    for bad in ["0/10", "11/10", "x", "1/0"] {
        let err = bad.parse::<ReadData>().unwrap_err();
        assert_eq!(err.kind(), coffer_core::error::ErrorKind::Config, "{bad}");
    }
    assert_eq!(
        "1/10".parse::<ReadData>().unwrap(),
        ReadData::Subset { n: 1, of: 10 }
    );
}

on_both_backends!(
    a_clean_snapshot_verifies_at_every_depth,
    subsets_together_read_every_pack_exactly_once,
    a_flipped_byte_in_a_pack_is_found_by_reading_it_and_not_by_the_structure,
    a_deleted_pack_is_found_by_the_structure_check,
    a_truncated_pack_and_a_chunk_missing_from_the_index_are_reported,
    verify_snapshot_leaves_the_repository_alone,
);

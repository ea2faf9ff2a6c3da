//! The chunk store against real backends: a folder and an s3s-fs server on loopback. Each
//! scenario runs on both.

#[allow(dead_code)]
#[macro_use]
mod support;

use coffer_core::error::ErrorKind;
use coffer_files::chunk_id::{self, ChunkId, ChunkIdKey};
use coffer_files::chunker::Chunker;
use coffer_files::index::{self, ChunkIndex, IndexWriter};
use coffer_files::pack::{PackReader, PackWriter};
use coffer_files::store::ChunkStore;
use support::{Backend, Repo, flip_byte, pseudo_random};

/// 150 distinct chunks of 1 to 64 KiB, some random and some compressible text.
fn distinct_chunks() -> Vec<Vec<u8>> {
    (0..150u64)
        .map(|n| {
            let len = 1024 + (n as usize * 7919) % (63 * 1024);
            if n % 3 == 0 {
                format!("invoice {n}: net 30 days, thank you for your business. ")
                    .into_bytes()
                    .repeat(len / 50 + 1)
            } else {
                pseudo_random(len, n + 1)
            }
        })
        .collect()
}

/// A store with small packs and index files, so 150 chunks make many of each.
fn small_store<'a>(
    repo: &'a Repo,
    key: &ChunkIdKey,
    identity: Option<&age::x25519::Identity>,
    index: ChunkIndex,
) -> ChunkStore<'a> {
    let store = ChunkStore::new(
        repo.storage.as_ref(),
        key.clone(),
        identity.map(|i| i.to_public()),
        index,
    )
    .with_pack_writer(PackWriter::new(repo.storage.as_ref()).with_target_size(128 * 1024))
    .with_index_writer(IndexWriter::new(repo.storage.as_ref()).with_blobs_per_file(40));
    match identity {
        Some(identity) => store.with_identity(identity.clone()),
        None => store,
    }
}

/// Writes the 150 chunks and 50 repeats of them; returns the ids in write order.
async fn write_two_hundred(
    repo: &Repo,
    key: &ChunkIdKey,
    identity: Option<&age::x25519::Identity>,
) -> (Vec<ChunkId>, Vec<Vec<u8>>) {
    let chunks = distinct_chunks();
    let mut store = small_store(repo, key, identity, ChunkIndex::new());
    let mut ids = Vec::new();
    for i in 0..200 {
        let (id, stored) = store.write(&chunks[i % 150]).await.unwrap();
        assert_eq!(stored, i < 150, "write {i}");
        ids.push(id);
    }
    store.flush().await.unwrap();
    let stats = store.stats();
    assert_eq!((stats.stored, stats.deduplicated), (150, 50));
    assert!(stats.packs >= 10, "{} packs", stats.packs);
    (ids, chunks)
}

/// [`write_two_hundred`] into an encrypted repository whose chunk-id key is made as a backup
/// host makes it; returns the identity and the key too.
async fn encrypted_two_hundred(
    repo: &Repo,
) -> (
    age::x25519::Identity,
    ChunkIdKey,
    Vec<ChunkId>,
    Vec<Vec<u8>>,
) {
    let identity = age::x25519::Identity::generate();
    let key = chunk_id::load_or_create(
        repo.storage.as_ref(),
        &repo.state_dir("state"),
        Some(&identity.to_public()),
    )
    .await
    .unwrap();
    let (ids, chunks) = write_two_hundred(repo, &key, Some(&identity)).await;
    (identity, key, ids, chunks)
}

async fn two_hundred_chunks_are_stored_once_and_read_back_by_range(backend: Backend) {
    let repo = Repo::new(backend);
    let (identity, key, ids, chunks) = encrypted_two_hundred(&repo).await;

    // A later run: the index comes from the index files; every chunk reads back by range.
    let loaded = ChunkIndex::load(repo.storage.as_ref()).await.unwrap();
    assert_eq!(loaded.len(), 150);
    let mut store = small_store(&repo, &key, Some(&identity), loaded);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(store.read(id).await.unwrap(), chunks[i % 150], "chunk {i}");
    }
    // Nothing it already has is stored again.
    let packs_before = repo.storage.list("packs/").await.unwrap().len();
    for chunk in &chunks {
        assert!(!store.write(chunk).await.unwrap().1);
    }
    store.flush().await.unwrap();
    assert_eq!(
        repo.storage.list("packs/").await.unwrap().len(),
        packs_before
    );

    // Each blob appears in exactly one pack.
    let (rebuilt, damaged) = index::rebuild(repo.storage.as_ref()).await.unwrap();
    assert!(damaged.is_empty());
    let blobs: usize = {
        let reader = PackReader::new(repo.storage.as_ref());
        let mut n = 0;
        for (pack, _) in reader.list().await.unwrap() {
            n += reader.read_header(&pack).await.unwrap().len();
        }
        n
    };
    assert_eq!((blobs, rebuilt.len()), (150, 150));
}

async fn a_flipped_byte_in_a_pack_is_detected(backend: Backend) {
    let repo = Repo::new(backend);
    let key = ChunkIdKey::from_bytes([3; 32]);
    let (ids, _) = write_two_hundred(&repo, &key, None).await;
    let index = ChunkIndex::load(repo.storage.as_ref()).await.unwrap();
    let victim = ids[77];
    let at = index.get(&victim).unwrap();
    flip_byte(
        &repo.file(&at.pack.key()),
        (at.offset + at.length as u64 / 2) as usize,
    );

    let store = small_store(&repo, &key, None, index.clone());
    let err = store.read(&victim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains(&victim.to_hex()), "{err}");
    // The pack's other chunks still read: the damage stays where it is.
    for (id, other) in index.entries() {
        if other.pack == at.pack && id != victim {
            store.read(&id).await.unwrap();
        }
    }
    // Reading the pack whole finds it by the digest.
    let err = PackReader::new(repo.storage.as_ref())
        .read_verified(&at.pack)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains(&at.pack.to_hex()), "{err}");

    // A flipped byte in a trailer makes the header unreadable: the rebuild names the pack.
    let size = std::fs::metadata(repo.file(&at.pack.key())).unwrap().len();
    flip_byte(&repo.file(&at.pack.key()), size as usize - 1);
    let (rebuilt, damaged) = index::rebuild(repo.storage.as_ref()).await.unwrap();
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0].0, at.pack);
    assert!(rebuilt.len() < 150);
}

async fn the_index_rebuilt_from_pack_headers_equals_the_written_index(backend: Backend) {
    let repo = Repo::new(backend);
    let key = ChunkIdKey::from_bytes([4; 32]);
    write_two_hundred(&repo, &key, None).await;
    let written = ChunkIndex::load(repo.storage.as_ref()).await.unwrap();
    assert!(repo.storage.list("index/").await.unwrap().len() >= 3);
    let (rebuilt, damaged) = index::rebuild(repo.storage.as_ref()).await.unwrap();
    assert!(damaged.is_empty());
    assert_eq!(rebuilt.len(), 150);
    assert_eq!(rebuilt.entries(), written.entries());

    // A damaged index file is refused by name rather than believed.
    let file = repo.storage.list("index/").await.unwrap().remove(0).key;
    flip_byte(&repo.file(&file), 10);
    let err = ChunkIndex::load(repo.storage.as_ref()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains(&file), "{err}");
}

async fn a_changed_file_stores_only_the_chunks_around_the_change(backend: Backend) {
    let repo = Repo::new(backend);
    let key = ChunkIdKey::from_bytes([6; 32]);
    let original = pseudo_random(20 * 1024 * 1024, 99);
    let mut store = ChunkStore::new(repo.storage.as_ref(), key.clone(), None, ChunkIndex::new());
    let mut first = Vec::new();
    for chunk in Chunker::new(&original[..]) {
        first.push(store.write(&chunk.unwrap().data).await.unwrap().0);
    }
    store.flush().await.unwrap();
    let stored_first = store.stats().raw_bytes;
    assert_eq!(stored_first, original.len() as u64);

    let mut edited = original.clone();
    edited[10_000_000..10_000_100].fill(b'x');
    let mut store = ChunkStore::open(repo.storage.as_ref(), key, None)
        .await
        .unwrap();
    let mut second = Vec::new();
    for chunk in Chunker::new(&edited[..]) {
        second.push(store.write(&chunk.unwrap().data).await.unwrap().0);
    }
    store.flush().await.unwrap();
    // One or two chunks (a few MiB) of 20 MiB were stored again.
    assert!(store.stats().stored <= 2, "{:?}", store.stats());
    assert!(store.stats().raw_bytes < 5 * 1024 * 1024);

    let mut restored = Vec::new();
    for id in &second {
        restored.extend(store.read(id).await.unwrap());
    }
    assert!(restored == edited, "the file reassembles byte for byte");
}

async fn a_fresh_host_recovers_the_chunk_id_key(backend: Backend) {
    let repo = Repo::new(backend);
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let storage = repo.storage.as_ref();
    let key = chunk_id::load_or_create(storage, &repo.state_dir("a"), Some(&recipient))
        .await
        .unwrap();
    let err = chunk_id::load_or_create(storage, &repo.state_dir("b"), Some(&recipient))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(
        chunk_id::recover(storage, &repo.state_dir("b"), &identity)
            .await
            .unwrap(),
        key
    );
    assert_eq!(
        chunk_id::load_or_create(storage, &repo.state_dir("b"), Some(&recipient))
            .await
            .unwrap(),
        key
    );
}

async fn a_flipped_byte_in_an_encrypted_packs_age_header_fails_its_blobs_only(backend: Backend) {
    let repo = Repo::new(backend);
    let key = ChunkIdKey::from_bytes([7; 32]);
    let identity = age::x25519::Identity::generate();
    let (ids, chunks) = write_two_hundred(&repo, &key, Some(&identity)).await;
    let index = ChunkIndex::load(repo.storage.as_ref()).await.unwrap();
    let victim = index.get(&ids[10]).unwrap();
    assert!(
        victim.age_header > 100,
        "an encrypted pack begins with its header"
    );
    flip_byte(&repo.file(&victim.pack.key()), 60);

    let store = small_store(&repo, &key, Some(&identity), index.clone());
    for (i, id) in ids.iter().enumerate().take(150) {
        let at = index.get(id).unwrap();
        match store.read(id).await {
            Ok(plain) => {
                assert_ne!(at.pack, victim.pack, "chunk {i}");
                assert_eq!(plain, chunks[i]);
            }
            Err(err) => {
                assert_eq!(at.pack, victim.pack, "chunk {i}: {err}");
                assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
                assert!(err.to_string().contains(&victim.pack.to_hex()), "{err}");
            }
        }
    }
}

/// FORMAT.md's by-hand procedure: its `chunk` function (*Restoring by hand*, the steps of
/// *Reading a chunk by hand*), taken from the document itself and run with the shell's tools.
#[tokio::test]
async fn an_encrypted_chunk_reads_by_hand_with_the_documented_shell_function() {
    let repo = Repo::new(Backend::Folder);
    let (identity, _, ids, chunks) = encrypted_two_hundred(&repo).await;
    let format =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/FORMAT.md"))
            .unwrap();
    let function: String = format
        .lines()
        .skip_while(|line| !line.starts_with("chunk() {"))
        .scan(false, |done, line| {
            let keep = !*done;
            *done |= line == "}";
            keep.then(|| format!("{line}\n"))
        })
        .collect();
    assert!(
        function.ends_with("}\n"),
        "FORMAT.md defines chunk(): {function}"
    );
    let root = repo.file("");
    use age::secrecy::ExposeSecret as _;
    std::fs::write(root.join("key.txt"), identity.to_string().expose_secret()).unwrap();
    for n in [0, 1, 77, 149] {
        let script = format!(
            "set -eu -o pipefail\n{function}\
             KEY=$(age -d -i key.txt keys/chunk-id.json.age | jq -r .key)\n\
             chunk {} > out\n",
            ids[n].to_hex()
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&root)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "chunk {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read(root.join("out")).unwrap() == chunks[n],
            "chunk {n}"
        );
    }
}

on_both_backends!(
    two_hundred_chunks_are_stored_once_and_read_back_by_range,
    a_flipped_byte_in_a_pack_is_detected,
    the_index_rebuilt_from_pack_headers_equals_the_written_index,
    a_changed_file_stores_only_the_chunks_around_the_change,
    a_fresh_host_recovers_the_chunk_id_key,
    a_flipped_byte_in_an_encrypted_packs_age_header_fails_its_blobs_only,
);

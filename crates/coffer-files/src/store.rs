//! The chunk store: chunk ids, blobs, packs and the index together.
//!
//! [`ChunkStore::write`] stores a chunk unless the repository (or the pack being filled) already
//! has it; [`ChunkStore::flush`] stores the last pack and then the index file naming it, in that
//! order, so an index file never names a pack that is not there. [`ChunkStore::read`] fetches one
//! blob by a range read and decodes it verified.
//!
//! A chunk a prune has marked as garbage ([`crate::gc`]) is not deduplicated against: the store
//! writes its own copy, so that a sweep deleting the marked one cannot take a chunk this run's
//! snapshot relies on. [`ChunkStore::open`] loads the marks; [`ChunkStore::with_avoided`] sets
//! them by hand.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use coffer_core::error::{Error, Result};
use coffer_core::storage::Storage;

use crate::blob::{self, Sealing};
use crate::blob_key::BlobKey;
use crate::chunk_id::{ChunkId, ChunkIdKey};
use crate::gc::ChunkSet;
use crate::index::{ChunkIndex, IndexWriter, Location};
use crate::pack::{PackId, PackInfo, PackReader, PackWriter};

/// What a store has written so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Chunks stored as new blobs.
    pub stored: u64,
    /// Chunks the repository already had (not stored again).
    pub deduplicated: u64,
    /// Plain bytes of the stored chunks.
    pub raw_bytes: u64,
    /// Encoded bytes of the stored chunks (their blobs).
    pub stored_bytes: u64,
    /// Packs written.
    pub packs: u64,
}

/// Stores and reads chunks of one repository.
pub struct ChunkStore<'a> {
    storage: &'a dyn Storage,
    key: ChunkIdKey,
    recipient: Option<age::x25519::Recipient>,
    identity: Option<age::x25519::Identity>,
    /// The run's blob key, made at the first chunk it encrypts ([`ChunkStore::write_key`]).
    write_key: Mutex<Option<Arc<BlobKey>>>,
    /// The keys of the packs read so far.
    read_keys: Arc<Mutex<ReadKeys>>,
    index: ChunkIndex,
    packs: PackWriter<'a>,
    pending: HashSet<ChunkId>,
    avoided: ChunkSet,
    index_writer: IndexWriter<'a>,
    stats: WriteStats,
    local: Option<std::path::PathBuf>,
    /// Chunks being compressed and encrypted on the blocking pool, oldest first: they go into
    /// the pack in the order they were written.
    encoding: VecDeque<Encoding>,
    /// How many may be in `encoding` ([`encoders`]).
    encoders: usize,
}

/// Chunks on their way from a reading thread to the store, each with its id.
pub type ChunkReceiver = tokio::sync::mpsc::Receiver<(ChunkId, Vec<u8>)>;

/// One chunk on its way into a pack.
struct Encoding {
    id: ChunkId,
    raw_length: u32,
    blob: tokio::task::JoinHandle<Result<Vec<u8>>>,
}

/// How many chunks are compressed and encrypted at once: the machine's cores (at least two, at
/// most eight), so a backup uses them all while memory stays a few MiB per core.
fn encoders() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

impl std::fmt::Debug for ChunkStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore")
            .field("storage", &self.storage.location())
            .field("encrypted", &self.recipient.is_some())
            .field("chunks", &self.index.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'a> ChunkStore<'a> {
    /// A store over `storage` whose chunk index is `index` (from [`ChunkIndex::load`] or
    /// [`crate::index::rebuild`]). Blobs are encrypted to `recipient` when there is one.
    pub fn new(
        storage: &'a dyn Storage,
        key: ChunkIdKey,
        recipient: Option<age::x25519::Recipient>,
        index: ChunkIndex,
    ) -> Self {
        Self {
            storage,
            key,
            recipient,
            identity: None,
            write_key: Mutex::new(None),
            read_keys: Arc::default(),
            index,
            packs: PackWriter::new(storage),
            pending: HashSet::new(),
            avoided: ChunkSet::default(),
            index_writer: IndexWriter::new(storage),
            stats: WriteStats::default(),
            local: None,
            encoding: VecDeque::new(),
            encoders: encoders(),
        }
    }

    /// A store over `storage` with its index loaded from the index files, and the chunks prunes
    /// have marked as garbage ([`crate::gc::marked_chunks`]) not deduplicated against. The marks
    /// are read before the index: a mark written after that read names only chunks that were
    /// indexed before it, which this run may reuse because it started before the mark (the
    /// grace period covers it, see [`crate::gc`]).
    pub async fn open(
        storage: &'a dyn Storage,
        key: ChunkIdKey,
        recipient: Option<age::x25519::Recipient>,
    ) -> Result<Self> {
        let avoided = crate::gc::marked_chunks(storage).await?;
        let index = ChunkIndex::load(storage).await?;
        Ok(Self::new(storage, key, recipient, index).with_avoided(avoided))
    }

    /// Does not deduplicate against the chunks `avoided` (marked as garbage by a prune): they
    /// are stored again if this run needs them.
    pub fn with_avoided(mut self, avoided: ChunkSet) -> Self {
        self.avoided = avoided;
        self
    }

    /// A store to read snapshots with, on any host: this host's copy of the chunk-id key, else
    /// the key recovered from the repository (decrypted with `identity` when it is stored
    /// encrypted, and then installed as this host's copy), with its index loaded. Encrypted
    /// chunks need `identity`.
    pub async fn open_for_reading(
        storage: &'a dyn Storage,
        state_dir: &std::path::Path,
        recipient: Option<age::x25519::Recipient>,
        identity: Option<age::x25519::Identity>,
    ) -> Result<Self> {
        let key = match crate::chunk_id::load_or_create(storage, state_dir, recipient.as_ref())
            .await
        {
            Ok(key) => key,
            Err(e) if e.kind() == coffer_core::error::ErrorKind::Config => match &identity {
                Some(identity) => crate::chunk_id::recover(storage, state_dir, identity).await?,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let store = Self::open(storage, key, recipient).await?;
        Ok(match identity {
            Some(identity) => store.with_identity(identity),
            None => store,
        })
    }

    /// Decrypts blobs with `identity` when reading (needed for encrypted repositories).
    pub fn with_identity(mut self, identity: age::x25519::Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Keeps plain copies of listing chunks in the private folder `dir` (created 0700 when
    /// missing), and reads chunks from there before the repository.
    ///
    /// This is how a backup host that holds only the repository's recipient reads its last
    /// snapshot's listing, to skip unchanged files: it cannot decrypt the stored copy. A local
    /// copy is used only when its keyed id is the chunk's, so a changed or stale file is never
    /// read as the chunk; it is then read from the repository as usual.
    pub fn with_local_copies(mut self, dir: std::path::PathBuf) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::other(format!("creating {}: {e}", dir.display())))?;
        self.local = Some(dir);
        Ok(self)
    }

    /// Keeps a plain copy of chunk `id` (a listing chunk) when [`Self::with_local_copies`] is
    /// set. A copy that cannot be written only costs the next backup a read of every file.
    pub fn keep_local(&self, id: &ChunkId, plain: &[u8]) {
        let Some(dir) = &self.local else { return };
        let path = dir.join(id.to_hex());
        let tmp = dir.join(format!(".{}.tmp", id.to_hex()));
        let written = (|| -> std::io::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(plain)?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not keep a local copy of a listing chunk");
        }
    }

    /// Removes the local copies of chunks not in `keep` (the listings of the snapshots a later
    /// backup may use as parent).
    pub fn forget_local_except(&self, keep: &HashSet<ChunkId>) {
        let Some(dir) = &self.local else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let keep_it = name
                .to_str()
                .and_then(|n| ChunkId::from_hex(n).ok())
                .is_some_and(|id| keep.contains(&id));
            if !keep_it {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Whether chunk `id` has a valid local copy (see [`Self::with_local_copies`]).
    pub fn has_local(&self, id: &ChunkId) -> bool {
        self.read_local(id).is_some()
    }

    fn read_local(&self, id: &ChunkId) -> Option<Vec<u8>> {
        let plain = std::fs::read(self.local.as_ref()?.join(id.to_hex())).ok()?;
        (self.key.id(&plain) == *id).then_some(plain)
    }

    /// Uses `packs` (its target size, its retry) to write packs.
    pub fn with_pack_writer(mut self, packs: PackWriter<'a>) -> Self {
        self.packs = packs;
        self
    }

    /// Uses `writer` to write index files.
    pub fn with_index_writer(mut self, writer: IndexWriter<'a>) -> Self {
        self.index_writer = writer;
        self
    }

    /// The chunk id of `plain` in this repository.
    pub fn id(&self, plain: &[u8]) -> ChunkId {
        self.key.id(plain)
    }

    /// The index: every chunk stored before this run and in it (once its pack is stored).
    pub fn index(&self) -> &ChunkIndex {
        &self.index
    }

    /// What has been written so far (`stored_bytes` counts a chunk once it is encoded: all of
    /// them after [`ChunkStore::flush`]).
    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Stores a chunk unless the repository already has it; returns its id and whether it was
    /// stored now.
    pub async fn write(&mut self, plain: &[u8]) -> Result<(ChunkId, bool)> {
        let id = self.key.id(plain);
        self.write_with_id(id, plain).await
    }

    /// The key chunk ids are made with: a reading thread that computes the ids of what it reads
    /// ([`ChunkStore::write_with_id`]) takes the hashing off the writer.
    pub fn chunk_id_key(&self) -> &ChunkIdKey {
        &self.key
    }

    /// [`ChunkStore::write`] of a chunk whose id the caller computed with
    /// [`ChunkStore::chunk_id_key`] (a wrong id would store a chunk no reader can verify: every
    /// read checks the id).
    pub async fn write_with_id(&mut self, id: ChunkId, plain: &[u8]) -> Result<(ChunkId, bool)> {
        if self.deduplicated(&id) {
            return Ok((id, false));
        }
        self.encode(id, plain.to_vec()).await
    }

    /// [`ChunkStore::write_with_id`] of a chunk the caller hands over: a new chunk is encoded
    /// without a copy.
    pub async fn write_owned(&mut self, id: ChunkId, plain: Vec<u8>) -> Result<(ChunkId, bool)> {
        if self.deduplicated(&id) {
            return Ok((id, false));
        }
        self.encode(id, plain).await
    }

    /// The two ends that carry chunks from a reading thread into this store (two in flight):
    /// the sender computes each chunk's id on the reading thread, so the hashing runs beside the
    /// writer, and returns `false` once the store stopped taking chunks (it failed; the side
    /// that drains the receiver with [`ChunkStore::write_all_from`] reports why).
    pub fn chunk_channel(&self) -> (impl FnMut(Vec<u8>) -> bool + Send + 'static, ChunkReceiver) {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let key = self.key.clone();
        let send = move |data: Vec<u8>| tx.blocking_send((key.id(&data), data)).is_ok();
        (send, rx)
    }

    /// Stores every chunk `chunks` brings, in order, until its sender is gone; returns their ids
    /// and the plain bytes newly stored.
    pub async fn write_all_from(
        &mut self,
        chunks: &mut ChunkReceiver,
    ) -> Result<(Vec<ChunkId>, u64)> {
        let mut ids = Vec::new();
        let mut new_bytes = 0;
        while let Some((id, data)) = chunks.recv().await {
            let length = data.len() as u64;
            let (id, stored) = self.write_owned(id, data).await?;
            if stored {
                new_bytes += length;
            }
            ids.push(id);
        }
        Ok((ids, new_bytes))
    }

    /// Whether chunk `id` is stored already (or on its way into a pack), counted if so.
    fn deduplicated(&mut self, id: &ChunkId) -> bool {
        let known = self.index.contains(id) && !self.avoided.contains(id);
        if known || self.pending.contains(id) {
            self.stats.deduplicated += 1;
            return true;
        }
        false
    }

    /// Starts compressing and encrypting a new chunk on the blocking pool; when
    /// [`encoders`] are busy, first puts the oldest into the pack.
    async fn encode(&mut self, id: ChunkId, plain: Vec<u8>) -> Result<(ChunkId, bool)> {
        debug_assert_eq!(id, self.key.id(&plain), "a chunk id from another key");
        let raw_length = u32::try_from(plain.len())
            .map_err(|_| Error::other(format!("a chunk of {} bytes", plain.len())))?;
        self.stats.stored += 1;
        self.stats.raw_bytes += plain.len() as u64;
        self.pending.insert(id);
        let key = self.write_key()?;
        if let Some(key) = &key {
            self.packs.set_age_header(key.header().clone());
        }
        let blob = tokio::task::spawn_blocking(move || blob::encode(&plain, key.as_deref()));
        self.encoding.push_back(Encoding {
            id,
            raw_length,
            blob,
        });
        if self.encoding.len() > self.encoders {
            self.pack_oldest().await?;
        }
        Ok((id, true))
    }

    /// Waits for the oldest chunk being encoded and adds it to the pack being filled.
    async fn pack_oldest(&mut self) -> Result<()> {
        let Some(oldest) = self.encoding.pop_front() else {
            return Ok(());
        };
        let encoded = oldest
            .blob
            .await
            .map_err(|e| Error::other(format!("encoding chunk {}: {e}", oldest.id)))??;
        self.stats.stored_bytes += encoded.len() as u64;
        for pack in self
            .packs
            .add(oldest.id, oldest.raw_length, &encoded)
            .await?
        {
            self.pack_stored(pack).await?;
        }
        Ok(())
    }

    /// Stores the pack being filled and the index file for every pack not yet in one.
    pub async fn flush(&mut self) -> Result<()> {
        while !self.encoding.is_empty() {
            self.pack_oldest().await?;
        }
        for pack in self.packs.flush().await? {
            self.pack_stored(pack).await?;
        }
        self.index_writer.flush().await?;
        Ok(())
    }

    async fn pack_stored(&mut self, pack: PackInfo) -> Result<()> {
        self.stats.packs += 1;
        for entry in &pack.entries {
            self.pending.remove(&entry.id);
            // A marked chunk stored again is read from its new copy from now on.
            if self.avoided.remove(&entry.id) {
                self.index.remove(&entry.id);
            }
        }
        self.index.add_pack(&pack.id, &pack.entries)?;
        self.index_writer.add(pack).await?;
        Ok(())
    }

    /// The key this store seals new blobs under: made (one header, one X25519 exchange) at the
    /// first call when the repository has a recipient, the same for the rest of the run. `None`
    /// for a plain repository.
    pub fn write_key(&self) -> Result<Option<Arc<BlobKey>>> {
        let Some(recipient) = &self.recipient else {
            return Ok(None);
        };
        let mut slot = self.write_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = &*slot {
            return Ok(Some(key.clone()));
        }
        let key = Arc::new(BlobKey::generate(recipient)?);
        // This run can read back what it wrote, with or without the identity.
        self.read_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_header
            .insert(header_digest(key.header()), key.clone());
        *slot = Some(key.clone());
        Ok(Some(key))
    }

    /// The key of the pack `at` is in, when that pack begins with an age header: read by a range
    /// read and opened with the identity once per pack and once per header, then kept.
    async fn read_key(&self, at: &Location) -> Result<Option<Arc<BlobKey>>> {
        if at.age_header == 0 {
            return Ok(None);
        }
        if let Some(key) = self.read_keys().by_pack.get(&at.pack) {
            return Ok(Some(key.clone()));
        }
        let header = PackReader::new(self.storage)
            .read_age_header(&at.pack, at.age_header.into())
            .await?;
        let digest = header_digest(&header);
        let known = self.read_keys().by_header.get(&digest).cloned();
        let key = match known {
            Some(key) => key,
            None => {
                let Some(identity) = &self.identity else {
                    return Err(Error::config(format!(
                        "pack {} is encrypted: an age identity (private key) is needed to read it",
                        at.pack
                    )));
                };
                let key = BlobKey::open(&header, identity, &format!("pack {}", at.pack))?;
                Arc::new(key)
            }
        };
        let mut keys = self.read_keys();
        if keys.by_pack.len() >= MAX_PACK_KEYS {
            keys.by_pack.clear();
        }
        keys.by_pack.insert(at.pack, key.clone());
        keys.by_header.insert(digest, key.clone());
        Ok(Some(key))
    }

    fn read_keys(&self) -> std::sync::MutexGuard<'_, ReadKeys> {
        self.read_keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads chunk `id` back: one range read of its blob, decoded and checked against `id`. A
    /// chunk the index does not know is `NotFound`; one written but not yet flushed too.
    pub async fn read(&self, id: &ChunkId) -> Result<Vec<u8>> {
        if let Some(plain) = self.read_local(id) {
            return Ok(plain);
        }
        let at = self
            .index
            .get(id)
            .ok_or_else(|| Error::not_found(format!("chunk {id} is in no stored pack")))?;
        let blob = PackReader::new(self.storage)
            .read_blob(&at.pack, at.offset, at.length)
            .await?;
        // Decrypting, decompressing and hashing a chunk is CPU work: off the async threads.
        let decoder = self.decoder(&at).await?;
        let id = *id;
        tokio::task::spawn_blocking(move || decoder.decode(&id, &at, &blob))
            .await
            .map_err(|e| Error::other(format!("decoding chunk {id}: {e}")))?
    }

    /// What decoding the blobs of `at`'s pack needs.
    async fn decoder(&self, at: &Location) -> Result<Decoder> {
        Ok(Decoder {
            key: self.key.clone(),
            identity: self.identity.clone(),
            pack_key: self.read_key(at).await?,
        })
    }

    /// Reads the chunks `ids` back, each decoded and checked like [`ChunkStore::read`], with as
    /// few requests as possible: the chunks of one pack are sorted by offset and neighbours
    /// (less than [`MAX_READ_GAP`] apart, at most [`MAX_READ_SPAN`] in all) come in one range
    /// read. The caller bounds the memory by how many it asks for at once.
    pub async fn read_many(&self, ids: &[ChunkId]) -> Result<HashMap<ChunkId, Vec<u8>>> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut by_pack: BTreeMap<PackId, Vec<(ChunkId, Location)>> = BTreeMap::new();
        for id in ids {
            if found.contains_key(id) {
                continue;
            }
            if let Some(plain) = self.read_local(id) {
                found.insert(*id, plain);
                continue;
            }
            let at = self
                .index
                .get(id)
                .ok_or_else(|| Error::not_found(format!("chunk {id} is in no stored pack")))?;
            by_pack.entry(at.pack).or_default().push((*id, at));
        }
        let reader = PackReader::new(self.storage);
        // Each span is decoded on the blocking pool while the next one is read.
        let mut decoding = Vec::new();
        for (pack, mut blobs) in by_pack {
            blobs.sort_by_key(|(_, at)| at.offset);
            blobs.dedup_by_key(|(id, _)| *id);
            for run in spans(&blobs) {
                let (first, last) = (&run[0].1, &run[run.len() - 1].1);
                let start = first.offset;
                let end = last.offset + u64::from(last.length);
                let bytes = reader.read_span(&pack, start, end - start).await?;
                let run = run.to_vec();
                let decoder = self.decoder(first).await?;
                decoding.push(tokio::task::spawn_blocking(move || {
                    run.iter()
                        .map(|(id, at)| {
                            let from = (at.offset - start) as usize;
                            let blob = &bytes[from..from + at.length as usize];
                            Ok((*id, decoder.decode(id, at, blob)?))
                        })
                        .collect::<Result<Vec<_>>>()
                }));
            }
        }
        for decoded in decoding {
            let decoded = decoded
                .await
                .map_err(|e| Error::other(format!("decoding chunks: {e}")))??;
            found.extend(decoded);
        }
        Ok(found)
    }

    /// The storage the store reads and writes.
    pub(crate) fn storage(&self) -> &'a dyn Storage {
        self.storage
    }

    /// Decodes the blob of chunk `id`, found at `at`, and checks it against `id` and the plain
    /// length the index records.
    pub(crate) async fn decode(&self, id: &ChunkId, at: &Location, blob: &[u8]) -> Result<Vec<u8>> {
        self.decoder(at).await?.decode(id, at, blob)
    }
}

/// The packs kept from [`MAX_PACK_KEYS`] on are forgotten and their headers read again when
/// needed: a few MiB, whatever the size of the repository.
const MAX_PACK_KEYS: usize = 65_536;

/// The blob keys a store has opened: by pack, and by the digest of their header (a run's packs
/// share one header, so the identity opens it once).
#[derive(Default)]
struct ReadKeys {
    by_pack: HashMap<PackId, Arc<BlobKey>>,
    by_header: HashMap<[u8; 32], Arc<BlobKey>>,
}

fn header_digest(header: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(header).into()
}

/// What decoding the blobs of one pack needs, owned, for a blocking thread.
struct Decoder {
    key: ChunkIdKey,
    identity: Option<age::x25519::Identity>,
    /// The pack's key, when it begins with an age header.
    pack_key: Option<Arc<BlobKey>>,
}

impl Decoder {
    fn decode(&self, id: &ChunkId, at: &Location, blob: &[u8]) -> Result<Vec<u8>> {
        let expected = at.raw_length as usize;
        let sealing = match &self.pack_key {
            Some(key) => Sealing::Sealed(key),
            None => Sealing::Standalone(self.identity.as_ref()),
        };
        let plain = blob::decode_with_capacity(id, blob, &self.key, sealing, expected)
            .map_err(|e| e.context(format!("reading pack {}", at.pack)))?;
        if plain.len() != at.raw_length as usize {
            return Err(Error::integrity(format!(
                "chunk {id}: {} plain bytes where the index says {}",
                plain.len(),
                at.raw_length
            )));
        }
        Ok(plain)
    }
}

/// Blobs further apart than this in one pack are read by separate requests: reading the gap
/// would cost more than a round trip.
pub const MAX_READ_GAP: u64 = 256 * 1024;

/// The most one range read of neighbouring blobs spans.
pub const MAX_READ_SPAN: u64 = 16 * 1024 * 1024;

/// `blobs` (of one pack, sorted by offset) cut into runs that one range read each covers.
fn spans(blobs: &[(ChunkId, Location)]) -> Vec<&[(ChunkId, Location)]> {
    let mut runs = Vec::new();
    let mut begin = 0;
    for i in 1..=blobs.len() {
        let cut = i == blobs.len() || {
            let (prev, next) = (&blobs[i - 1].1, &blobs[i].1);
            let prev_end = prev.offset + u64::from(prev.length);
            let gap = next.offset.saturating_sub(prev_end);
            let span = next.offset + u64::from(next.length) - blobs[begin].1.offset;
            gap > MAX_READ_GAP || span > MAX_READ_SPAN || next.offset < prev_end
        };
        if cut {
            runs.push(&blobs[begin..i]);
            begin = i;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::error::ErrorKind;
    use coffer_core::storage::LocalStorage;

    #[tokio::test]
    async fn a_chunk_is_stored_once_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let key = ChunkIdKey::from_bytes([5; 32]);
        let mut store = ChunkStore::new(&storage, key.clone(), None, ChunkIndex::new());
        let (a, stored) = store.write(b"first").await.unwrap();
        assert!(stored);
        let (again, stored) = store.write(b"first").await.unwrap();
        assert_eq!(again, a);
        assert!(
            !stored,
            "a repeat within the pack being filled is not stored again"
        );
        let err = store.read(&a).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::NotFound,
            "not readable before the flush"
        );
        store.flush().await.unwrap();
        assert_eq!(store.read(&a).await.unwrap(), b"first");
        assert_eq!(store.stats().stored, 1);
        assert_eq!(store.stats().deduplicated, 1);

        // The next run loads the index and stores nothing it already has.
        let mut next = ChunkStore::open(&storage, key, None).await.unwrap();
        assert!(!next.write(b"first").await.unwrap().1);
        assert!(next.write(b"second").await.unwrap().1);
        next.flush().await.unwrap();
        assert_eq!(storage.list("packs/").await.unwrap().len(), 2);
        assert_eq!(storage.list("index/").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn many_chunks_read_back_together_equal_each_read_alone() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let key = ChunkIdKey::from_bytes([6; 32]);
        let mut store = ChunkStore::new(&storage, key, None, ChunkIndex::new());
        let mut ids = Vec::new();
        for n in 0..40u32 {
            let plain: Vec<u8> = (0..1000 + n * 97).map(|i| (i * 7 + n) as u8).collect();
            ids.push(store.write(&plain).await.unwrap().0);
            if n == 19 {
                // Two packs.
                store.flush().await.unwrap();
            }
        }
        store.flush().await.unwrap();
        // Asked out of order and with a repeat.
        let mut asked: Vec<ChunkId> = ids.iter().rev().copied().collect();
        asked.push(ids[3]);
        let many = store.read_many(&asked).await.unwrap();
        assert_eq!(many.len(), ids.len());
        for id in &ids {
            assert_eq!(many[id], store.read(id).await.unwrap());
        }
        let unknown = ChunkId::from_hex(&"ab".repeat(32)).unwrap();
        let err = store.read_many(&[ids[0], unknown]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    fn chunk(n: u32) -> Vec<u8> {
        (0..1000 + n * 97).map(|i| (i * 7 + n) as u8).collect()
    }

    #[tokio::test]
    async fn an_encrypted_run_begins_each_pack_with_its_one_header_and_reads_back_with_the_identity()
     {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let key = ChunkIdKey::from_bytes([7; 32]);
        let identity = age::x25519::Identity::generate();
        let mut store = ChunkStore::new(
            &storage,
            key.clone(),
            Some(identity.to_public()),
            ChunkIndex::new(),
        );
        let mut ids = Vec::new();
        for n in 0..40u32 {
            ids.push(store.write(&chunk(n)).await.unwrap().0);
            if n == 19 {
                store.flush().await.unwrap();
            }
        }
        store.flush().await.unwrap();
        let header = store.write_key().unwrap().unwrap().header().clone();
        let packs = PackReader::new(&storage).list().await.unwrap();
        assert_eq!(packs.len(), 2);
        for (pack, _) in &packs {
            let (bytes, entries) = PackReader::new(&storage).read_verified(pack).await.unwrap();
            assert!(
                bytes.starts_with(&header),
                "the run's header, once per pack"
            );
            assert_eq!(crate::pack::age_header_len(&entries), header.len() as u64);
            for entry in &entries {
                // A nonce and one tag over the zstd frame: 32 bytes, no header of its own.
                let n = ids.iter().position(|id| *id == entry.id).unwrap() as u32;
                let frame = blob::encode(&chunk(n), None).unwrap().len();
                assert_eq!(entry.length as usize, frame + 32);
            }
        }
        // The run reads its own chunks without the identity.
        assert_eq!(store.read(&ids[3]).await.unwrap(), chunk(3));

        let fresh = ChunkStore::open(&storage, key.clone(), None).await.unwrap();
        let err = fresh.read(&ids[3]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let other = ChunkStore::open(&storage, key.clone(), None)
            .await
            .unwrap()
            .with_identity(age::x25519::Identity::generate());
        let err = other.read(&ids[3]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
        let reader = ChunkStore::open(&storage, key, None)
            .await
            .unwrap()
            .with_identity(identity);
        let many = reader.read_many(&ids).await.unwrap();
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(many[id], chunk(n as u32));
        }
    }

    #[tokio::test]
    async fn packs_of_whole_age_file_blobs_written_before_the_run_header_still_read() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let key = ChunkIdKey::from_bytes([8; 32]);
        let identity = age::x25519::Identity::generate();
        // What coffer wrote until 2026-12-07: a version 1 pack, each blob a whole age file.
        let mut packs = PackWriter::new(&storage);
        let mut index = IndexWriter::new(&storage);
        let mut ids = Vec::new();
        for n in 0..5u32 {
            let plain = chunk(n);
            let frame = blob::encode(&plain, None).unwrap();
            let recipient = identity.to_public();
            let encryptor =
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .unwrap();
            let mut old = Vec::new();
            let mut w = encryptor.wrap_output(&mut old).unwrap();
            w.write_all(&frame).unwrap();
            w.finish().unwrap();
            let id = key.id(&plain);
            ids.push(id);
            for pack in packs.add(id, plain.len() as u32, &old).await.unwrap() {
                index.add(pack).await.unwrap();
            }
        }
        for pack in packs.flush().await.unwrap() {
            index.add(pack).await.unwrap();
        }
        index.flush().await.unwrap();
        let store = ChunkStore::open(&storage, key, None)
            .await
            .unwrap()
            .with_identity(identity);
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(store.read(id).await.unwrap(), chunk(n as u32));
        }
    }

    fn at(offset: u64, length: u32) -> (ChunkId, Location) {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&offset.to_be_bytes());
        (
            ChunkId(id),
            Location {
                pack: PackId([1; 32]),
                age_header: 0,
                offset,
                length,
                raw_length: length,
            },
        )
    }

    #[test]
    fn neighbouring_blobs_are_one_read_and_distant_ones_are_not() {
        let gap = MAX_READ_GAP;
        let blobs = [
            at(0, 100),
            at(100, 100),
            at(200 + gap, 100),
            at(300 + 2 * gap + 1, 100),
        ];
        let runs: Vec<usize> = spans(&blobs).iter().map(|r| r.len()).collect();
        assert_eq!(
            runs,
            [3, 1],
            "a gap of MAX_READ_GAP is read through, one more byte is not"
        );
        let big = (MAX_READ_SPAN / 2) as u32;
        let blobs = [at(0, big), at(big as u64, big), at(2 * big as u64, 10)];
        let runs: Vec<usize> = spans(&blobs).iter().map(|r| r.len()).collect();
        assert_eq!(runs, [2, 1], "no read spans more than MAX_READ_SPAN");
        assert!(spans(&[]).is_empty());
    }
}

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

use std::collections::HashSet;

use coffer_core::error::{Error, Result};
use coffer_core::storage::Storage;

use crate::blob;
use crate::chunk_id::{ChunkId, ChunkIdKey};
use crate::gc::ChunkSet;
use crate::index::{ChunkIndex, IndexWriter, Location};
use crate::pack::{PackInfo, PackReader, PackWriter};

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
    index: ChunkIndex,
    packs: PackWriter<'a>,
    pending: HashSet<ChunkId>,
    avoided: ChunkSet,
    index_writer: IndexWriter<'a>,
    stats: WriteStats,
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
            index,
            packs: PackWriter::new(storage),
            pending: HashSet::new(),
            avoided: ChunkSet::default(),
            index_writer: IndexWriter::new(storage),
            stats: WriteStats::default(),
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

    /// Decrypts blobs with `identity` when reading (needed for encrypted repositories).
    pub fn with_identity(mut self, identity: age::x25519::Identity) -> Self {
        self.identity = Some(identity);
        self
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

    /// What has been written so far.
    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Stores a chunk unless the repository already has it; returns its id and whether it was
    /// stored now.
    pub async fn write(&mut self, plain: &[u8]) -> Result<(ChunkId, bool)> {
        let id = self.key.id(plain);
        let known = self.index.contains(&id) && !self.avoided.contains(&id);
        if known || self.pending.contains(&id) {
            self.stats.deduplicated += 1;
            return Ok((id, false));
        }
        let raw_length = u32::try_from(plain.len())
            .map_err(|_| Error::other(format!("a chunk of {} bytes", plain.len())))?;
        let encoded = blob::encode(plain, self.recipient.as_ref())?;
        self.stats.stored += 1;
        self.stats.raw_bytes += plain.len() as u64;
        self.stats.stored_bytes += encoded.len() as u64;
        self.pending.insert(id);
        if let Some(pack) = self.packs.add(id, raw_length, &encoded).await? {
            self.pack_stored(pack).await?;
        }
        Ok((id, true))
    }

    /// Stores the pack being filled and the index file for every pack not yet in one.
    pub async fn flush(&mut self) -> Result<()> {
        if let Some(pack) = self.packs.flush().await? {
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

    /// Reads chunk `id` back: one range read of its blob, decoded and checked against `id`. A
    /// chunk the index does not know is `NotFound`; one written but not yet flushed too.
    pub async fn read(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let at = self
            .index
            .get(id)
            .ok_or_else(|| Error::not_found(format!("chunk {id} is in no stored pack")))?;
        let blob = PackReader::new(self.storage)
            .read_blob(&at.pack, at.offset, at.length)
            .await?;
        self.decode(id, &at, &blob)
    }

    /// The storage the store reads and writes.
    pub(crate) fn storage(&self) -> &'a dyn Storage {
        self.storage
    }

    /// Decodes the blob of chunk `id`, found at `at`, and checks it against `id` and the plain
    /// length the index records.
    pub(crate) fn decode(&self, id: &ChunkId, at: &Location, blob: &[u8]) -> Result<Vec<u8>> {
        let plain = blob::decode(id, blob, &self.key, self.identity.as_ref())
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
}

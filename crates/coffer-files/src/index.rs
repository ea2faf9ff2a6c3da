//! The chunk index: which pack holds which chunk, where.
//!
//! In memory it is a [`ChunkIndex`], built from every index file at the start of a run and
//! consulted before each chunk is stored: a chunk it already has is never stored again. On
//! storage it is a set of index files `index/ID`, each the JSON of some packs' headers (format in
//! `docs/FORMAT.md`), `ID` the SHA-256 of the file's bytes, so a read verifies it. An index file
//! is written only after every pack it lists, so whatever an index file names exists.
//!
//! Packs describe themselves, so the index is a cache: [`rebuild`] makes it again from the pack
//! headers alone.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use coffer_core::error::{Error, ErrorKind, Result};
use coffer_core::storage::Storage;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunk_id::ChunkId;
use crate::pack::{
    ENTRY_SIZE, PackEntry, PackId, PackInfo, PackReader, TRAILER_SIZE, age_header_len,
};
use crate::retry::Retry;

/// Where index files live.
pub const INDEX: &str = "index/";
/// How many index files (or pack headers, for [`rebuild`]) are read at once.
pub const CONCURRENT_READS: usize = 16;
/// An index file is written once it lists this many blobs (about 7 MiB of JSON).
pub const BLOBS_PER_FILE: usize = 50_000;

/// Where a chunk is: its pack, the blob's place in it, and the chunk's plain length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The pack holding the blob.
    pub pack: PackId,
    /// How long the age header the pack begins with is (0: none, its blobs stand alone); the
    /// blob is sealed under that header's key ([`crate::blob_key`]).
    pub age_header: u32,
    /// The blob's offset in the pack.
    pub offset: u64,
    /// The blob's length.
    pub length: u32,
    /// The chunk's plain length.
    pub raw_length: u32,
}

/// A location as kept in memory: the pack as a number into [`ChunkIndex`]'s pack table, and a
/// 32-bit offset (a pack is at most [`TARGET_SIZE`](crate::pack::TARGET_SIZE) plus one blob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
}

/// Hashes a [`ChunkId`] by its first eight bytes, which are already uniformly random (see its
/// `Hash`); anything else is hashed by its last written `u64`. For sets and maps keyed by chunk
/// ids ([`crate::gc::ChunkSet`]).
#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Every chunk the repository holds, by id.
///
/// Compact: a fixed 32-byte key and a 16-byte [`Slot`] per chunk (48 bytes, plus the hash
/// table's control byte), with pack ids stored once in a table. Measured
/// (`memory_per_chunk_is_measured` below): 64 bytes per chunk at 100,000 chunks; in general 56
/// to 112, depending on where the table is in its growth (it doubles when 7/8 of its slots are
/// used). A million chunks take 56–112 MB; at the 1 MiB average chunk size that is a terabyte
/// of unique data. Each pack costs about 70 bytes more.
#[derive(Debug, Default, Clone)]
pub struct ChunkIndex {
    packs: Vec<PackId>,
    /// The age header length of each pack in `packs`.
    age_headers: Vec<u32>,
    pack_numbers: HashMap<PackId, u32>,
    chunks: HashMap<ChunkId, Slot, BuildHasherDefault<IdHasher>>,
}

impl ChunkIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many chunks it knows.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether it knows no chunk.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Whether the repository holds chunk `id`.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    /// Where chunk `id` is.
    pub fn get(&self, id: &ChunkId) -> Option<Location> {
        self.chunks.get(id).map(|slot| Location {
            pack: self.packs[slot.pack as usize],
            age_header: self.age_headers[slot.pack as usize],
            offset: slot.offset as u64,
            length: slot.length,
            raw_length: slot.raw_length,
        })
    }

    /// Records where chunk `id` is, unless it is already known (then the first place stays, and
    /// `false` is returned). An offset past 4 GiB is an integrity error: no pack coffer writes is
    /// that large.
    pub fn insert(&mut self, id: ChunkId, at: Location) -> Result<bool> {
        if self.chunks.contains_key(&id) {
            return Ok(false);
        }
        let offset = u32::try_from(at.offset).map_err(|_| {
            Error::integrity(format!(
                "chunk {id}: offset {} in pack {} is past any pack's size",
                at.offset, at.pack
            ))
        })?;
        let pack = match self.pack_numbers.get(&at.pack) {
            Some(&n) => n,
            None => {
                let n = u32::try_from(self.packs.len()).expect("fewer than 2^32 packs");
                self.packs.push(at.pack);
                self.age_headers.push(at.age_header);
                self.pack_numbers.insert(at.pack, n);
                n
            }
        };
        self.chunks.insert(
            id,
            Slot {
                pack,
                offset,
                length: at.length,
                raw_length: at.raw_length,
            },
        );
        Ok(true)
    }

    /// Forgets chunk `id`; returns whether it was known.
    pub fn remove(&mut self, id: &ChunkId) -> bool {
        self.chunks.remove(id).is_some()
    }

    /// Records every blob of a pack (`entries` in pack order: the first says how long its age
    /// header is).
    pub fn add_pack(&mut self, pack: &PackId, entries: &[PackEntry]) -> Result<()> {
        let age_header = u32::try_from(age_header_len(entries))
            .ok()
            .filter(|&len| len as usize <= crate::blob_key::MAX_HEADER)
            .ok_or_else(|| {
                Error::integrity(format!(
                    "pack {pack}: its first blob starts past any age header's end"
                ))
            })?;
        for entry in entries {
            self.insert(
                entry.id,
                Location {
                    pack: *pack,
                    age_header,
                    offset: entry.offset,
                    length: entry.length,
                    raw_length: entry.raw_length,
                },
            )?;
        }
        Ok(())
    }

    /// Every chunk and its place, sorted by chunk id (for comparisons and checks).
    pub fn entries(&self) -> Vec<(ChunkId, Location)> {
        let mut all: Vec<_> = self
            .chunks
            .keys()
            .map(|id| (*id, self.get(id).expect("listed")))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// The packs it refers to, in the order first seen.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// The size each pack must have for what the index places in it: the end of its last
    /// blob, plus a header entry per blob and the trailer. A chunk stored twice (two runs that
    /// raced) is placed once, so a pack may hold more blobs than the index knows: the size is a
    /// lower bound, exact when no chunk is stored twice.
    pub fn implied_pack_sizes(&self) -> HashMap<PackId, u64> {
        let mut per_pack = vec![(0u64, 0u64); self.packs.len()];
        for slot in self.chunks.values() {
            let (blobs, end) = &mut per_pack[slot.pack as usize];
            *blobs += 1;
            *end = (*end).max(slot.offset as u64 + slot.length as u64);
        }
        self.packs
            .iter()
            .zip(per_pack)
            .map(|(pack, (blobs, end))| {
                (*pack, end + blobs * ENTRY_SIZE as u64 + TRAILER_SIZE as u64)
            })
            .collect()
    }

    /// Roughly the heap bytes it holds: each hash table's slots (a power of two, of which 7/8
    /// may be used: `capacity()` reports those) times its entry size plus one control byte, and
    /// the pack table.
    pub fn memory_bytes(&self) -> usize {
        fn slots(capacity: usize) -> usize {
            if capacity == 0 {
                0
            } else {
                (capacity * 8 / 7).next_power_of_two()
            }
        }
        let chunk = std::mem::size_of::<(ChunkId, Slot)>() + 1;
        let pack = std::mem::size_of::<(PackId, u32)>() + 1;
        slots(self.chunks.capacity()) * chunk
            + slots(self.pack_numbers.capacity()) * pack
            + self.packs.capacity() * std::mem::size_of::<PackId>()
            + self.age_headers.capacity() * std::mem::size_of::<u32>()
    }

    /// Loads every index file of the repository, up to [`CONCURRENT_READS`] at a time. A file
    /// whose SHA-256 is not its name, or that does not parse, is an integrity error naming it.
    pub async fn load(storage: &dyn Storage) -> Result<Self> {
        let keys: Vec<String> = storage
            .list(INDEX)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let mut index = Self::new();
        // Owned keys: a closure over borrowed ones makes this future `Send` for one lifetime
        // only (rust-lang/rust#102211), which a daemon job cannot await.
        let mut files = futures_util::stream::iter(keys)
            .map(move |key| async move { read_index_file(storage, &key).await })
            .buffered(CONCURRENT_READS);
        while let Some(file) = files.next().await {
            for pack in file? {
                index.add_pack(&pack.id, &pack.entries)?;
            }
        }
        Ok(index)
    }
}

impl PartialEq for ChunkIndex {
    /// Two indexes are equal when they place the same chunks in the same places.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.chunks.keys().all(|id| self.get(id) == other.get(id))
    }
}

impl Eq for ChunkIndex {}

/// The index made again from the pack headers alone, reading up to [`CONCURRENT_READS`] headers
/// at a time by range reads. Packs whose headers are damaged are returned beside it, with the
/// error, rather than failing the rebuild; a storage failure fails it.
pub async fn rebuild(storage: &dyn Storage) -> Result<(ChunkIndex, Vec<(PackId, Error)>)> {
    let reader = PackReader::new(storage);
    let packs = reader.list().await?;
    let mut index = ChunkIndex::new();
    let mut damaged = Vec::new();
    let mut headers = futures_util::stream::iter(packs.iter())
        .map(|(pack, _)| async move { (*pack, reader.read_header(pack).await) })
        .buffered(CONCURRENT_READS);
    while let Some((pack, header)) = headers.next().await {
        match header {
            Ok(entries) => index.add_pack(&pack, &entries)?,
            Err(e) if e.kind() == ErrorKind::Integrity => damaged.push((pack, e)),
            Err(e) => return Err(e),
        }
    }
    Ok((index, damaged))
}

/// An index file: `{"version": 1, "packs": [{"id", "blobs": [{"id", "offset", "length",
/// "raw_length"}]}]}`; version 2 when a pack it lists begins with an age header (its first blob
/// does not start at 0), so that a reader that cannot read such packs refuses the file.
#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    packs: Vec<IndexPack>,
}

#[derive(Serialize, Deserialize)]
struct IndexPack {
    id: String,
    blobs: Vec<IndexBlob>,
}

#[derive(Serialize, Deserialize)]
struct IndexBlob {
    id: String,
    offset: u64,
    length: u32,
    raw_length: u32,
}

/// The bytes of an index file listing `packs`.
pub fn encode_index_file(packs: &[PackInfo]) -> Vec<u8> {
    let sealed = packs.iter().any(|p| age_header_len(&p.entries) > 0);
    let file = IndexFile {
        version: if sealed { 2 } else { 1 },
        packs: packs
            .iter()
            .map(|p| IndexPack {
                id: p.id.to_hex(),
                blobs: p
                    .entries
                    .iter()
                    .map(|e| IndexBlob {
                        id: e.id.to_hex(),
                        offset: e.offset,
                        length: e.length,
                        raw_length: e.raw_length,
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut json = serde_json::to_vec(&file).expect("serializable");
    json.push(b'\n');
    zstd::bulk::compress(&json, INDEX_ZSTD_LEVEL).expect("compressing bytes in memory")
}

/// The zstd level index files are compressed with: their chunk ids are hexadecimal, half of
/// every byte redundant, and the field names repeat; a higher level than the blobs' costs little
/// for a file written once per run.
pub const INDEX_ZSTD_LEVEL: i32 = 9;

/// The most JSON an index file may decompress to: the 50,000 blobs of a full file take about
/// 7 MiB; a file claiming more is damaged.
const MAX_INDEX_JSON: usize = 64 * 1024 * 1024;

/// How a zstd frame begins (index files written before they were compressed begin with `{`).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Parses an index file read from `key`, after checking its SHA-256 against its name.
pub fn decode_index_file(key: &str, bytes: &[u8]) -> Result<Vec<PackInfo>> {
    let name = key.strip_prefix(INDEX).unwrap_or(key);
    if hex::encode(Sha256::digest(bytes)) != name {
        return Err(Error::integrity(format!(
            "index file {key}: its SHA-256 is not its name (the file is damaged)"
        )));
    }
    let json = if bytes.starts_with(&ZSTD_MAGIC) {
        std::borrow::Cow::Owned(decompress_index(bytes).map_err(|e| {
            Error::integrity(format!("index file {key}: it does not decompress: {e}"))
        })?)
    } else {
        std::borrow::Cow::Borrowed(bytes)
    };
    let file: IndexFile = serde_json::from_slice(&json)
        .map_err(|e| Error::integrity(format!("index file {key}: {e}")))?;
    if file.version != 1 && file.version != 2 {
        return Err(Error::integrity(format!(
            "index file {key}: unknown version {}",
            file.version
        )));
    }
    file.packs
        .into_iter()
        .map(|p| {
            let entries = p
                .blobs
                .into_iter()
                .map(|b| {
                    Ok(PackEntry {
                        id: ChunkId::from_hex(&b.id)?,
                        offset: b.offset,
                        length: b.length,
                        raw_length: b.raw_length,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let id = PackId::from_hex(&p.id)?;
            // The size is not recorded; nothing reads it from an index.
            Ok(PackInfo {
                id,
                size: 0,
                entries,
            })
        })
        .collect::<Result<Vec<_>>>()
        .map_err(|e: Error| e.context(format!("index file {key}")))
}

/// Decompresses an index file's one zstd frame, at most [`MAX_INDEX_JSON`] bytes of it.
fn decompress_index(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut json = Vec::new();
    zstd::stream::read::Decoder::new(bytes)?
        .take(MAX_INDEX_JSON as u64 + 1)
        .read_to_end(&mut json)?;
    if json.len() > MAX_INDEX_JSON {
        return Err(std::io::Error::other(format!(
            "more than {MAX_INDEX_JSON} bytes of JSON"
        )));
    }
    Ok(json)
}

async fn read_index_file(storage: &dyn Storage, key: &str) -> Result<Vec<PackInfo>> {
    let bytes = storage.get_bytes(key).await?;
    decode_index_file(key, &bytes)
}

/// Writes index files for packs as they are stored: one file per [`BLOBS_PER_FILE`] blobs, and
/// one for the rest at [`IndexWriter::flush`]. Give it a pack only after the pack is stored.
#[derive(Debug)]
pub struct IndexWriter<'a> {
    storage: &'a dyn Storage,
    retry: Retry,
    per_file: usize,
    pending: Vec<PackInfo>,
    pending_blobs: usize,
}

impl<'a> IndexWriter<'a> {
    /// A writer into `storage`.
    pub fn new(storage: &'a dyn Storage) -> Self {
        Self {
            storage,
            retry: Retry::default(),
            per_file: BLOBS_PER_FILE,
            pending: Vec::new(),
            pending_blobs: 0,
        }
    }

    /// Writes a file every `blobs` blobs instead (tests).
    pub fn with_blobs_per_file(mut self, blobs: usize) -> Self {
        self.per_file = blobs.max(1);
        self
    }

    /// Records a stored pack; returns the key of the index file written, if this filled one.
    pub async fn add(&mut self, pack: PackInfo) -> Result<Option<String>> {
        self.pending_blobs += pack.entries.len();
        self.pending.push(pack);
        if self.pending_blobs >= self.per_file {
            return self.flush().await;
        }
        Ok(None)
    }

    /// Writes an index file for the packs recorded since the last one, if any.
    pub async fn flush(&mut self) -> Result<Option<String>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let bytes = encode_index_file(&self.pending);
        let key = format!("{INDEX}{}", hex::encode(Sha256::digest(&bytes)));
        let body = bytes::Bytes::from(bytes);
        self.retry
            .run(&key, || self.storage.put(&key, body.clone()))
            .await
            .map_err(|e| e.context(format!("storing index file {key}")))?;
        self.pending.clear();
        self.pending_blobs = 0;
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::storage::LocalStorage;

    fn chunk(n: u32) -> ChunkId {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_le_bytes());
        id[4..8].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_le_bytes());
        ChunkId(id)
    }

    fn pack_info(pack: u8, chunks: std::ops::Range<u32>) -> PackInfo {
        PackInfo {
            id: PackId([pack; 32]),
            size: 0,
            entries: chunks
                .enumerate()
                .map(|(i, n)| PackEntry {
                    id: chunk(n),
                    offset: i as u64 * 100,
                    length: 100,
                    raw_length: 400,
                })
                .collect(),
        }
    }

    #[test]
    fn a_chunk_is_placed_once() {
        let mut index = ChunkIndex::new();
        let at = |pack: u8| Location {
            pack: PackId([pack; 32]),
            age_header: 170,
            offset: 7,
            length: 3,
            raw_length: 9,
        };
        assert!(index.insert(chunk(1), at(1)).unwrap());
        assert!(!index.insert(chunk(1), at(2)).unwrap());
        assert_eq!(index.get(&chunk(1)), Some(at(1)));
        assert!(index.contains(&chunk(1)));
        assert!(!index.contains(&chunk(2)));
        let far = Location {
            offset: 1 << 33,
            ..at(1)
        };
        assert!(index.insert(chunk(3), far).is_err());
    }

    #[test]
    fn memory_per_chunk_is_measured() {
        let mut index = ChunkIndex::new();
        for n in 0..100_000u32 {
            let at = Location {
                pack: PackId([(n / 1000) as u8; 32]),
                age_header: 0,
                offset: n as u64,
                length: 1,
                raw_length: 1,
            };
            index.insert(chunk(n), at).unwrap();
        }
        assert_eq!(std::mem::size_of::<(ChunkId, Slot)>(), 48);
        let per_chunk = index.memory_bytes() / index.len();
        // 100,000 chunks sit in a table of 131,072 slots: 49 × 131072 / 100000 ≈ 64 bytes.
        assert_eq!(per_chunk, 64, "{per_chunk} bytes per chunk");
    }

    #[test]
    fn index_files_are_compressed_and_plain_json_ones_still_read() {
        let packs: Vec<PackInfo> = (0..20)
            .map(|p| pack_info(p, p as u32 * 50..p as u32 * 50 + 50))
            .collect();
        let bytes = encode_index_file(&packs);
        assert!(bytes.starts_with(&ZSTD_MAGIC));
        let json = decompress_index(&bytes).unwrap();
        assert!(json.starts_with(b"{\"version\":1,") && json.ends_with(b"\n"));
        assert!(
            bytes.len() * 10 < json.len() * 6,
            "{} compressed bytes for {} of JSON",
            bytes.len(),
            json.len()
        );
        // A file written before index files were compressed: the same JSON, plain.
        let key = format!("{INDEX}{}", hex::encode(Sha256::digest(&json)));
        assert_eq!(decode_index_file(&key, &json).unwrap(), packs);
        // A frame that decompresses to something other than an index is damaged.
        let frame = zstd::bulk::compress(b"not json", 3).unwrap();
        let key = format!("{INDEX}{}", hex::encode(Sha256::digest(&frame)));
        let err = decode_index_file(&key, &frame).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        let mut cut = bytes[..bytes.len() / 2].to_vec();
        cut.extend_from_slice(&[0; 8]);
        let key = format!("{INDEX}{}", hex::encode(Sha256::digest(&cut)));
        let err = decode_index_file(&key, &cut).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    }

    #[test]
    fn index_files_round_trip_and_are_verified_by_name() {
        let packs = vec![pack_info(1, 0..3), pack_info(2, 3..5)];
        let bytes = encode_index_file(&packs);
        let key = format!("{INDEX}{}", hex::encode(Sha256::digest(&bytes)));
        let back = decode_index_file(&key, &bytes).unwrap();
        assert_eq!(back, packs);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        let err = decode_index_file(&key, &bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
    }

    #[test]
    fn a_pack_with_an_age_header_makes_its_index_file_version_2_and_its_locations_carry_it() {
        let mut sealed = pack_info(3, 0..2);
        for entry in &mut sealed.entries {
            entry.offset += 171;
        }
        let packs = vec![pack_info(1, 2..4), sealed.clone()];
        let bytes = encode_index_file(&packs);
        let json = decompress_index(&bytes).unwrap();
        assert!(json.starts_with(b"{\"version\":2,"));
        let key = format!("{INDEX}{}", hex::encode(Sha256::digest(&bytes)));
        assert_eq!(decode_index_file(&key, &bytes).unwrap(), packs);
        let mut index = ChunkIndex::new();
        for info in &packs {
            index.add_pack(&info.id, &info.entries).unwrap();
        }
        assert_eq!(index.get(&chunk(0)).unwrap().age_header, 171);
        assert_eq!(index.get(&chunk(2)).unwrap().age_header, 0);
        // An index file of a newer version is refused, not misread.
        let newer = String::from_utf8(json)
            .unwrap()
            .replace("\"version\":2", "\"version\":3");
        let key = format!("{INDEX}{}", hex::encode(Sha256::digest(newer.as_bytes())));
        let err = decode_index_file(&key, newer.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unknown version 3"), "{err}");
    }

    #[test]
    fn a_pack_must_hold_its_blobs_header_and_trailer() {
        let mut index = ChunkIndex::new();
        for info in [pack_info(1, 0..3), pack_info(2, 3..4)] {
            index.add_pack(&info.id, &info.entries).unwrap();
        }
        // A chunk already placed in pack 1 is not placed in pack 2 again.
        index
            .add_pack(&PackId([2; 32]), &pack_info(2, 0..1).entries)
            .unwrap();
        let sizes = index.implied_pack_sizes();
        assert_eq!(sizes[&PackId([1; 32])], 300 + 3 * 48 + 16);
        assert_eq!(sizes[&PackId([2; 32])], 100 + 48 + 16);
    }

    #[tokio::test]
    async fn an_empty_repository_has_an_empty_index() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().join("never-written"));
        assert!(ChunkIndex::load(&storage).await.unwrap().is_empty());
        let (rebuilt, damaged) = rebuild(&storage).await.unwrap();
        assert!(rebuilt.is_empty() && damaged.is_empty());
    }

    #[tokio::test]
    async fn written_index_files_load_into_the_same_index() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let mut writer = IndexWriter::new(&storage).with_blobs_per_file(4);
        let mut expected = ChunkIndex::new();
        let mut files = Vec::new();
        for p in 0..5u8 {
            let info = pack_info(p, p as u32 * 3..p as u32 * 3 + 3);
            expected.add_pack(&info.id, &info.entries).unwrap();
            files.extend(writer.add(info).await.unwrap());
        }
        files.extend(writer.flush().await.unwrap());
        assert!(writer.flush().await.unwrap().is_none());
        // 3 blobs a pack, a file every 4 blobs or more: packs 0+1, 2+3, then 4.
        assert_eq!(files.len(), 3);
        let loaded = ChunkIndex::load(&storage).await.unwrap();
        assert_eq!(loaded.len(), 15);
        assert_eq!(loaded, expected);
    }
}

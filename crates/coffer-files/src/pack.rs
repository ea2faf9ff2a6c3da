//! Pack files: many blobs in one object, so a million small files do not become a million
//! objects.
//!
//! A pack is the blobs one after another, then a header listing them, then a fixed 16-byte
//! trailer (layout in `docs/FORMAT.md`, and in [`seal`]). In an encrypted repository the blobs
//! are preceded by the age header of the run that wrote them ([`crate::blob_key`]), and the
//! trailer says version 2:
//!
//! ```text
//! [age header] | blob 0 | … | blob n-1 | entry 0 | … | entry n-1 | n (u32 LE) | version (u32 LE) | "coffpack"
//! entry: chunk id (32 bytes) | offset (u64 LE) | length (u32 LE) | raw length (u32 LE)
//! ```
//!
//! The first blob starts where the age header ends, so the header's length is the first entry's
//! offset ([`age_header_len`]): 0 in a version 1 pack, which has none.
//!
//! The header makes a pack self-describing: the chunk index can be rebuilt from the packs alone.
//! A pack is stored at `packs/XX/PACKID`, `PACKID` the SHA-256 of its bytes in hex and `XX` its
//! first two digits, so reading a pack whole verifies it. A single blob is read by a range read
//! ([`PackReader::read_blob`]) and verified by its chunk id when decoded
//! ([`blob::decode`](crate::blob::decode)).

use std::fmt;

use coffer_core::error::{Error, Result};
use coffer_core::storage::Storage;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::chunk_id::ChunkId;
use crate::retry::Retry;

/// Where packs live.
pub const PACKS: &str = "packs/";
/// The size a pack is closed at: a pack holds blobs until it reaches 16 MiB or the next blob
/// would take it past that, so its blobs take at most 16 MiB (unless a single blob is larger).
pub const TARGET_SIZE: usize = 16 * 1024 * 1024;
/// The last eight bytes of every pack.
pub const MAGIC: &[u8; 8] = b"coffpack";
/// The version of a pack without an age header (a plain repository, or one written before
/// 2026-12-08 whose blobs are whole age files).
pub const VERSION_PLAIN: u32 = 1;
/// The version of a pack whose blobs follow an age header and are sealed under its key.
pub const VERSION_SEALED: u32 = 2;
/// Bytes per header entry.
pub const ENTRY_SIZE: usize = 48;
/// Bytes of the trailer: entry count, header version, magic.
pub const TRAILER_SIZE: usize = 16;

/// A pack's name: SHA-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    /// The id of a pack whose bytes are `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The id as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hexadecimal digits (an integrity error otherwise: ids come from stored objects).
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(text, &mut id)
            .map_err(|_| Error::integrity(format!("invalid pack id {text:?}")))?;
        Ok(Self(id))
    }

    /// The object key: `packs/XX/PACKID`.
    pub fn key(&self) -> String {
        let hex = self.to_hex();
        format!("{PACKS}{}/{hex}", &hex[..2])
    }

    /// The pack a listed key names, if it is one (`packs/XX/PACKID` with matching `XX`).
    pub fn from_key(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(PACKS)?;
        let (dir, name) = rest.split_once('/')?;
        let id = Self::from_hex(name).ok()?;
        (dir == &name[..2] && name == id.to_hex()).then_some(id)
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({})", &self.to_hex()[..16])
    }
}

/// One blob as a pack header lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// The chunk the blob encodes.
    pub id: ChunkId,
    /// Where the blob starts in the pack.
    pub offset: u64,
    /// The blob's length in the pack.
    pub length: u32,
    /// The chunk's plain length.
    pub raw_length: u32,
}

/// How long the age header before a pack's blobs is: where its first blob starts (0 in a pack
/// without one). `entries` in pack order.
pub fn age_header_len(entries: &[PackEntry]) -> u64 {
    entries.first().map_or(0, |first| first.offset)
}

/// A pack written: its id, size and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// Its name.
    pub id: PackId,
    /// Its size in bytes.
    pub size: u64,
    /// Its blobs, in the order they are stored.
    pub entries: Vec<PackEntry>,
}

/// Appends the header and trailer to `blobs` (whose contents `entries` describe, in order, after
/// the age header when the first entry does not start at 0) and returns the finished pack's id.
pub fn seal(blobs: &mut Vec<u8>, entries: &[PackEntry]) -> PackId {
    let version = if age_header_len(entries) > 0 {
        VERSION_SEALED
    } else {
        VERSION_PLAIN
    };
    blobs.reserve(entries.len() * ENTRY_SIZE + TRAILER_SIZE);
    for entry in entries {
        blobs.extend_from_slice(&entry.id.0);
        blobs.extend_from_slice(&entry.offset.to_le_bytes());
        blobs.extend_from_slice(&entry.length.to_le_bytes());
        blobs.extend_from_slice(&entry.raw_length.to_le_bytes());
    }
    let count = u32::try_from(entries.len()).expect("a pack holds fewer than 2^32 blobs");
    blobs.extend_from_slice(&count.to_le_bytes());
    blobs.extend_from_slice(&version.to_le_bytes());
    blobs.extend_from_slice(MAGIC);
    PackId::of(blobs)
}

/// What a pack's trailer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// How many entries the header has.
    pub count: usize,
    /// [`VERSION_PLAIN`] or [`VERSION_SEALED`].
    pub version: u32,
}

/// Parses a pack's trailer (its last [`TRAILER_SIZE`] bytes).
pub fn parse_trailer(pack: &PackId, size: u64, trailer: &[u8]) -> Result<Trailer> {
    let damaged = |what: &str| Error::integrity(format!("pack {pack}: {what}"));
    if trailer.len() != TRAILER_SIZE || size < TRAILER_SIZE as u64 {
        return Err(damaged("too short for a pack trailer"));
    }
    if &trailer[8..] != MAGIC {
        return Err(damaged("no pack trailer (the magic is missing)"));
    }
    let version = u32::from_le_bytes(trailer[4..8].try_into().expect("4 bytes"));
    if version != VERSION_PLAIN && version != VERSION_SEALED {
        return Err(damaged(&format!(
            "unknown header version {version} (a newer coffer wrote it?)"
        )));
    }
    let count = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as u64;
    if count * ENTRY_SIZE as u64 + TRAILER_SIZE as u64 > size {
        return Err(damaged("the header is longer than the pack"));
    }
    Ok(Trailer {
        count: count as usize,
        version,
    })
}

/// Parses a pack's header entries (`count` × [`ENTRY_SIZE`] bytes just before the trailer) and
/// checks that they tile the pack's blob area exactly: in order, from offset 0 in a version 1
/// pack, from the end of the age header (at least one byte, at most
/// [`MAX_HEADER`](crate::blob_key::MAX_HEADER)) in a version 2 pack, without gaps or overlaps,
/// ending where the header begins.
pub fn parse_entries(
    pack: &PackId,
    size: u64,
    trailer: Trailer,
    header: &[u8],
) -> Result<Vec<PackEntry>> {
    let damaged = |what: String| Error::integrity(format!("pack {pack}: {what}"));
    if !header.len().is_multiple_of(ENTRY_SIZE) {
        return Err(damaged("a partial header entry".into()));
    }
    let Some(blob_area) = size.checked_sub(header.len() as u64 + TRAILER_SIZE as u64) else {
        return Err(damaged("the header is longer than the pack".into()));
    };
    if header.len() != trailer.count * ENTRY_SIZE {
        return Err(damaged(format!(
            "{} header bytes for {} entries",
            header.len(),
            trailer.count
        )));
    }
    let mut next = match (trailer.version, header.get(32..40)) {
        (VERSION_SEALED, Some(first)) => {
            let start = u64::from_le_bytes(first.try_into().expect("8 bytes"));
            if start == 0 || start > crate::blob_key::MAX_HEADER as u64 {
                return Err(damaged(format!(
                    "a version 2 pack whose age header is {start} bytes long"
                )));
            }
            start
        }
        _ => 0,
    };
    let mut entries = Vec::with_capacity(header.len() / ENTRY_SIZE);
    for raw in header.chunks_exact(ENTRY_SIZE) {
        let entry = PackEntry {
            id: ChunkId(raw[..32].try_into().expect("32 bytes")),
            offset: u64::from_le_bytes(raw[32..40].try_into().expect("8 bytes")),
            length: u32::from_le_bytes(raw[40..44].try_into().expect("4 bytes")),
            raw_length: u32::from_le_bytes(raw[44..48].try_into().expect("4 bytes")),
        };
        if entry.offset != next {
            return Err(damaged(format!(
                "blob {} starts at {} instead of {next}",
                entry.id, entry.offset
            )));
        }
        next += entry.length as u64;
        entries.push(entry);
    }
    if next != blob_area {
        return Err(damaged(format!(
            "the blobs end at {next}, the header begins at {blob_area}"
        )));
    }
    Ok(entries)
}

/// Checks a whole pack read back: its SHA-256 must be its name; returns its entries.
pub fn parse(pack: &PackId, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    if PackId::of(bytes) != *pack {
        return Err(Error::integrity(format!(
            "pack {pack}: its SHA-256 is not its name (the pack is damaged)"
        )));
    }
    let size = bytes.len() as u64;
    let trailer = &bytes[bytes.len().saturating_sub(TRAILER_SIZE)..];
    let trailer = parse_trailer(pack, size, trailer)?;
    let header_start = bytes.len() - TRAILER_SIZE - trailer.count * ENTRY_SIZE;
    parse_entries(
        pack,
        size,
        trailer,
        &bytes[header_start..bytes.len() - TRAILER_SIZE],
    )
}

/// Gathers blobs into packs of about [`TARGET_SIZE`] and uploads each when it is full.
///
/// Uploads run in the background ([`Storage::shared`]) while the next pack fills, at most
/// [`UPLOADS_IN_FLIGHT`] at once: a backup does not wait for a pack's write (and, on a folder,
/// its `fsync`) before reading on. A pack is reported ([`PackInfo`]) only once it is stored, so a
/// caller never indexes a pack that is not there. Uploads still running when the writer is
/// dropped (the run failed or was interrupted) are aborted: a pack stored without an index file
/// names no chunk any snapshot relies on, and a prune removes it.
///
/// Memory: one pack being filled (at most the target, allocated once per pack) and the packs
/// being uploaded. Each upload is retried ([`Retry`]) on transient failures; the pack's
/// name depends only on its bytes, so a retried write can only write the same object again.
#[derive(Debug)]
pub struct PackWriter<'a> {
    storage: &'a dyn Storage,
    /// The handle background uploads own, if the storage gives one.
    shared: Option<std::sync::Arc<dyn Storage>>,
    target: usize,
    retry: Retry,
    buf: Vec<u8>,
    /// The age header each pack begins with, in an encrypted repository.
    age_header: Option<std::sync::Arc<[u8]>>,
    entries: Vec<PackEntry>,
    uploads: std::collections::VecDeque<tokio::task::JoinHandle<Result<PackInfo>>>,
}

/// Room a pack's buffer leaves for its header: 1 MiB, the header of 21,845 blobs (a pack of
/// smaller blobs grows its buffer once).
const HEADER_ROOM: usize = 1024 * 1024;

/// How many packs a [`PackWriter`] uploads at once.
pub const UPLOADS_IN_FLIGHT: usize = 2;

impl<'a> PackWriter<'a> {
    /// A writer into `storage` with the default target size and retry.
    pub fn new(storage: &'a dyn Storage) -> Self {
        Self {
            storage,
            shared: storage.shared(),
            target: TARGET_SIZE,
            retry: Retry::default(),
            buf: Vec::new(),
            age_header: None,
            entries: Vec::new(),
            uploads: std::collections::VecDeque::new(),
        }
    }

    /// Begins every pack from now on with `header`, the age header the blobs added are sealed
    /// under ([`crate::blob_key::BlobKey::header`]). Set it before the first blob of a pack: the
    /// pack being filled keeps what it began with.
    pub fn with_age_header(mut self, header: std::sync::Arc<[u8]>) -> Self {
        self.set_age_header(header);
        self
    }

    /// [`PackWriter::with_age_header`] on a writer in place.
    pub fn set_age_header(&mut self, header: std::sync::Arc<[u8]>) {
        debug_assert!(!header.is_empty(), "an age header has bytes");
        self.age_header = Some(header);
    }

    /// Closes packs at `target` bytes instead (tests use small packs).
    pub fn with_target_size(mut self, target: usize) -> Self {
        self.target = target.max(1);
        self
    }

    /// Retries uploads with `retry`.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The blobs added since the last pack was closed.
    pub fn pending(&self) -> &[PackEntry] {
        &self.entries
    }

    /// Adds the blob of chunk `id` (whose plain length is `raw_length`). A blob that would take
    /// the pack past the target closes it first, and a pack that reaches the target is closed:
    /// its upload starts. Returns the packs whose uploads have finished meanwhile.
    pub async fn add(
        &mut self,
        id: ChunkId,
        raw_length: u32,
        blob: &[u8],
    ) -> Result<Vec<PackInfo>> {
        let length = u32::try_from(blob.len())
            .map_err(|_| Error::other(format!("chunk {id}: a blob of {} bytes", blob.len())))?;
        let mut stored = Vec::new();
        if !self.entries.is_empty() && self.buf.len() + blob.len() > self.target {
            stored.extend(self.close().await?);
        }
        if self.buf.capacity() == 0 {
            // One allocation per pack: the target (or the one blob larger than it) and room
            // for the header.
            self.buf
                .reserve_exact(self.target.max(blob.len()) + HEADER_ROOM);
        }
        if self.buf.is_empty()
            && let Some(header) = &self.age_header
        {
            self.buf.extend_from_slice(header);
        }
        self.entries.push(PackEntry {
            id,
            offset: self.buf.len() as u64,
            length,
            raw_length,
        });
        self.buf.extend_from_slice(blob);
        if self.buf.len() >= self.target {
            stored.extend(self.close().await?);
        }
        stored.extend(self.finished().await?);
        Ok(stored)
    }

    /// Closes the pack being filled, if it holds any blob, and waits for every upload; returns
    /// the packs stored, in the order they were closed.
    pub async fn flush(&mut self) -> Result<Vec<PackInfo>> {
        let mut stored = Vec::new();
        stored.extend(self.close().await?);
        while let Some(upload) = self.uploads.pop_front() {
            stored.push(join(upload).await?);
        }
        Ok(stored)
    }

    /// Starts the upload of the pack being filled; when [`UPLOADS_IN_FLIGHT`] are already
    /// running, first waits for the oldest and returns it. Without a shared handle on the storage
    /// the upload runs inline and is returned.
    async fn close(&mut self) -> Result<Option<PackInfo>> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let bytes = std::mem::take(&mut self.buf);
        let entries = std::mem::take(&mut self.entries);
        let Some(storage) = self.shared.clone() else {
            return store_pack(self.storage, &self.retry, bytes, entries)
                .await
                .map(Some);
        };
        let oldest = if self.uploads.len() >= UPLOADS_IN_FLIGHT {
            let oldest = self.uploads.pop_front().expect("uploads are running");
            Some(join(oldest).await?)
        } else {
            None
        };
        let retry = self.retry;
        let upload = async move { store_pack(storage.as_ref(), &retry, bytes, entries).await };
        self.uploads
            .push_back(tokio::spawn(tracing::Instrument::in_current_span(upload)));
        Ok(oldest)
    }

    /// The oldest upload, if it has finished.
    async fn finished(&mut self) -> Result<Option<PackInfo>> {
        if !self.uploads.front().is_some_and(|u| u.is_finished()) {
            return Ok(None);
        }
        let upload = self.uploads.pop_front().expect("checked above");
        join(upload).await.map(Some)
    }
}

impl Drop for PackWriter<'_> {
    fn drop(&mut self) {
        for upload in &self.uploads {
            upload.abort();
        }
    }
}

async fn join(upload: tokio::task::JoinHandle<Result<PackInfo>>) -> Result<PackInfo> {
    upload
        .await
        .map_err(|e| Error::other(format!("a pack upload stopped: {e}")))?
}

/// Seals a pack and stores it under its name.
///
/// Never under the name of a pack that exists: a prune may be deleting that pack (it holds
/// chunks marked as garbage, which a backup stores again, see `crate::gc`), and would delete ours
/// with it. An existing name means these very bytes are stored already; the last blob appended
/// once more gives other bytes, and another name.
async fn store_pack(
    storage: &dyn Storage,
    retry: &Retry,
    mut bytes: Vec<u8>,
    mut entries: Vec<PackEntry>,
) -> Result<PackInfo> {
    let mut blob_area = bytes.len();
    let mut id = seal(&mut bytes, &entries);
    while exists(storage, retry, &id).await? {
        let last = *entries.last().expect("a pack being stored holds a blob");
        bytes.truncate(blob_area);
        let start = last.offset as usize;
        bytes.extend_from_within(start..start + last.length as usize);
        entries.push(PackEntry {
            offset: blob_area as u64,
            ..last
        });
        blob_area = bytes.len();
        tracing::debug!(pack = %id, "a pack of these bytes exists: its last blob repeated");
        id = seal(&mut bytes, &entries);
    }
    let size = bytes.len() as u64;
    let key = id.key();
    let body = bytes::Bytes::from(bytes);
    retry
        .run(&key, || storage.put(&key, body.clone()))
        .await
        .map_err(|e| e.context(format!("storing pack {key}")))?;
    tracing::debug!(pack = %id, size, blobs = entries.len(), "pack stored");
    Ok(PackInfo { id, size, entries })
}

async fn exists(storage: &dyn Storage, retry: &Retry, id: &PackId) -> Result<bool> {
    let key = id.key();
    match retry.run(&key, || storage.head(&key)).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == coffer_core::error::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.context(format!("looking for pack {key}"))),
    }
}

/// Reads packs: single blobs by range, headers, or whole packs verified.
#[derive(Debug, Clone, Copy)]
pub struct PackReader<'a> {
    storage: &'a dyn Storage,
}

impl<'a> PackReader<'a> {
    /// A reader of the packs in `storage`.
    pub fn new(storage: &'a dyn Storage) -> Self {
        Self { storage }
    }

    /// Reads `length` bytes at `offset` of a pack: one blob, unverified until decoded.
    pub async fn read_blob(&self, pack: &PackId, offset: u64, length: u32) -> Result<Vec<u8>> {
        self.read_range(pack, offset, length as u64).await
    }

    /// Reads `length` bytes at `offset` of a pack: several neighbouring blobs in one request,
    /// each unverified until decoded.
    pub async fn read_span(&self, pack: &PackId, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.read_range(pack, offset, length).await
    }

    /// Reads the age header at the start of a version 2 pack, `len` bytes
    /// ([`age_header_len`] of its entries).
    pub async fn read_age_header(&self, pack: &PackId, len: u64) -> Result<Vec<u8>> {
        if len == 0 || len > crate::blob_key::MAX_HEADER as u64 {
            return Err(Error::integrity(format!(
                "pack {pack}: an age header of {len} bytes"
            )));
        }
        self.read_range(pack, 0, len).await
    }

    /// Reads a pack's header by range reads (its size, the trailer, then the entries). This
    /// checks the header's shape, not the pack's digest: [`PackReader::read_verified`] does.
    pub async fn read_header(&self, pack: &PackId) -> Result<Vec<PackEntry>> {
        let size = self.storage.head(&pack.key()).await?.size;
        if size < TRAILER_SIZE as u64 {
            return Err(Error::integrity(format!(
                "pack {pack}: {size} bytes is too short for a pack"
            )));
        }
        let trailer = self
            .read_range(pack, size - TRAILER_SIZE as u64, TRAILER_SIZE as u64)
            .await?;
        let trailer = parse_trailer(pack, size, &trailer)?;
        let header_len = (trailer.count * ENTRY_SIZE) as u64;
        let header = self
            .read_range(pack, size - TRAILER_SIZE as u64 - header_len, header_len)
            .await?;
        parse_entries(pack, size, trailer, &header)
    }

    /// Reads a whole pack and checks its SHA-256 against its name; returns its bytes and entries.
    pub async fn read_verified(&self, pack: &PackId) -> Result<(Vec<u8>, Vec<PackEntry>)> {
        let bytes = self.storage.get_bytes(&pack.key()).await?.to_vec();
        let entries = parse(pack, &bytes)?;
        Ok((bytes, entries))
    }

    /// Every pack in the repository, with its size. Objects under `packs/` whose names are not
    /// pack names are skipped with a warning.
    pub async fn list(&self) -> Result<Vec<(PackId, u64)>> {
        let mut packs = Vec::new();
        for object in self.storage.list(PACKS).await? {
            match PackId::from_key(&object.key) {
                Some(id) => packs.push((id, object.size)),
                None => tracing::warn!(key = %object.key, "not a pack name: skipped"),
            }
        }
        Ok(packs)
    }

    async fn read_range(&self, pack: &PackId, start: u64, len: u64) -> Result<Vec<u8>> {
        let key = pack.key();
        let mut reader = self.storage.get_range(&key, start, len).await?;
        let mut out = Vec::with_capacity(len as usize);
        reader
            .read_to_end(&mut out)
            .await
            .map_err(|e| Error::storage(format!("reading {key}: {e}")).transient())?;
        if out.len() as u64 != len {
            return Err(Error::integrity(format!(
                "pack {pack}: read {} bytes at {start} instead of {len}",
                out.len()
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::error::ErrorKind;
    use coffer_core::storage::LocalStorage;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn sealed(blobs: &[&[u8]]) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let mut bytes = Vec::new();
        let mut entries = Vec::new();
        for (i, blob) in blobs.iter().enumerate() {
            entries.push(PackEntry {
                id: id(i as u8),
                offset: bytes.len() as u64,
                length: blob.len() as u32,
                raw_length: 10 * blob.len() as u32,
            });
            bytes.extend_from_slice(blob);
        }
        let pack = seal(&mut bytes, &entries);
        (pack, bytes, entries)
    }

    #[test]
    fn the_layout_is_blobs_then_entries_then_the_trailer_in_version_1() {
        let (pack, bytes, entries) = sealed(&[b"abc", b"defgh"]);
        assert_eq!(bytes.len(), 8 + 2 * ENTRY_SIZE + TRAILER_SIZE);
        assert_eq!(&bytes[..8], b"abcdefgh");
        // Second entry: id, offset 3, length 5, raw length 50.
        let second = &bytes[8 + ENTRY_SIZE..8 + 2 * ENTRY_SIZE];
        assert_eq!(&second[..32], &[1u8; 32]);
        assert_eq!(&second[32..40], &3u64.to_le_bytes());
        assert_eq!(&second[40..44], &5u32.to_le_bytes());
        assert_eq!(&second[44..48], &50u32.to_le_bytes());
        assert_eq!(&bytes[bytes.len() - 16..], b"\x02\0\0\0\x01\0\0\0coffpack");
        assert_eq!(pack, PackId::of(&bytes));
        assert_eq!(parse(&pack, &bytes).unwrap(), entries);
    }

    #[test]
    fn pack_keys_fan_out_by_the_first_two_digits() {
        let pack = PackId([0xab; 32]);
        assert_eq!(pack.key(), format!("packs/ab/{}", "ab".repeat(32)));
        assert_eq!(PackId::from_key(&pack.key()), Some(pack));
        assert_eq!(
            PackId::from_key(&format!("packs/cd/{}", "ab".repeat(32))),
            None
        );
        assert_eq!(PackId::from_key("packs/ab/short"), None);
    }

    #[test]
    fn any_flipped_byte_fails_the_digest() {
        let (pack, bytes, _) = sealed(&[b"abc", b"defgh"]);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x80;
            let err = parse(&pack, &bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Integrity);
        }
    }

    #[test]
    fn headers_that_do_not_tile_the_pack_are_refused() {
        let pack = PackId([0; 32]);
        let (_, bytes, _) = sealed(&[b"abc", b"defgh"]);
        let size = bytes.len() as u64;
        let header = &bytes[8..bytes.len() - TRAILER_SIZE];
        let trailer = parse_trailer(&pack, size, &bytes[bytes.len() - TRAILER_SIZE..]).unwrap();
        parse_entries(&pack, size, trailer, header).unwrap();
        let mut gap = header.to_vec();
        gap[ENTRY_SIZE + 32] = 4; // second blob at 4 instead of 3
        assert!(parse_entries(&pack, size, trailer, &gap).is_err());
        let mut short = header.to_vec();
        short[ENTRY_SIZE + 40] = 4; // second blob 4 bytes long: ends before the header
        assert!(parse_entries(&pack, size, trailer, &short).is_err());
        let mut late = header.to_vec();
        late[32] = 1; // the first blob at 1: only a version 2 pack has bytes before it
        assert!(parse_entries(&pack, size, trailer, &late).is_err());
        let mut trailer = bytes[bytes.len() - TRAILER_SIZE..].to_vec();
        trailer[0] = 200; // more entries than the pack has room for
        assert!(parse_trailer(&pack, size, &trailer).is_err());
        assert!(parse_trailer(&pack, size, b"0123456789abcdef").is_err());
    }

    #[tokio::test]
    async fn a_pack_with_an_age_header_is_version_2_and_its_first_blob_starts_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let header: std::sync::Arc<[u8]> = b"age-encryption.org/v1\n--- header\n"[..].into();
        let mut writer = PackWriter::new(&storage)
            .with_target_size(20)
            .with_age_header(header.clone());
        let mut written = Vec::new();
        for n in 0..3u8 {
            written.extend(writer.add(id(n), 100, &[n; 8]).await.unwrap());
        }
        written.extend(writer.flush().await.unwrap());
        // Each pack begins with the header: 33 + 8 + 8 bytes pass the 20-byte target.
        let counts: Vec<usize> = written.iter().map(|p| p.entries.len()).collect();
        assert_eq!(counts, [1, 1, 1], "the header counts toward the target");
        let reader = PackReader::new(&storage);
        for info in &written {
            assert_eq!(age_header_len(&info.entries), header.len() as u64);
            let (bytes, entries) = reader.read_verified(&info.id).await.unwrap();
            assert_eq!(entries, info.entries);
            assert_eq!(&bytes[..header.len()], &header[..]);
            assert_eq!(
                &bytes[bytes.len() - 12..bytes.len() - 8],
                &2u32.to_le_bytes()
            );
            assert_eq!(reader.read_header(&info.id).await.unwrap(), info.entries);
            let len = age_header_len(&entries);
            assert_eq!(
                reader.read_age_header(&info.id, len).await.unwrap(),
                &header[..]
            );
        }
    }

    #[test]
    fn a_version_2_pack_whose_blobs_start_at_0_or_far_past_a_header_is_refused() {
        let pack = PackId([0; 32]);
        let (_, bytes, _) = sealed(&[b"abc", b"defgh"]);
        let size = bytes.len() as u64;
        let header = &bytes[8..bytes.len() - TRAILER_SIZE];
        let v2 = Trailer {
            count: 2,
            version: VERSION_SEALED,
        };
        let err = parse_entries(&pack, size, v2, header).unwrap_err();
        assert!(err.to_string().contains("age header is 0 bytes"), "{err}");
        let mut trailer = bytes[bytes.len() - TRAILER_SIZE..].to_vec();
        trailer[4] = 3;
        let err = parse_trailer(&pack, size, &trailer).unwrap_err();
        assert!(
            err.to_string().contains("unknown header version 3"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_writer_never_writes_under_the_name_of_a_pack_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let mut names = Vec::new();
        for _ in 0..3 {
            let mut writer = PackWriter::new(&storage);
            writer.add(id(1), 30, b"abc").await.unwrap();
            writer.add(id(2), 50, b"defgh").await.unwrap();
            names.extend(writer.flush().await.unwrap());
        }
        // The same blobs three times: three packs, the later ones with the last blob repeated.
        assert_eq!(names[0].entries.len(), 2);
        assert_eq!(names[1].entries.len(), 3);
        assert_eq!(names[2].entries.len(), 4);
        let reader = PackReader::new(&storage);
        assert_eq!(reader.list().await.unwrap().len(), 3);
        for info in &names {
            let (bytes, entries) = reader.read_verified(&info.id).await.unwrap();
            assert_eq!(entries, info.entries);
            let last = entries.last().unwrap();
            let at = last.offset as usize;
            assert_eq!(&bytes[at..at + last.length as usize], b"defgh");
        }
    }

    #[tokio::test]
    async fn the_writer_closes_packs_at_the_target_and_the_reader_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let mut writer = PackWriter::new(&storage).with_target_size(1000);
        let mut written = Vec::new();
        for n in 0..10u8 {
            let blob = vec![n; 300];
            written.extend(writer.add(id(n), 3000, &blob).await.unwrap());
        }
        written.extend(writer.flush().await.unwrap());
        assert!(writer.flush().await.unwrap().is_empty());
        // 300-byte blobs, closed before passing 1000 bytes: 3, 3, 3 and 1 blobs.
        let counts: Vec<usize> = written.iter().map(|p| p.entries.len()).collect();
        assert_eq!(counts, vec![3, 3, 3, 1]);

        let reader = PackReader::new(&storage);
        let mut listed = reader.list().await.unwrap();
        listed.sort();
        let mut expected: Vec<(PackId, u64)> = written.iter().map(|p| (p.id, p.size)).collect();
        expected.sort();
        assert_eq!(listed, expected);
        for info in &written {
            assert_eq!(reader.read_header(&info.id).await.unwrap(), info.entries);
            let (_, entries) = reader.read_verified(&info.id).await.unwrap();
            assert_eq!(entries, info.entries);
            for entry in &info.entries {
                let blob = reader
                    .read_blob(&info.id, entry.offset, entry.length)
                    .await
                    .unwrap();
                assert_eq!(blob, vec![entry.id.0[0]; 300]);
            }
        }
    }
}

//! A snapshot's listing: its [`Entry`] records as JSON Lines, stored as chunks, and the
//! [`SnapshotSummary`] that points at them.
//!
//! The listing is one byte stream (one record per line, in [`cmp_paths`] order) cut by the same
//! content-defined chunker as file contents and stored through the [`ChunkStore`]. A listing
//! that changed in a few places between two snapshots therefore shares most of its chunks with
//! the previous one. Neither writing nor reading holds more than a few chunks of it: the
//! [`ListingWriter`] keeps at most two maximum-sized chunks of lines, the [`ListingReader`] one
//! chunk, so a million-file tree costs the same memory as a small one.

use std::cmp::Ordering;

use coffer_core::error::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::chunk_id::ChunkId;
use crate::chunker::{Chunker, MAX_SIZE};
use crate::entry::{Entry, cmp_paths, display_path, is_under};
use crate::store::ChunkStore;

/// The version of the summary and listing format.
pub const SNAPSHOT_VERSION: u32 = 1;
/// How many skipped entries a summary names; past that it only counts them.
pub const MAX_SKIPPED_LISTED: usize = 1000;

/// An entry a snapshot could not record, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The path relative to the root (lossy for names that are not UTF-8).
    pub path: String,
    /// Why: vanished, changed while read, unreadable (with the error), unsupported type.
    pub reason: String,
}

/// What a snapshot is: where its listing is, what it holds, what it had to skip. Serialized into
/// the backup manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The source's name.
    pub source_name: String,
    /// The folder the snapshot was taken of.
    pub source_root: String,
    /// The listing's chunks, in order (64 hex digits each).
    #[serde(with = "chunk_ids")]
    pub listing: Vec<ChunkId>,
    /// Entries in the listing.
    pub entries: u64,
    /// Regular files (hard links not included).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hard links (second and later names of a file).
    pub hardlinks: u64,
    /// Bytes of the regular files' contents.
    pub bytes: u64,
    /// Plain bytes of content chunks this snapshot stored that the repository did not have.
    pub new_bytes: u64,
    /// Files whose chunk list was taken from the parent snapshot without reading them.
    pub reused_files: u64,
    /// Files read (chunked) in this snapshot.
    pub read_files: u64,
    /// How many entries were skipped (may exceed the length of `skipped`).
    pub skipped_count: u64,
    /// The first [`MAX_SKIPPED_LISTED`] skipped entries.
    pub skipped: Vec<Skipped>,
}

impl SnapshotSummary {
    /// An empty summary of the source `name` at `root`.
    pub fn new(name: impl Into<String>, root: impl Into<String>) -> Self {
        Self {
            version: SNAPSHOT_VERSION,
            source_name: name.into(),
            source_root: root.into(),
            listing: Vec::new(),
            entries: 0,
            files: 0,
            dirs: 0,
            symlinks: 0,
            hardlinks: 0,
            bytes: 0,
            new_bytes: 0,
            reused_files: 0,
            read_files: 0,
            skipped_count: 0,
            skipped: Vec::new(),
        }
    }

    /// Records a skipped entry.
    pub fn skip(&mut self, path: &[u8], reason: impl Into<String>) {
        let reason = reason.into();
        tracing::warn!(path = %display_path(path), reason = %reason, "entry skipped");
        self.skipped_count += 1;
        if self.skipped.len() < MAX_SKIPPED_LISTED {
            self.skipped.push(Skipped {
                path: display_path(path),
                reason,
            });
        }
    }
}

mod chunk_ids {
    use super::ChunkId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(ids: &[ChunkId], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter().map(ChunkId::to_hex))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChunkId>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|h| ChunkId::from_hex(h).map_err(D::Error::custom))
            .collect()
    }
}

/// Writes a listing: records in, chunks out.
///
/// Cutting must give the same chunks as chunking the whole stream at once, or listings would not
/// deduplicate between snapshots. A cut depends only on the bytes from the chunk's start up to
/// [`MAX_SIZE`] after it, so a chunk is final once the buffer holds `MAX_SIZE` bytes past its
/// start; the rest waits for more lines.
#[derive(Debug, Default)]
pub struct ListingWriter {
    buf: Vec<u8>,
    chunks: Vec<ChunkId>,
    last: Option<Vec<u8>>,
    entries: u64,
}

impl ListingWriter {
    /// An empty listing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `entry`, which must sort after the previous one (a bug otherwise).
    pub async fn push(&mut self, store: &mut ChunkStore<'_>, entry: &Entry) -> Result<()> {
        if let Some(last) = &self.last
            && cmp_paths(last, &entry.path) != Ordering::Less
        {
            return Err(Error::other(format!(
                "listing out of order: {} after {}",
                entry.display(),
                display_path(last)
            )));
        }
        self.last = Some(entry.path.clone());
        self.entries += 1;
        self.buf.extend_from_slice(&entry.to_json_line());
        if self.buf.len() >= 2 * MAX_SIZE {
            self.cut(store, false).await?;
        }
        Ok(())
    }

    async fn cut(&mut self, store: &mut ChunkStore<'_>, all: bool) -> Result<()> {
        let len = self.buf.len();
        let mut done = 0;
        for chunk in Chunker::new(&self.buf[..]) {
            let chunk = chunk?;
            if !all && chunk.offset as usize + MAX_SIZE > len {
                break;
            }
            let (id, _) = store.write(&chunk.data).await?;
            store.keep_local(&id, &chunk.data);
            self.chunks.push(id);
            done = chunk.offset as usize + chunk.data.len();
        }
        self.buf.drain(..done);
        Ok(())
    }

    /// Stores what is left; returns the listing's chunks and how many records it holds.
    pub async fn finish(mut self, store: &mut ChunkStore<'_>) -> Result<(Vec<ChunkId>, u64)> {
        self.cut(store, true).await?;
        Ok((self.chunks, self.entries))
    }

    /// Ends a snapshot: stores what is left of the listing, flushes `store` (every chunk the
    /// listing names is stored when this returns) and completes `summary` with the listing.
    pub async fn seal(
        self,
        store: &mut ChunkStore<'_>,
        mut summary: SnapshotSummary,
    ) -> Result<SnapshotSummary> {
        let (chunks, entries) = self.finish(store).await?;
        store.flush().await?;
        summary.listing = chunks;
        summary.entries = entries;
        tracing::info!(
            entries = summary.entries,
            files = summary.files,
            read = summary.read_files,
            reused = summary.reused_files,
            new_bytes = summary.new_bytes,
            skipped = summary.skipped_count,
            source = %summary.source_name,
            location = %summary.source_root,
            "snapshot taken"
        );
        Ok(summary)
    }
}

/// Reads a listing back, one [`Entry`] at a time, each chunk verified by the store and each
/// record checked ([`Entry::from_json_line`]). Records out of order are an integrity error: a
/// restore relies on directories coming before their contents.
///
/// The reader does not hold the store (each [`ListingReader::next`] is handed it), so a backup
/// can read its parent's listing while it writes through the same store.
#[derive(Debug)]
pub struct ListingReader {
    chunks: std::vec::IntoIter<ChunkId>,
    buf: Vec<u8>,
    at: usize,
    last: Option<Vec<u8>>,
    prefix: Option<Vec<u8>>,
}

impl ListingReader {
    /// A reader of the listing of `summary`.
    pub fn new(summary: &SnapshotSummary) -> Self {
        Self {
            chunks: summary.listing.clone().into_iter(),
            buf: Vec::new(),
            at: 0,
            last: None,
            prefix: None,
        }
    }

    /// Only the entries at or under `prefix` (a relative path, by whole components); reading
    /// stops once the listing has passed them.
    pub fn under(mut self, prefix: Option<Vec<u8>>) -> Self {
        self.prefix = prefix;
        self
    }

    /// The next entry, or `None` at the end.
    pub async fn next(&mut self, store: &ChunkStore<'_>) -> Result<Option<Entry>> {
        loop {
            let Some(entry) = self.next_any(store).await? else {
                return Ok(None);
            };
            let Some(prefix) = &self.prefix else {
                return Ok(Some(entry));
            };
            if is_under(&entry.path, prefix) {
                return Ok(Some(entry));
            }
            if cmp_paths(&entry.path, prefix) == Ordering::Greater {
                // Sorted: nothing after this can be under the prefix.
                self.chunks = Vec::new().into_iter();
                self.buf.clear();
                self.at = 0;
                return Ok(None);
            }
        }
    }

    async fn next_any(&mut self, store: &ChunkStore<'_>) -> Result<Option<Entry>> {
        loop {
            if let Some(n) = memchr(&self.buf[self.at..]) {
                let line = &self.buf[self.at..self.at + n];
                let entry = Entry::from_json_line(line)?;
                self.at += n + 1;
                if let Some(last) = &self.last
                    && cmp_paths(last, &entry.path) != Ordering::Less
                {
                    return Err(Error::integrity(format!(
                        "the listing is out of order: {} after {}",
                        entry.display(),
                        display_path(last)
                    )));
                }
                self.last = Some(entry.path.clone());
                return Ok(Some(entry));
            }
            let Some(id) = self.chunks.next() else {
                if self.at < self.buf.len() {
                    return Err(Error::integrity(
                        "the listing ends in the middle of a record",
                    ));
                }
                return Ok(None);
            };
            let chunk = store
                .read(&id)
                .await
                .map_err(|e| e.context("reading the snapshot listing"))?;
            self.buf.drain(..self.at);
            self.at = 0;
            self.buf.extend_from_slice(&chunk);
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_id::ChunkIdKey;
    use crate::entry::EntryKind;
    use crate::index::ChunkIndex;
    use coffer_core::storage::LocalStorage;

    fn entry(n: u32) -> Entry {
        Entry {
            path: format!("dir{:03}/file {n:07}.txt", n / 10_000).into_bytes(),
            kind: EntryKind::File,
            size: n as u64,
            mode: 0o644,
            mtime_ns: n as i64 * 1_000_000_007,
            ctime_ns: 0,
            uid: 0,
            gid: 0,
            inode: n as u64,
            device: 1,
            target: None,
            link: None,
            chunks: vec![ChunkId([(n % 251) as u8; 32])],
            object: None,
        }
    }

    #[tokio::test]
    async fn a_listing_reads_back_and_dedupes_against_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let key = ChunkIdKey::from_bytes([1; 32]);
        let mut store = ChunkStore::new(&storage, key, None, ChunkIndex::new());
        // ~200 bytes a record: 100,000 records are ~20 MiB, several chunks and cuts.
        let mut writer = ListingWriter::new();
        for n in 0..100_000 {
            writer.push(&mut store, &entry(n)).await.unwrap();
        }
        let (first, count) = writer.finish(&mut store).await.unwrap();
        assert_eq!(count, 100_000);
        assert!(first.len() > 5, "{} chunks", first.len());
        store.flush().await.unwrap();

        // The same chunks as chunking the whole stream at once.
        let whole: Vec<u8> = (0..100_000).flat_map(|n| entry(n).to_json_line()).collect();
        let ids: Vec<ChunkId> = Chunker::new(&whole[..])
            .map(|c| store.id(&c.unwrap().data))
            .collect();
        assert_eq!(ids, first);

        let mut summary = SnapshotSummary::new("app", "/srv/app");
        summary.listing = first.clone();
        let mut reader = ListingReader::new(&summary);
        let mut n = 0;
        while let Some(e) = reader.next(&store).await.unwrap() {
            assert_eq!(e, entry(n));
            n += 1;
        }
        assert_eq!(n, 100_000);

        // One changed record in the middle: most chunks are the same.
        let stored_before = store.stats().stored;
        let mut writer = ListingWriter::new();
        for n in 0..100_000 {
            let mut e = entry(n);
            if n == 50_000 {
                e.size = 1;
            }
            writer.push(&mut store, &e).await.unwrap();
        }
        let (second, _) = writer.finish(&mut store).await.unwrap();
        let shared = second.iter().filter(|id| first.contains(id)).count();
        assert!(shared + 2 >= second.len(), "{shared} of {}", second.len());
        assert!(store.stats().stored - stored_before <= 2);

        // A prefix reads only its subtree.
        let mut reader = ListingReader::new(&summary).under(Some(b"dir005".to_vec()));
        let mut seen = 0;
        while let Some(e) = reader.next(&store).await.unwrap() {
            assert!(e.path.starts_with(b"dir005/"));
            seen += 1;
        }
        assert_eq!(seen, 10_000);
    }

    #[tokio::test]
    async fn records_out_of_order_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let mut store = ChunkStore::new(
            &storage,
            ChunkIdKey::from_bytes([1; 32]),
            None,
            ChunkIndex::new(),
        );
        let mut writer = ListingWriter::new();
        writer.push(&mut store, &entry(2)).await.unwrap();
        assert!(writer.push(&mut store, &entry(1)).await.is_err());
        let mut bytes = entry(2).to_json_line();
        bytes.extend(entry(1).to_json_line());
        let (id, _) = store.write(&bytes).await.unwrap();
        store.flush().await.unwrap();
        let mut summary = SnapshotSummary::new("s", "/");
        summary.listing = vec![id];
        let mut reader = ListingReader::new(&summary);
        reader.next(&store).await.unwrap().unwrap();
        let err = reader.next(&store).await.unwrap_err();
        assert_eq!(err.kind(), coffer_core::error::ErrorKind::Integrity);
    }
}

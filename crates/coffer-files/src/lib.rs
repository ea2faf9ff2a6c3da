//! # coffer-files
//!
//! The storage foundation of file snapshots: how file contents become deduplicated, compressed,
//! encrypted objects in a repository, and how they are found again. The format is specified in
//! `docs/FORMAT.md`, section *File snapshots: chunks, packs and index*.
//!
//! - [`chunker`]: content split into chunks at content-defined boundaries (FastCDC 2020), so an
//!   insertion moves only the chunks around it ([`chunker::Chunker`]);
//! - [`chunk_id`]: a chunk's id, a keyed hash of its plain bytes ([`chunk_id::ChunkId`]), and the
//!   key, kept encrypted in the repository and in clear on the backup host
//!   ([`chunk_id::ChunkIdKey`]);
//! - [`blob_key`]: one age file key and header per run, under which its blobs are sealed
//!   ([`blob_key::BlobKey`]);
//! - [`blob`]: one chunk as stored (zstd, then sealed under the run's key), and its verified
//!   decoding;
//! - [`pack`]: blobs gathered into self-describing pack files named by their SHA-256
//!   ([`pack::PackWriter`], [`pack::PackReader`]);
//! - [`index`]: which pack holds which chunk, compact in memory ([`index::ChunkIndex`]), written
//!   as index files ([`index::IndexWriter`]) and rebuilt from pack headers when lost;
//! - [`store`]: the four together: store a chunk unless the repository has it, read it back
//!   verified ([`store::ChunkStore`]);
//! - [`retry`]: the bounded retry of uploads that failed for a transient reason;
//! - [`entry`]: one record of a snapshot listing ([`entry::Entry`]) and the path rules every
//!   record obeys;
//! - [`tree`]: the listing stored as chunks, written and read as a stream, and the
//!   [`tree::SnapshotSummary`] that points at it;
//! - [`backup`]: a snapshot of a local folder ([`backup::take_snapshot`]);
//! - [`restore`]: a snapshot, or one folder of it, written back into a folder
//!   ([`restore::restore_snapshot`]), and its entries listed ([`restore::list_entries`]);
//! - [`s3source`]: a snapshot of an S3 bucket prefix ([`s3source::take_s3_snapshot`]), its
//!   keys turned into paths and sorted, and its restore to another prefix with content types and
//!   user metadata ([`s3source::restore_to_s3`]);
//! - [`snapshot`]: what a snapshot is, its manifest `snapshots/ID.json`, written last and
//!   signed ([`snapshot::SnapshotManifest`]), listed and resolved (`latest`);
//! - [`verify`]: a snapshot checked against the index and the packs, and optionally its chunks
//!   read back, all or one subset of the packs ([`verify::verify_snapshot`]);
//! - [`gc`]: chunks no kept snapshot references marked, then deleted or repacked after a grace
//!   period, so a backup running meanwhile loses nothing ([`gc::prune_chunks`]).
//!
//! Errors are [`coffer_core::error::Error`]s: damage found in stored bytes is
//! [`ErrorKind::Integrity`](coffer_core::error::ErrorKind::Integrity) and names the chunk or pack.

pub mod backup;
pub mod blob;
pub mod blob_key;
pub mod chunk_id;
pub mod chunker;
pub mod entry;
pub mod gc;
pub mod index;
pub mod pack;
pub mod restore;
pub mod retry;
pub mod s3source;
pub mod snapshot;
pub mod store;
pub mod tree;
pub mod verify;

#[cfg(test)]
mod send {
    //! The daemon spawns its jobs, so their futures must be `Send` for every lifetime: a stream
    //! closure over borrowed data breaks that only where a spawned caller uses it. Checked here
    //! at compile time, next to the code.
    #![allow(dead_code)]

    fn is_send<T: Send>(_: &T) {}

    fn the_snapshot_jobs_futures_are_send(
        store: &mut crate::store::ChunkStore<'_>,
        repository: &coffer_core::repository::Repository,
        root: &std::path::Path,
        filters: &crate::backup::Filters,
        options: &crate::backup::SnapshotOptions,
    ) {
        is_send(&crate::backup::take_snapshot(
            store, root, filters, None, options,
        ));
        is_send(&crate::snapshot::list(repository));
        let key = crate::chunk_id::ChunkIdKey::from_bytes([0; 32]);
        is_send(&crate::store::ChunkStore::open(
            repository.storage(),
            key,
            None,
        ));
        is_send(&crate::store::ChunkStore::open_for_reading(
            repository.storage(),
            root,
            None,
            None,
        ));
    }
}

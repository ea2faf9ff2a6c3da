//! Object storage: a small trait and its two backends, a local folder and S3.
//!
//! Keys are `/`-separated paths relative to the repository root (`manifests/ID.json`). A stream
//! upload ([`Storage::put_stream`]) makes the object visible only when the stream ends cleanly:
//! a producer that fails (or stops without saying it finished) leaves no object behind.
//!
//! Reads come whole ([`Storage::get`]) or as a byte range ([`Storage::get_range`]). A range that
//! does not lie wholly inside the object is an [`ErrorKind::Integrity`](crate::error::ErrorKind::Integrity)
//! error, not `NotFound`: the object is there, but shorter than whoever recorded the offset
//! believed, which is what a damaged or truncated object looks like. A missing key is `NotFound`.
//!
//! Storage that stops answering fails instead of hanging: each request of a backend, and each
//! read of an object's bytes, may wait at most `stall_timeout_seconds` (`storage/stall.rs`).

mod local;
mod s3;
mod stall;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use jiff::Timestamp;
use tokio::io::AsyncRead;
use tokio_stream::Stream;

pub use local::LocalStorage;
pub use s3::{ObjectAttrs, ObjectHead, S3Objects, S3Storage, SourceObject};
pub use stall::DEFAULT_STALL_TIMEOUT;

use crate::config::RepositoryLocation;
use crate::error::{Error, Result};

/// A stream of chunks to upload. An `Err` item aborts the upload.
pub type BodyStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// An object being read.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// An object in a listing, or what [`Storage::head`] says of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the repository root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written (S3's `LastModified`, a file's mtime); `None` when the
    /// backend does not say.
    pub last_modified: Option<Timestamp>,
}

/// An upload begun and never completed nor aborted: what a writer killed mid-way leaves (an S3
/// multipart upload, a folder's partial file). It is invisible to [`Storage::list`] but may
/// hold data (and cost) until it is aborted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AbandonedUpload {
    /// The key it was for, relative to the repository root.
    pub key: String,
    /// The backend's handle for it (an S3 upload id; a partial file's name).
    pub upload_id: String,
    /// When it began; `None` when the backend does not say.
    pub started: Option<Timestamp>,
}

/// Turns a reader (a file, a pipe) into a [`BodyStream`] for [`Storage::put_stream`], read in
/// chunks of 256 KiB.
pub fn body_from_reader(reader: impl AsyncRead + Send + 'static) -> BodyStream {
    Box::pin(tokio_util::io::ReaderStream::with_capacity(
        reader,
        256 * 1024,
    ))
}

/// The outcome of a conditional create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The object did not exist and now does.
    Created,
    /// The object existed; nothing was written.
    AlreadyExists,
}

/// What a storage backend can do, as probed at run time (servers differ: see
/// `shared/S3-TEST-SERVERS.md`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// Multipart uploads work (always true for a folder).
    pub multipart: bool,
    /// A create-if-absent is honoured (the second conditional PUT is refused).
    pub conditional_write: bool,
    /// Object Lock is enabled on the bucket.
    pub object_lock: bool,
}

/// A place that stores objects by key.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Where this storage is, for messages (`/var/backups/coffer`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// A handle to this same storage that a background task can own (an upload that goes on
    /// while its caller prepares the next one), or `None` when the backend cannot hand one out;
    /// callers then do that work inline.
    fn shared(&self) -> Option<std::sync::Arc<dyn Storage>> {
        None
    }

    /// Stores a small object whole, replacing any previous one.
    async fn put(&self, key: &str, body: Bytes) -> Result<()>;

    /// Stores `body` at `key` unless an object is already there. Backends that cannot honour the
    /// condition (some S3 servers ignore it) overwrite; [`Storage::probe`] tells which.
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<CreateOutcome>;

    /// Stores a stream of unknown length with bounded memory; returns the number of bytes stored.
    /// The object appears only if the stream ends without an error item.
    async fn put_stream(&self, key: &str, body: BodyStream) -> Result<u64>;

    /// Opens an object for reading.
    async fn get(&self, key: &str) -> Result<ObjectReader>;

    /// Opens `len` bytes of an object, from byte `start`, for reading. The whole range must lie
    /// inside the object: a range past its end is an integrity error (see the module docs), a
    /// missing object is `NotFound`. A zero-length range at or before the end reads nothing.
    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<ObjectReader>;

    /// The size and last-modified time of an object; `NotFound` when there is none.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Reads a small object whole.
    async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        use tokio::io::AsyncReadExt;
        let mut reader = self.get(key).await?;
        let mut buf = Vec::new();
        reader
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Error::storage(format!("reading {key}: {e}")).transient())?;
        Ok(buf.into())
    }

    /// Lists the objects whose keys start with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Deletes many objects, in as few requests as the backend allows; missing objects are not
    /// an error. Every key is checked before anything is deleted. On failure some of the objects
    /// may be gone: the error names those that failed (retrying the whole call is safe).
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            check_key(key)?;
        }
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }

    /// Probes what the backend can do, writing and removing a few small objects under `probe/`.
    async fn probe(&self) -> Result<Capabilities>;

    /// Uploads under the repository begun before `before` and never finished. A backend that
    /// cannot list them (s3s-fs answers 501) returns none, with a warning.
    async fn abandoned_uploads(&self, before: Timestamp) -> Result<Vec<AbandonedUpload>> {
        let _ = before;
        Ok(Vec::new())
    }

    /// Aborts an upload [`Storage::abandoned_uploads`] found; one already gone is not an error.
    async fn abort_upload(&self, upload: &AbandonedUpload) -> Result<()> {
        let _ = upload;
        Ok(())
    }
}

/// Opens the storage a repository location names; a request or read that waits `stall` for the
/// server fails (`stall_timeout_seconds`).
pub async fn open(
    location: &RepositoryLocation,
    stall: std::time::Duration,
) -> Result<Box<dyn Storage>> {
    Ok(match location {
        RepositoryLocation::Local(path) => {
            Box::new(LocalStorage::new(path.clone()).with_stall_timeout(stall))
        }
        RepositoryLocation::S3(config) => {
            Box::new(S3Storage::new(config.clone()).with_stall_timeout(stall))
        }
    })
}

/// Rejects keys that could escape the repository root or are not plain relative paths.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(Error::other(format!("invalid object key {key:?}")));
    }
    Ok(())
}

/// The error of a range that does not lie wholly inside its object (see the module docs).
pub(crate) fn range_past_end(key: &str, location: &str, start: u64, len: u64, size: u64) -> Error {
    Error::integrity(format!(
        "reading {len} bytes at offset {start} of {key} in {location}: the object has only {size} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::check_key;

    #[test]
    fn keys_cannot_escape_the_root() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\\b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
        check_key("data/20261126-full/dump.sql.zst").unwrap();
    }
}

//! Object storage: a small trait and its two backends, a local folder and S3.
//!
//! Keys are `/`-separated paths relative to the repository root (`manifests/ID.json`). A stream
//! upload ([`Storage::put_stream`]) makes the object visible only when the stream ends cleanly:
//! a producer that fails (or stops without saying it finished) leaves no object behind.

mod local;
mod s3;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio_stream::Stream;

pub use local::LocalStorage;
pub use s3::S3Storage;

use crate::config::RepositoryLocation;
use crate::error::{Error, Result};

/// A stream of chunks to upload. An `Err` item aborts the upload.
pub type BodyStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// An object being read.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the repository root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
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

    /// Probes what the backend can do, writing and removing a few small objects under `probe/`.
    async fn probe(&self) -> Result<Capabilities>;
}

/// Opens the storage a repository location names.
pub async fn open(location: &RepositoryLocation) -> Result<Box<dyn Storage>> {
    Ok(match location {
        RepositoryLocation::Local(path) => Box::new(LocalStorage::new(path.clone())),
        RepositoryLocation::S3(config) => Box::new(S3Storage::new(config.clone())),
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

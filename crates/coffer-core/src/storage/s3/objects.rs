//! A bucket prefix as a source or target of files, not as a repository: [`S3Objects`].
//!
//! A repository's keys are coffer's own and checked by `check_key`; the keys under a source
//! prefix are whatever its users wrote (`a//b`, `a/../b`, a folder marker `docs/`). They are
//! handed out raw, relative to the prefix, and the caller decides what it accepts (coffer-files
//! checks them as paths). Requests go through the same client, the same error classification and
//! the same stall timeout as the repository backend; uploads reuse its single-PUT-or-multipart
//! path, with a content type and user metadata.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;

use super::{S3Storage, timestamp};
use crate::config::S3Config;
use crate::error::{Error, Result};
use crate::storage::{BodyStream, ObjectReader};

/// An object under the prefix, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    /// The key relative to the prefix, raw (unchecked: it may hold `//`, `..`, end in `/`).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// The ETag without its quotes; `None` when the server's listing has none (s3s-fs).
    pub etag: Option<String>,
    /// `LastModified`, when the server says.
    pub last_modified: Option<Timestamp>,
}

/// What an object carries besides its bytes: content type and user metadata (`x-amz-meta-*`,
/// names without the prefix, lowercase as S3 returns them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectAttrs {
    /// `Content-Type`; `None` leaves the server's default.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
}

impl ObjectAttrs {
    /// The metadata as the SDK takes it; `None` when there is none.
    pub(super) fn user_metadata(&self) -> Option<HashMap<String, String>> {
        (!self.metadata.is_empty()).then(|| {
            self.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
}

/// What a `HEAD` (or the headers of a `GET`) says of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    /// Size in bytes (`Content-Length`).
    pub size: u64,
    /// The ETag without its quotes.
    pub etag: Option<String>,
    /// `LastModified`.
    pub last_modified: Option<Timestamp>,
    /// Content type and user metadata.
    pub attrs: ObjectAttrs,
}

/// A bucket and prefix read or written as files: a `[[files]]` source (`url = "s3://…"`) or
/// the target of a restore (`--to-s3`).
#[derive(Debug, Clone)]
pub struct S3Objects {
    storage: S3Storage,
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

fn attrs(content_type: Option<&str>, metadata: Option<&HashMap<String, String>>) -> ObjectAttrs {
    ObjectAttrs {
        content_type: content_type.map(str::to_string),
        metadata: metadata
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    }
}

impl S3Objects {
    /// A client for the bucket and prefix of `config` (no network traffic yet).
    pub fn new(config: S3Config) -> Self {
        Self {
            storage: S3Storage::new(config),
        }
    }

    /// Fails a request, or a read of a body, that waits longer than `stall` for the server.
    pub fn with_stall_timeout(mut self, stall: Duration) -> Self {
        self.storage = self.storage.with_stall_timeout(stall);
        self
    }

    /// `s3://bucket/prefix/` (or `s3://bucket/` for a whole bucket), for messages and summaries.
    pub fn url(&self) -> String {
        format!(
            "s3://{}/{}",
            self.storage.config.bucket,
            self.storage.root()
        )
    }

    /// The prefix's last component, or the bucket for a whole bucket: a default source name.
    pub fn default_name(&self) -> String {
        let config = &self.storage.config;
        config
            .prefix
            .rsplit('/')
            .next()
            .filter(|last| !last.is_empty())
            .unwrap_or(&config.bucket)
            .to_string()
    }

    fn full(&self, key: &str) -> Result<String> {
        if key.is_empty() {
            return Err(Error::other("an empty object key"));
        }
        Ok(format!("{}{key}", self.storage.root()))
    }

    /// Every object under the prefix (paginated `ListObjectsV2`, each page bounded by the stall
    /// timeout), keys relative to the prefix and raw, in the server's order (bytewise). The key
    /// of a marker for the prefix itself is the empty string.
    pub async fn list(&self) -> Result<Vec<SourceObject>> {
        self.list_some(None).await
    }

    /// Whether the prefix holds no object at all (one listing request of one key).
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.list_some(Some(1)).await?.is_empty())
    }

    async fn list_some(&self, at_most: Option<i32>) -> Result<Vec<SourceObject>> {
        let s = &self.storage;
        let root = s.root();
        let mut request = s
            .client
            .list_objects_v2()
            .bucket(&s.config.bucket)
            .prefix(&root);
        if let Some(n) = at_most {
            request = request.max_keys(n);
        }
        let mut pages = request.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = s.bounded("listing", "objects", pages.next()).await? {
            let page = page.map_err(|e| s.error("listing", "objects", e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&root)) else {
                    continue;
                };
                out.push(SourceObject {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: object.e_tag().map(unquote),
                    last_modified: object.last_modified().and_then(timestamp),
                });
                if at_most.is_some_and(|n| out.len() >= n as usize) {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Size, ETag, last-modified, content type and user metadata of the object `key` (relative
    /// to the prefix); `NotFound` when there is none.
    pub async fn head(&self, key: &str) -> Result<ObjectHead> {
        let s = &self.storage;
        let full = self.full(key)?;
        let request = s
            .client
            .head_object()
            .bucket(&s.config.bucket)
            .key(&full)
            .send();
        let object = s
            .bounded("looking up", key, request)
            .await?
            .map_err(|e| s.error("looking up", key, e))?;
        Ok(ObjectHead {
            size: object.content_length().unwrap_or(0).max(0) as u64,
            etag: object.e_tag().map(unquote),
            last_modified: object.last_modified().and_then(timestamp),
            attrs: attrs(object.content_type(), object.metadata()),
        })
    }

    /// Opens the object `key` for reading, streamed (reads bounded by the stall timeout), with
    /// what its headers say; `NotFound` when it is gone.
    pub async fn get(&self, key: &str) -> Result<(ObjectHead, ObjectReader)> {
        let s = &self.storage;
        let full = self.full(key)?;
        let request = s
            .client
            .get_object()
            .bucket(&s.config.bucket)
            .key(&full)
            .send();
        let object = s
            .bounded("reading", key, request)
            .await?
            .map_err(|e| s.error("reading", key, e))?;
        let head = ObjectHead {
            size: object.content_length().unwrap_or(0).max(0) as u64,
            etag: object.e_tag().map(unquote),
            last_modified: object.last_modified().and_then(timestamp),
            attrs: attrs(object.content_type(), object.metadata()),
        };
        Ok((head, s.reader(key, object.body)))
    }

    /// Stores `body` at `key` (relative to the prefix) with `attrs`, replacing any object there:
    /// one `PutObject` when it fits in one part, else a multipart upload (memory: about two
    /// parts), aborted if the stream yields an error. Returns the bytes stored.
    pub async fn put(&self, key: &str, attrs: &ObjectAttrs, body: BodyStream) -> Result<u64> {
        let full = self.full(key)?;
        self.storage.put_stream_at(key, &full, body, attrs).await
    }
}

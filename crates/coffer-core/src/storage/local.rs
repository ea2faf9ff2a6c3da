//! A repository in a local folder: the embedded default, and what a mounted NAS looks like.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_stream::StreamExt;

use super::{
    AbandonedUpload, BodyStream, Capabilities, CreateOutcome, ObjectMeta, ObjectReader, Storage,
    check_key, range_past_end, stall,
};
use crate::error::{Error, Result};

/// A folder holding one object per file. Writes go to a temporary file beside the target and are
/// renamed into place after `fsync`, so a crash never leaves a half-written object under its key.
///
/// A file system that stops answering (a hung network mount) fails each write, sync and read
/// that waits longer than the stall timeout. The blocked system call itself cannot be cancelled:
/// its thread stays blocked, but the job fails and says why.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    stall: Duration,
}

impl LocalStorage {
    /// A storage rooted at `root` (created on first write), with the default stall timeout.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            stall: stall::DEFAULT_STALL_TIMEOUT,
        }
    }

    /// Fails an operation that waits longer than `stall` for the file system
    /// (`stall_timeout_seconds`).
    pub fn with_stall_timeout(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self
    }

    /// Awaits one file-system operation on `key` for at most the stall timeout.
    async fn bounded<F: std::future::IntoFuture>(
        &self,
        what: &str,
        key: &str,
        work: F,
    ) -> Result<F::Output> {
        stall::bounded(
            self.stall,
            || format!("{what} {key} in {}", self.root.display()),
            work,
        )
        .await
    }

    /// A reader of `key` whose reads fail when the file system stops answering.
    fn reader(
        &self,
        key: &str,
        inner: impl tokio::io::AsyncRead + Send + Unpin + 'static,
    ) -> ObjectReader {
        Box::pin(stall::StallReader::new(
            inner,
            self.stall,
            format!("reading {key} in {}", self.root.display()),
        ))
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn io_error(&self, what: &str, key: &str, err: std::io::Error) -> Error {
        let error = if err.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(format!(
                "{what} {key} in {}: no such object",
                self.root.display()
            ))
        } else {
            Error::storage(format!("{what} {key} in {}: {err}", self.root.display()))
        };
        error.with_source(err)
    }

    /// Creates the parent folder and a temporary file beside `path`.
    async fn temp_beside(
        &self,
        key: &str,
        path: &std::path::Path,
    ) -> Result<(tokio::fs::File, tempfile::TempPath)> {
        let parent = path.parent().expect("keys have a parent under the root");
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.bounded(
                "creating folder for",
                key,
                tokio::fs::create_dir_all(parent),
            )
            .await?
            .map_err(|e| self.io_error("creating folder for", key, e))?;
            match tempfile::Builder::new()
                .prefix(".coffer-partial-")
                .tempfile_in(parent)
            {
                Ok(temp) => {
                    let (file, temp_path) = temp.into_parts();
                    return Ok((tokio::fs::File::from_std(file), temp_path));
                }
                // A delete of the folder's last object (a prune) removed the folder between the
                // two calls: make it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 5 => continue,
                Err(e) => return Err(self.io_error("creating temporary file for", key, e)),
            }
        }
    }

    async fn commit(
        &self,
        key: &str,
        mut file: tokio::fs::File,
        temp: tempfile::TempPath,
        path: &std::path::Path,
        exclusive: bool,
    ) -> Result<CreateOutcome> {
        self.bounded("writing", key, file.flush())
            .await?
            .map_err(|e| self.io_error("writing", key, e))?;
        self.bounded("syncing", key, file.sync_all())
            .await?
            .map_err(|e| self.io_error("syncing", key, e))?;
        drop(file);
        let outcome = if exclusive {
            // A hard link fails if the target exists: an atomic create-if-absent.
            match std::fs::hard_link(&temp, path) {
                Ok(()) => CreateOutcome::Created,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Ok(CreateOutcome::AlreadyExists);
                }
                Err(e) => return Err(self.io_error("creating", key, e)),
            }
        } else {
            temp.persist(path)
                .map_err(|e| self.io_error("renaming into place", key, e.error))?;
            CreateOutcome::Created
        };
        // The new name is durable only once its folder is synced.
        let parent = path.parent().expect("keys have a parent under the root");
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.io_error("syncing the folder of", key, e))?;
        Ok(outcome)
    }

    async fn write_whole(&self, key: &str, body: Bytes, exclusive: bool) -> Result<CreateOutcome> {
        let path = self.path(key)?;
        let (file, temp) = self.temp_beside(key, &path).await?;
        // One write on a blocking thread: `tokio::fs::File` would copy the body into its own
        // buffer and write it 2 MiB per round trip, which for 16 MiB packs cost a tenth of a
        // backup's CPU.
        let mut file = file.into_std().await;
        let write = tokio::task::spawn_blocking(move || {
            std::io::Write::write_all(&mut file, &body).map(|()| file)
        });
        let file = self
            .bounded("writing", key, write)
            .await?
            .map_err(|e| self.io_error("writing", key, std::io::Error::other(e)))?
            .map_err(|e| self.io_error("writing", key, e))?;
        let file = tokio::fs::File::from_std(file);
        self.commit(key, file, temp, &path, exclusive).await
    }
}

/// Walks the folders under `start` whose keys `descend` accepts, calling `visit` with the key
/// (relative to `root`, `/`-separated) of each regular file. A folder that vanished meanwhile
/// is skipped; names that are not UTF-8 are not keys and are skipped too.
fn walk_files(
    root: &std::path::Path,
    start: PathBuf,
    descend: impl Fn(&str) -> bool,
    mut visit: impl FnMut(String, &std::fs::DirEntry) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let file_type = entry.file_type()?;
            let path = entry.path();
            let Some(key) = path
                .strip_prefix(root)
                .ok()
                .and_then(|rel| rel.to_str())
                .map(|k| k.replace(std::path::MAIN_SEPARATOR, "/"))
            else {
                continue;
            };
            if file_type.is_dir() {
                if descend(&key) {
                    stack.push(path);
                }
            } else if file_type.is_file() {
                visit(key, &entry)?;
            }
        }
    }
    Ok(())
}

/// A write in progress (or a killed writer's leftover): never an object.
fn is_partial(entry: &std::fs::DirEntry) -> bool {
    entry
        .file_name()
        .to_string_lossy()
        .starts_with(".coffer-partial-")
}

/// A file's mtime, which is when its object was last written (files are renamed into place).
fn modified(metadata: &std::fs::Metadata) -> Option<jiff::Timestamp> {
    metadata
        .modified()
        .ok()
        .and_then(|time| jiff::Timestamp::try_from(time).ok())
}

#[async_trait]
impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn shared(&self) -> Option<std::sync::Arc<dyn Storage>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.write_whole(key, body, false).await.map(drop)
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<CreateOutcome> {
        self.write_whole(key, body, true).await
    }

    async fn put_stream(&self, key: &str, mut body: BodyStream) -> Result<u64> {
        let path = self.path(key)?;
        let (mut file, temp) = self.temp_beside(key, &path).await?;
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            // On error the temporary file is removed when `temp` drops.
            let chunk = chunk.map_err(Error::from)?;
            self.bounded("writing", key, file.write_all(&chunk))
                .await?
                .map_err(|e| self.io_error("writing", key, e))?;
            written += chunk.len() as u64;
        }
        self.commit(key, file, temp, &path, false).await?;
        Ok(written)
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        let path = self.path(key)?;
        let file = self
            .bounded("opening", key, tokio::fs::File::open(&path))
            .await?
            .map_err(|e| self.io_error("opening", key, e))?;
        Ok(self.reader(key, tokio::io::BufReader::with_capacity(256 * 1024, file)))
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<ObjectReader> {
        let path = self.path(key)?;
        let mut file = self
            .bounded("opening", key, tokio::fs::File::open(&path))
            .await?
            .map_err(|e| self.io_error("opening", key, e))?;
        let metadata = self
            .bounded("reading the size of", key, file.metadata())
            .await?
            .map_err(|e| self.io_error("reading the size of", key, e))?;
        if !metadata.is_file() {
            return Err(Error::not_found(format!(
                "opening {key} in {}: no such object",
                self.root.display()
            )));
        }
        let size = metadata.len();
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(range_past_end(key, &self.location(), start, len, size));
        }
        self.bounded(
            "seeking in",
            key,
            file.seek(std::io::SeekFrom::Start(start)),
        )
        .await?
        .map_err(|e| self.io_error("seeking in", key, e))?;
        Ok(self.reader(
            key,
            tokio::io::BufReader::with_capacity(256 * 1024, file.take(len)),
        ))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let metadata = self
            .bounded("looking up", key, tokio::fs::metadata(&path))
            .await?
            .map_err(|e| self.io_error("looking up", key, e))?;
        if !metadata.is_file() {
            return Err(Error::not_found(format!(
                "looking up {key} in {}: no such object",
                self.root.display()
            )));
        }
        Ok(ObjectMeta {
            key: key.to_string(),
            size: metadata.len(),
            last_modified: modified(&metadata),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let owned_prefix = prefix.to_string();
        let listing = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<ObjectMeta>> {
            let mut out = Vec::new();
            // Walk only the folder the prefix is in: `manifests/` lists one folder, not the tree.
            let prefix = owned_prefix;
            let start = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.clone(),
            };
            walk_files(
                &root,
                start,
                |key| key.starts_with(&prefix) || prefix.starts_with(&format!("{key}/")),
                |key, entry| {
                    if !key.starts_with(&prefix) || is_partial(entry) {
                        return Ok(());
                    }
                    // Deleted since the folder was read (a lock released, a prune running):
                    // not an object any more, not an error.
                    let metadata = match entry.metadata() {
                        Ok(metadata) => metadata,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                        Err(e) => return Err(e),
                    };
                    out.push(ObjectMeta {
                        key,
                        size: metadata.len(),
                        last_modified: modified(&metadata),
                    });
                    Ok(())
                },
            )?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        });
        let what = format!("{prefix:?}");
        let listed = self
            .bounded("listing", &what, listing)
            .await?
            .map_err(|e| Error::other(format!("listing task failed: {e}")))?;
        listed.map_err(|e| {
            Error::storage(format!(
                "listing {prefix:?} in {}: {e}",
                self.root.display()
            ))
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self
            .bounded("deleting", key, tokio::fs::remove_file(&path))
            .await?
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_error("deleting", key, e)),
        }
        // Folders are an artefact of this backend (object stores have none): one emptied by
        // this delete goes too (`data/ID/`, `probe/`), so nothing empty is left. The top-level
        // folders that writers share (`manifests/`, `data/`) stay: a writer may be about to use
        // one.
        let mut folder = path.parent();
        while let Some(dir) = folder {
            let top_level = dir.parent() == Some(self.root.as_path());
            if dir == self.root
                || (top_level && !dir.ends_with("probe"))
                || tokio::fs::remove_dir(dir).await.is_err()
            {
                break;
            }
            folder = dir.parent();
        }
        Ok(())
    }

    /// Partial files (`.coffer-partial-*`) a killed writer left beside their targets.
    async fn abandoned_uploads(&self, before: jiff::Timestamp) -> Result<Vec<AbandonedUpload>> {
        let root = self.root.clone();
        let walk = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<AbandonedUpload>> {
            let mut found = Vec::new();
            walk_files(
                &root,
                root.clone(),
                |_| true,
                |key, entry| {
                    if !is_partial(entry) {
                        return Ok(());
                    }
                    let Ok(metadata) = entry.metadata() else {
                        return Ok(());
                    };
                    let started = modified(&metadata);
                    if started.is_some_and(|at| at < before) {
                        let upload_id = entry.file_name().to_string_lossy().into_owned();
                        found.push(AbandonedUpload {
                            key,
                            upload_id,
                            started,
                        });
                    }
                    Ok(())
                },
            )?;
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        });
        self.bounded("listing", "partial files", walk)
            .await?
            .map_err(|e| Error::storage(format!("listing partial files: {e}")))?
            .map_err(|e| {
                Error::storage(format!(
                    "listing partial files in {}: {e}",
                    self.root.display()
                ))
            })
    }

    async fn abort_upload(&self, upload: &AbandonedUpload) -> Result<()> {
        // The key is the partial file's own path; only such a file is ever removed here.
        let name = upload.key.rsplit('/').next().unwrap_or_default();
        if !name.starts_with(".coffer-partial-") || upload.key.split('/').any(|c| c == "..") {
            return Err(Error::storage(format!(
                "{}: not a partial file of this repository",
                upload.key
            )));
        }
        match tokio::fs::remove_file(self.root.join(&upload.key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("removing partial file", &upload.key, e)),
        }
    }

    async fn probe(&self) -> Result<Capabilities> {
        tokio::fs::create_dir_all(&self.root).await.map_err(|e| {
            Error::storage(format!(
                "creating repository folder {}: {e}",
                self.root.display()
            ))
        })?;
        let key = "probe/conditional-write";
        self.delete(key).await?;
        let first = self.put_if_absent(key, Bytes::from_static(b"1")).await?;
        let second = self.put_if_absent(key, Bytes::from_static(b"2")).await?;
        self.delete(key).await?;
        Ok(Capabilities {
            multipart: true,
            conditional_write: first == CreateOutcome::Created
                && second == CreateOutcome::AlreadyExists,
            object_lock: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(items: Vec<std::io::Result<Bytes>>) -> BodyStream {
        Box::pin(tokio_stream::iter(items))
    }

    #[tokio::test]
    async fn stream_upload_appears_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let n = storage
            .put_stream(
                "data/a/x",
                stream(vec![
                    Ok(Bytes::from_static(b"hello ")),
                    Ok(Bytes::from_static(b"world")),
                ]),
            )
            .await
            .unwrap();
        assert_eq!(n, 11);
        assert_eq!(
            &storage.get_bytes("data/a/x").await.unwrap()[..],
            b"hello world"
        );

        let failed = storage
            .put_stream(
                "data/a/y",
                stream(vec![
                    Ok(Bytes::from_static(b"half")),
                    Err(std::io::Error::other("dump died")),
                ]),
            )
            .await;
        assert!(failed.unwrap_err().to_string().contains("dump died"));
        let keys: Vec<_> = storage
            .list("data/")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(
            keys,
            vec!["data/a/x".to_string()],
            "no partial object, no temp file listed"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("data/a"))
                .unwrap()
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn ranges_heads_and_batched_deletes() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        storage
            .put("data/r/x", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let mut read = String::new();
        storage
            .get_range("data/r/x", 3, 4)
            .await
            .unwrap()
            .read_to_string(&mut read)
            .await
            .unwrap();
        assert_eq!(read, "3456");
        let mut empty = Vec::new();
        storage
            .get_range("data/r/x", 10, 0)
            .await
            .unwrap()
            .read_to_end(&mut empty)
            .await
            .unwrap();
        assert!(empty.is_empty());
        for (start, len) in [(8, 3), (11, 0), (u64::MAX, 2)] {
            let past = storage
                .get_range("data/r/x", start, len)
                .await
                .err()
                .unwrap();
            assert_eq!(
                past.kind(),
                crate::error::ErrorKind::Integrity,
                "{start}+{len}"
            );
        }
        for missing in ["data/r/y", "data/r"] {
            let err = storage.get_range(missing, 0, 1).await.err().unwrap();
            assert_eq!(err.kind(), crate::error::ErrorKind::NotFound, "{missing}");
        }

        let head = storage.head("data/r/x").await.unwrap();
        assert_eq!((head.key.as_str(), head.size), ("data/r/x", 10));
        let age = jiff::Timestamp::now().duration_since(head.last_modified.unwrap());
        assert!(age.as_secs() < 60, "{age:?}");
        assert_eq!(storage.list("data/").await.unwrap(), vec![head]);
        for missing in ["data/r/y", "data/r"] {
            let err = storage.head(missing).await.unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::NotFound, "{missing}");
        }

        storage
            .put("data/r/y", Bytes::from_static(b"y"))
            .await
            .unwrap();
        assert!(
            storage
                .delete_many(&["data/r/x".into(), "../z".into()])
                .await
                .is_err()
        );
        assert_eq!(
            storage.list("data/").await.unwrap().len(),
            2,
            "nothing deleted"
        );
        storage
            .delete_many(&["data/r/x".into(), "data/r/gone".into(), "data/r/y".into()])
            .await
            .unwrap();
        assert!(storage.list("").await.unwrap().is_empty());
        assert!(!dir.path().join("data/r").exists(), "no empty folder left");
    }

    #[tokio::test]
    async fn conditional_create_and_probe() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().join("repo"));
        assert_eq!(
            storage
                .put_if_absent("m/1", Bytes::from_static(b"a"))
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(
            storage
                .put_if_absent("m/1", Bytes::from_static(b"b"))
                .await
                .unwrap(),
            CreateOutcome::AlreadyExists
        );
        assert_eq!(&storage.get_bytes("m/1").await.unwrap()[..], b"a");
        let caps = storage.probe().await.unwrap();
        assert!(caps.conditional_write && caps.multipart && !caps.object_lock);
        let missing = storage.get("m/2").await.err().unwrap();
        assert_eq!(missing.kind(), crate::error::ErrorKind::NotFound);
    }
}

//! Snapshots of an S3 bucket prefix ([`take_s3_snapshot`]) and their restore to another prefix
//! ([`restore_to_s3`]). A snapshot of a prefix is the same [`SnapshotSummary`] and listing as a
//! folder's, so [`crate::restore::restore_snapshot`] restores it into a folder as well.
//!
//! **Keys become paths.** Each object's key, relative to the source prefix, is its path. A key
//! that is not a valid path ([`validate_path`]: `a//b`, `a/../b`, a NUL) is skipped and reported
//! in the summary. A key ending in `/` (a folder marker, zero bytes) is a directory whose record
//! keeps the marker's ETag, content type and metadata; a marker with content is skipped and
//! reported. Every prefix of a key (`docs/2026` of `docs/2026/a.pdf`) becomes a directory
//! record (mode `0755`, time: the newest object under it), so a path filter (`docs/`) and a
//! restore into a folder work as for a folder snapshot. A key that is both an object and a
//! prefix of other keys (`a` and `a/b`) cannot be both a file and a folder: the object `a` is
//! skipped and reported.
//!
//! **Order and memory.** S3 lists keys in byte order, which is not the listing order
//! ([`cmp_paths`]: `a-b` sorts before `a/b` bytewise, after it by components). The whole
//! listing is therefore held and sorted before anything is recorded: at the peak (the server's
//! listing being turned into records) about 250 bytes plus the key's length per object, some
//! 350 MB for a million objects of 100-byte keys, plus one record per directory; the records
//! alone, while objects are read, about 150 bytes plus the key. The parent snapshot is read alongside, in the same order (a merge join), so it
//! costs nothing per object.
//!
//! **Change detection.** An object whose size and ETag equal its parent entry's keeps the
//! parent's chunks, content type and metadata without a `GET` or `HEAD`, unless `full_scan` (or
//! a chunk is no longer in the index). A server whose listing has no ETag (s3s-fs) is compared
//! by size and last-modified time instead. Every other object is read with one `GET`, whose
//! headers give the ETag, content type and metadata recorded with the bytes it returned (so a
//! record's ETag always describes the content it names, even if the object changed after the
//! listing); the time recorded is the listing's (a `GET`'s is whole seconds), so an object
//! replaced in between is read again next time.
//!
//! **Reading.** An object's body is cut into chunks ([`chunker::split`]) on a blocking thread
//! reading the async body through [`tokio_util::io::SyncIoBridge`]; chunks cross a channel of
//! two to the store, so memory is a few chunks whatever the object's size. An object that
//! vanished between the listing and its `GET` is reported and skipped (fatal with
//! `fail_on_unreadable`); any other storage error (the source unreachable, access refused, a
//! body cut short) fails the snapshot, since retrying later can succeed.
//!
//! **Restore to S3.** File records (and hard links, as copies) become objects under the target
//! prefix, with their content type and metadata; folder markers are written back as empty
//! `KEY/` objects with theirs; synthesized directories write nothing (S3 has no folders), and
//! symlinks are not restored (a warning names each). Each object streams from its chunks,
//! every chunk verified by the store, into one `PutObject` or, past one part, a multipart
//! upload (memory: about two parts per object, [`CONCURRENT_FILES`] objects at once). A chunk
//! that fails verification aborts that object's upload, so no object holds wrong bytes.

use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::Bytes;
use coffer_core::error::{Error, ErrorKind, Result};
use coffer_core::storage::{BodyStream, ObjectAttrs, S3Objects, SourceObject};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::backup::{Filters, SnapshotOptions};
use crate::chunk_id::ChunkId;
use crate::chunker;
use crate::entry::{Entry, EntryKind, ObjectInfo, cmp_paths, display_path, validate_path};
use crate::restore::{CONCURRENT_FILES, RestoreOptions, RestoreSummary, parse_filter};
use crate::store::ChunkStore;
use crate::tree::{ListingReader, ListingWriter, SnapshotSummary};

/// The mode of files restored from an S3 snapshot into a folder.
pub const OBJECT_MODE: u32 = 0o644;
/// The mode of directories of an S3 snapshot (markers and key prefixes).
pub const DIR_MODE: u32 = 0o755;

/// What one planned record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Planned {
    /// A directory made from key prefixes.
    Dir,
    /// A folder marker object (its key is the path and `/`).
    Marker { etag: Option<String> },
    /// An object (its key is the path).
    Object { size: u64, etag: Option<String> },
}

/// One record to write, in listing order, before any object is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) path: Vec<u8>,
    pub(crate) what: Planned,
    pub(crate) mtime_ns: i64,
}

fn nanos(time: Option<jiff::Timestamp>) -> i64 {
    time.map_or(0, |t| {
        i64::try_from(t.as_nanosecond()).unwrap_or(if t.as_second() < 0 {
            i64::MIN
        } else {
            i64::MAX
        })
    })
}

/// The parents of `path` (`a`, `a/b` of `a/b/c`), shortest first.
fn parents(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(|(i, _)| &path[..i])
}

/// Turns a listing into the records of a snapshot, sorted by [`cmp_paths`], with a directory
/// for every key prefix; returns them and the keys skipped, with why. Excluded keys (or keys
/// under an excluded folder) and, with include globs, objects matching none are left out
/// silently, as a folder snapshot does.
pub(crate) fn plan(
    objects: Vec<SourceObject>,
    filters: &Filters,
) -> (Vec<Plan>, Vec<(String, String)>) {
    let mut skipped = Vec::new();
    let mut records: Vec<Plan> = Vec::with_capacity(objects.len());
    // Directories from key prefixes, with the newest time of anything under them.
    let mut dirs: HashMap<Vec<u8>, i64> = HashMap::new();
    for object in objects {
        if object.key.is_empty() {
            // A marker for the source prefix itself: the root, which is not recorded.
            continue;
        }
        let (path, marker) = match object.key.strip_suffix('/') {
            Some(path) => (path, true),
            None => (object.key.as_str(), false),
        };
        let path = path.as_bytes();
        if let Err(e) = validate_path(path) {
            skipped.push((object.key.clone(), format!("not a valid path: {e}")));
            continue;
        }
        if filters.excluded(path) || parents(path).any(|p| filters.excluded(p)) {
            continue;
        }
        if marker && object.size > 0 {
            skipped.push((
                object.key.clone(),
                format!(
                    "a folder marker (a key ending in `/`) holding {} bytes: not recorded",
                    object.size
                ),
            ));
            continue;
        }
        if !marker && !filters.included(path) {
            continue;
        }
        let mtime_ns = nanos(object.last_modified);
        for parent in parents(path) {
            match dirs.get_mut(parent) {
                Some(newest) => *newest = (*newest).max(mtime_ns),
                None => {
                    dirs.insert(parent.to_vec(), mtime_ns);
                }
            }
        }
        // The key's own bytes become the path (no copy).
        let mut path = object.key.into_bytes();
        if marker {
            path.pop();
        }
        records.push(Plan {
            path,
            what: if marker {
                Planned::Marker { etag: object.etag }
            } else {
                Planned::Object {
                    size: object.size,
                    etag: object.etag,
                }
            },
            mtime_ns,
        });
    }
    // A path cannot be a file and a folder: an object whose key is also a folder marker's path
    // or the prefix of other keys is left out.
    let markers: std::collections::HashSet<Vec<u8>> = records
        .iter()
        .filter(|r| matches!(r.what, Planned::Marker { .. }))
        .map(|r| r.path.clone())
        .collect();
    records.retain(|r| {
        if matches!(r.what, Planned::Object { .. })
            && (markers.contains(&r.path) || dirs.contains_key(&r.path))
        {
            skipped.push((
                String::from_utf8_lossy(&r.path).into_owned(),
                "an object whose key is also a folder (of a marker or of other keys): not \
                 recorded, a path cannot be a file and a folder"
                    .into(),
            ));
            return false;
        }
        true
    });
    dirs.retain(|path, _| !markers.contains(path));
    records.extend(dirs.into_iter().map(|(path, mtime_ns)| Plan {
        path,
        what: Planned::Dir,
        mtime_ns,
    }));
    records.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    (records, skipped)
}

/// The parent snapshot's listing, read alongside in listing order.
struct ParentCursor {
    reader: ListingReader,
    current: Option<Entry>,
    done: bool,
}

impl ParentCursor {
    fn new(summary: &SnapshotSummary) -> Self {
        Self {
            reader: ListingReader::new(summary),
            current: None,
            done: false,
        }
    }

    /// The parent's entry at `path`, if any; passes the entries before it. Paths must be asked
    /// for in listing order.
    async fn find(&mut self, store: &ChunkStore<'_>, path: &[u8]) -> Result<Option<Entry>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.current.is_none() {
                self.current = self
                    .reader
                    .next(store)
                    .await
                    .map_err(|e| e.context("reading the parent snapshot"))?;
                if self.current.is_none() {
                    self.done = true;
                    return Ok(None);
                }
            }
            let at = self.current.as_ref().expect("set above");
            match cmp_paths(&at.path, path) {
                Ordering::Less => self.current = None,
                Ordering::Equal => return Ok(self.current.take()),
                Ordering::Greater => return Ok(None),
            }
        }
    }
}

fn record(path: Vec<u8>, kind: EntryKind, mtime_ns: i64) -> Entry {
    Entry {
        path,
        kind,
        size: 0,
        mode: if kind == EntryKind::Dir {
            DIR_MODE
        } else {
            OBJECT_MODE
        },
        mtime_ns,
        ctime_ns: 0,
        uid: 0,
        gid: 0,
        inode: 0,
        device: 0,
        target: None,
        link: None,
        chunks: Vec::new(),
        object: None,
    }
}

fn info(etag: Option<String>, attrs: ObjectAttrs) -> ObjectInfo {
    ObjectInfo {
        etag: etag.unwrap_or_default(),
        content_type: attrs.content_type,
        metadata: attrs.metadata,
    }
}

/// Whether the parent's `old` record is the same version of the object listed now: the same
/// size and ETag, or, when the listing gives no ETag, the same size and last-modified time.
fn unchanged(old: &Entry, size: u64, etag: Option<&str>, mtime_ns: i64) -> bool {
    let Some(info) = &old.object else {
        return false;
    };
    old.kind == EntryKind::File
        && old.size == size
        && match etag {
            Some(etag) => !info.etag.is_empty() && info.etag == etag,
            None => old.mtime_ns == mtime_ns,
        }
}

/// Takes a snapshot of the objects under the prefix `source` into `store` and returns its
/// summary; the listing and every chunk it names are stored (flushed) when this returns.
///
/// With a `parent` (the previous snapshot of the same source), objects whose size and ETag did
/// not change reuse its record without a request, unless `options.full_scan`. See the module
/// docs for keys, order, memory and what is skipped.
pub async fn take_s3_snapshot(
    store: &mut ChunkStore<'_>,
    source: &S3Objects,
    filters: &Filters,
    parent: Option<&SnapshotSummary>,
    options: &SnapshotOptions,
) -> Result<SnapshotSummary> {
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| source.default_name());
    let mut run = Run {
        options,
        summary: SnapshotSummary::new(name, source.url()),
    };
    let objects = source
        .list()
        .await
        .map_err(|e| e.context(format!("listing the source {}", source.url())))?;
    let listed = objects.len();
    let (planned, skipped) = plan(objects, filters);
    for (key, reason) in skipped {
        run.skip(key.as_bytes(), reason)?;
    }
    tracing::debug!(listed, records = planned.len(), source = %source.url(), "source listed");
    let mut parent = parent.filter(|_| !options.full_scan).map(ParentCursor::new);
    let mut listing = ListingWriter::new();
    for p in planned {
        let old = match &mut parent {
            Some(cursor) => cursor.find(store, &p.path).await?,
            None => None,
        };
        let entry = match p.what {
            Planned::Dir => Some(record(p.path, EntryKind::Dir, p.mtime_ns)),
            Planned::Marker { etag } => {
                Some(run.marker(source, p.path, etag, p.mtime_ns, old).await?)
            }
            Planned::Object { size, etag } => {
                run.object(store, source, p.path, size, etag, p.mtime_ns, old)
                    .await?
            }
        };
        if let Some(entry) = entry {
            match entry.kind {
                EntryKind::Dir => run.summary.dirs += 1,
                _ => {
                    run.summary.files += 1;
                    run.summary.bytes += entry.size;
                }
            }
            listing.push(store, &entry).await?;
        }
    }
    listing.seal(store, run.summary).await
}

struct Run<'o> {
    options: &'o SnapshotOptions,
    summary: SnapshotSummary,
}

impl Run<'_> {
    fn skip(&mut self, path: &[u8], reason: String) -> Result<()> {
        if self.options.fail_on_unreadable {
            return Err(Error::new(
                ErrorKind::Backup,
                format!("{}: {reason}", display_path(path)),
            ));
        }
        self.summary.skip(path, reason);
        Ok(())
    }

    /// A folder marker's record: the parent's when unchanged, else what a `HEAD` says. A marker
    /// gone since the listing still stands for the folder of the keys under it.
    async fn marker(
        &mut self,
        source: &S3Objects,
        path: Vec<u8>,
        etag: Option<String>,
        mtime_ns: i64,
        old: Option<Entry>,
    ) -> Result<Entry> {
        let mut entry = record(path, EntryKind::Dir, mtime_ns);
        if let Some(old) = old.filter(|old| {
            old.kind == EntryKind::Dir
                && old.object.as_ref().is_some_and(|o| {
                    etag.as_deref().map_or(old.mtime_ns == mtime_ns, |e| {
                        !o.etag.is_empty() && o.etag == e
                    })
                })
        }) {
            entry.object = old.object;
            return Ok(entry);
        }
        let key = format!("{}/", String::from_utf8_lossy(&entry.path));
        match source.head(&key).await {
            Ok(head) => {
                if mtime_ns == 0 && head.last_modified.is_some() {
                    entry.mtime_ns = nanos(head.last_modified);
                }
                entry.object = Some(info(head.etag.or(etag), head.attrs));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.context(format!("reading the source {}", source.url()))),
        }
        Ok(entry)
    }

    /// An object's record: the parent's chunks when unchanged, else its content read; `None`
    /// when it is skipped.
    #[allow(clippy::too_many_arguments)]
    async fn object(
        &mut self,
        store: &mut ChunkStore<'_>,
        source: &S3Objects,
        path: Vec<u8>,
        size: u64,
        etag: Option<String>,
        mtime_ns: i64,
        old: Option<Entry>,
    ) -> Result<Option<Entry>> {
        let mut entry = record(path, EntryKind::File, mtime_ns);
        if let Some(old) = old.filter(|old| {
            unchanged(old, size, etag.as_deref(), mtime_ns)
                && old.chunks.iter().all(|c| store.index().contains(c))
        }) {
            entry.size = old.size;
            entry.chunks = old.chunks;
            entry.object = old.object;
            self.summary.reused_files += 1;
            return Ok(Some(entry));
        }
        // Keys of valid paths are UTF-8: they came from the listing as strings.
        let key = String::from_utf8(entry.path.clone()).expect("keys are strings");
        let (head, body) = match source.get(&key).await {
            Ok(opened) => opened,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.skip(&entry.path, "vanished before it was read".into())?;
                return Ok(None);
            }
            Err(e) => return Err(e.context(format!("reading the source {}", source.url()))),
        };
        let (chunks, read, new_bytes) = read_object(store, body, head.size)
            .await
            .map_err(|e| e.context(format!("reading {key} in {}", source.url())))?;
        if read != head.size {
            return Err(Error::storage(format!(
                "reading {key} in {}: {read} bytes where the server announced {}",
                source.url(),
                head.size
            ))
            .transient());
        }
        entry.size = read;
        entry.chunks = chunks;
        // The listing's time when it has one (a `GET`'s is whole seconds, the listing's may
        // not be): the next listing is compared with it when the server gives no ETag.
        if mtime_ns == 0 && head.last_modified.is_some() {
            entry.mtime_ns = nanos(head.last_modified);
        }
        entry.object = Some(info(head.etag.or(etag), head.attrs));
        self.summary.read_files += 1;
        self.summary.new_bytes += new_bytes;
        Ok(Some(entry))
    }
}

/// Cuts an object's body into chunks on a blocking thread and stores them; returns the chunks,
/// the bytes read and the plain bytes newly stored.
async fn read_object(
    store: &mut ChunkStore<'_>,
    body: coffer_core::storage::ObjectReader,
    size: u64,
) -> Result<(Vec<ChunkId>, u64, u64)> {
    let bridge = tokio_util::io::SyncIoBridge::new(body);
    let (send, mut rx) = store.chunk_channel();
    let reader = tokio::task::spawn_blocking(move || chunker::split(bridge, size, send));
    let (chunks, new_bytes) = store.write_all_from(&mut rx).await?;
    let read = reader
        .await
        .map_err(|e| Error::other(format!("the object reader panicked: {e}")))??;
    Ok((chunks, read, new_bytes))
}

/// Restores the snapshot `summary` (or, with `path_filter`, the subtree at that path, which keeps
/// its path under the target) as objects under the prefix `target`.
///
/// A target prefix that holds any object is refused (the error names it) unless
/// `options.overwrite`, which replaces objects of the same keys and leaves the others. A dry run
/// checks the same and counts what would be written, writing nothing. A damaged chunk stops the
/// restore with an integrity error; the object it belonged to is not created, and those written
/// before stay. What is written is described in the module docs.
pub async fn restore_to_s3(
    store: &ChunkStore<'_>,
    summary: &SnapshotSummary,
    path_filter: Option<&str>,
    target: &S3Objects,
    options: &RestoreOptions,
) -> Result<RestoreSummary> {
    let filter = parse_filter(path_filter)?;
    if !options.overwrite && !target.is_empty().await? {
        return Err(Error::refused(format!(
            "the target {} is not empty: restore into an empty prefix or allow overwriting",
            target.url()
        )));
    }
    let mut reader = ListingReader::new(summary).under(filter);
    let mut done = RestoreSummary::default();
    let mut writing = FuturesUnordered::new();
    while let Some(entry) = reader.next(store).await? {
        let key = match entry.kind {
            EntryKind::Symlink => {
                tracing::warn!(path = %entry.display(), "not restored to S3: a symlink");
                continue;
            }
            EntryKind::Dir => {
                done.dirs += 1;
                if entry.object.is_none() {
                    continue;
                }
                format!("{}/", utf8_key(&entry)?)
            }
            EntryKind::File | EntryKind::Hardlink => {
                done.files += 1;
                done.bytes += entry.size;
                utf8_key(&entry)?.to_string()
            }
        };
        if options.dry_run {
            continue;
        }
        writing.push(write_object(store, target, key, entry));
        if writing.len() >= CONCURRENT_FILES
            && let Some(result) = writing.next().await
        {
            result?;
        }
    }
    while let Some(result) = writing.next().await {
        result?;
    }
    Ok(done)
}

fn utf8_key(entry: &Entry) -> Result<&str> {
    std::str::from_utf8(&entry.path).map_err(|_| {
        Error::new(
            ErrorKind::Restore,
            format!(
                "{}: the name is not UTF-8, and S3 keys are: it cannot be restored to S3",
                entry.display()
            ),
        )
    })
}

/// Uploads one entry's content from its chunks, verified as they are read; the upload is
/// aborted (no object appears) if a chunk fails or the chunks do not add up to the size.
async fn write_object(
    store: &ChunkStore<'_>,
    target: &S3Objects,
    key: String,
    entry: Entry,
) -> Result<()> {
    let attrs = entry
        .object
        .clone()
        .map(|o| ObjectAttrs {
            content_type: o.content_type,
            metadata: o.metadata,
        })
        .unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    let body: BodyStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let shown = entry.display();
    let produce = async move {
        let mut written = 0u64;
        let failed = |what: &str| std::io::Error::other(format!("{what}: upload abandoned"));
        for id in &entry.chunks {
            let data = match store.read(id).await {
                Ok(data) => data,
                Err(e) => {
                    let _ = tx.send(Err(failed("a chunk could not be read"))).await;
                    return Err(e.context(format!("restoring {shown}")));
                }
            };
            written += data.len() as u64;
            if tx.send(Ok(Bytes::from(data))).await.is_err() {
                // The upload stopped: it reports why.
                return Ok(());
            }
        }
        if written != entry.size {
            let _ = tx.send(Err(failed("the chunks do not add up"))).await;
            return Err(Error::integrity(format!(
                "{shown}: its chunks hold {written} bytes where the listing says {}",
                entry.size
            )));
        }
        Ok(())
    };
    let (put, produced) = tokio::join!(target.put(&key, &attrs, body), produce);
    produced?;
    put.map_err(|e| e.context(format!("restoring to {}", target.url())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, size: u64, secs: i64) -> SourceObject {
        SourceObject {
            key: key.into(),
            size,
            etag: Some(format!("etag-{key}")),
            last_modified: Some(jiff::Timestamp::from_second(secs).unwrap()),
        }
    }

    fn paths(plan: &[Plan]) -> Vec<(String, &'static str)> {
        plan.iter()
            .map(|p| {
                let what = match p.what {
                    Planned::Dir => "dir",
                    Planned::Marker { .. } => "marker",
                    Planned::Object { .. } => "object",
                };
                (String::from_utf8(p.path.clone()).unwrap(), what)
            })
            .collect()
    }

    #[test]
    fn a_bytewise_listing_becomes_the_listing_order_with_its_folders() {
        // As S3 lists them: plain byte order, where `-` (0x2d) and ` ` come before `/` (0x2f).
        let listed = vec![
            object("a b", 1, 10),
            object("a-b", 1, 10),
            object("a/b", 1, 30),
            object("a/c/d", 1, 20),
            object("docs/", 0, 5),
            object("docs/x.pdf", 1, 40),
            object("z", 0, 10),
        ];
        let (plan, skipped) = plan(listed, &Filters::all());
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            paths(&plan),
            vec![
                ("a".into(), "dir"),
                ("a/b".into(), "object"),
                ("a/c".into(), "dir"),
                ("a/c/d".into(), "object"),
                ("a b".into(), "object"),
                ("a-b".into(), "object"),
                ("docs".into(), "marker"),
                ("docs/x.pdf".into(), "object"),
                ("z".into(), "object"),
            ]
        );
        for w in plan.windows(2) {
            assert_eq!(cmp_paths(&w[0].path, &w[1].path), Ordering::Less);
        }
        // A synthesized folder takes the time of the newest object under it; a marker its own.
        let time = |p: &str| {
            plan.iter()
                .find(|x| x.path == p.as_bytes())
                .unwrap()
                .mtime_ns
        };
        assert_eq!(time("a"), 30_000_000_000);
        assert_eq!(time("a/c"), 20_000_000_000);
        assert_eq!(time("docs"), 5_000_000_000);
    }

    #[test]
    fn keys_that_are_not_paths_and_files_in_the_way_of_folders_are_skipped() {
        let listed = vec![
            object("", 0, 1),
            object("a", 3, 1),
            object("a/../b", 1, 1),
            object("a//b", 1, 1),
            object("a/b", 1, 1),
            object("c", 1, 1),
            object("c/", 0, 1),
            object("full/", 9, 1),
            object("/abs", 1, 1),
            object("ok", 1, 1),
        ];
        let (plan, skipped) = plan(listed, &Filters::all());
        assert_eq!(
            paths(&plan),
            vec![
                ("a".into(), "dir"),
                ("a/b".into(), "object"),
                ("c".into(), "marker"),
                ("ok".into(), "object"),
            ]
        );
        let skipped: Vec<&str> = skipped.iter().map(|(k, _)| k.as_str()).collect();
        for key in ["a/../b", "a//b", "full/", "/abs", "a", "c"] {
            assert!(skipped.contains(&key), "{key} in {skipped:?}");
        }
        assert_eq!(skipped.len(), 6);
    }

    #[test]
    fn filters_apply_to_keys_as_paths() {
        let listed = vec![
            object("cache/x.pdf", 1, 1),
            object("keep/a.pdf", 1, 1),
            object("keep/b.tmp", 1, 1),
            object("top.pdf", 1, 1),
        ];
        let filters =
            Filters::new(&["**/*.pdf".into()], &["cache".into(), "**/*.tmp".into()]).unwrap();
        let (plan, _) = plan(listed, &filters);
        assert_eq!(
            paths(&plan),
            vec![
                ("keep".into(), "dir"),
                ("keep/a.pdf".into(), "object"),
                ("top.pdf".into(), "object"),
            ]
        );
    }

    #[test]
    fn an_unchanged_object_is_told_by_etag_or_else_by_time() {
        let mut old = record(b"a".to_vec(), EntryKind::File, 7);
        old.size = 3;
        old.object = Some(ObjectInfo {
            etag: "e1".into(),
            ..ObjectInfo::default()
        });
        assert!(unchanged(&old, 3, Some("e1"), 99));
        assert!(!unchanged(&old, 3, Some("e2"), 7));
        assert!(!unchanged(&old, 4, Some("e1"), 7));
        assert!(unchanged(&old, 3, None, 7));
        assert!(!unchanged(&old, 3, None, 8));
        // A record of a folder snapshot is never taken for an object.
        old.object = None;
        assert!(!unchanged(&old, 3, None, 7));
    }
}

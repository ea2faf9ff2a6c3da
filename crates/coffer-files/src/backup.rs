//! Taking a snapshot of a local folder: [`take_snapshot`].
//!
//! The walk is depth-first with each folder's children sorted by name bytes, which is the
//! listing order ([`crate::entry::cmp_paths`]), so entries are written as they are found and the
//! parent snapshot's listing is read alongside in the same order (a merge join): memory grows
//! with the depth of the tree and the width of one folder, not with the number of files.
//!
//! - Symlinks are recorded, never followed (a symlinked folder is a symlink entry).
//! - A file with more than one link whose device and inode were already recorded becomes a
//!   hard link entry to the first path (only such files are remembered).
//! - A file whose size, modification time, status change time and inode equal its parent
//!   entry's keeps the parent's chunks unread, unless `full_scan` (and if a chunk is no longer
//!   in the index, it is read again).
//! - A file that vanishes, cannot be read, or changes while read (its size or modification time
//!   before reading differ from after), and entries of other types (FIFOs, sockets, devices) are
//!   recorded in the summary's skipped list; the snapshot goes on unless `fail_on_unreadable`.
//!
//! Folders are listed and file contents read on blocking threads (the `lstat` of each entry is
//! made in place: one short system call). Up to [`READ_AHEAD`] files are read at once, ahead of
//! the one being stored: the walk goes on while they are read, and its entries wait in a queue
//! behind them, so the listing keeps the walk's order. Each file's chunks cross a channel of two
//! to the async side, which stores them; the chunk store's last pack and index file are flushed
//! before the summary is returned, so a summary never names a chunk that is not stored.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use coffer_core::error::{Error, ErrorKind, Result};
use globset::{GlobSet, GlobSetBuilder};
use std::collections::{HashMap, HashSet, VecDeque};

use crate::chunk_id::ChunkId;
use crate::chunker;
use crate::entry::{Entry, EntryKind, cmp_paths, display_path, validate_path};
use crate::store::{ChunkReceiver, ChunkStore};
use crate::tree::{ListingReader, ListingWriter, SnapshotSummary};

/// Which entries of a source a snapshot records, by glob on the path relative to the root
/// (`documents/**`, `**/*.tmp`; `*` does not cross `/`).
///
/// An excluded entry is left out, and an excluded folder with everything under it. With include
/// globs, only the files and symlinks that match one are recorded; folders are still walked and
/// recorded so that the included entries keep their parents.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl Filters {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Filters from include and exclude globs; an invalid glob is a configuration error.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        Ok(Self {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    pub(crate) fn excluded(&self, path: &[u8]) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|set| set.is_match(OsStr::from_bytes(path)))
    }

    pub(crate) fn included(&self, path: &[u8]) -> bool {
        self.include
            .as_ref()
            .is_none_or(|set| set.is_match(OsStr::from_bytes(path)))
    }
}

fn build(globs: &[String]) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        set.add(
            globset::GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::config(format!("invalid glob {glob:?}: {e}")))?,
        );
    }
    set.build()
        .map(Some)
        .map_err(|e| Error::config(format!("invalid globs: {e}")))
}

/// How a snapshot is taken.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// The source's name, recorded in the summary (default: the root's last component).
    pub name: Option<String>,
    /// Read every file even when the parent says it is unchanged.
    pub full_scan: bool,
    /// Fail the snapshot on the first entry that cannot be recorded, instead of skipping it.
    pub fail_on_unreadable: bool,
}

/// Takes a snapshot of the folder `source_root` into `store` and returns its summary; the
/// listing and every chunk it names are stored (flushed) when this returns.
///
/// With a `parent` (the previous snapshot of the same source) unchanged files reuse its chunks
/// without being read, unless `options.full_scan`. The root itself must be a readable folder;
/// anything under it that cannot be recorded is skipped and reported (see the module docs).
pub async fn take_snapshot(
    store: &mut ChunkStore<'_>,
    source_root: &Path,
    filters: &Filters,
    parent: Option<&SnapshotSummary>,
    options: &SnapshotOptions,
) -> Result<SnapshotSummary> {
    let root_meta = std::fs::metadata(source_root)
        .map_err(|e| Error::other(format!("reading {}: {e}", source_root.display())))?;
    if !root_meta.is_dir() {
        return Err(Error::config(format!(
            "{} is not a folder",
            source_root.display()
        )));
    }
    let name = options.name.clone().unwrap_or_else(|| {
        source_root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into())
    });
    let mut run = Run {
        root: source_root.to_path_buf(),
        filters,
        options,
        summary: SnapshotSummary::new(name, source_root.to_string_lossy()),
        listing: ListingWriter::new(),
        parent: parent
            .filter(|_| !options.full_scan)
            .map(|p| (ListingReader::new(p), None)),
        links: HashMap::new(),
        queue: VecDeque::new(),
        reading: 0,
        streaming: 0,
        links_being_read: HashSet::new(),
    };
    run.walk(store).await?;
    run.settle_all(store).await?;
    let Run {
        summary, listing, ..
    } = run;
    listing.seal(store, summary).await
}

/// One folder being walked: its path and its remaining children, sorted.
struct Frame {
    path: Vec<u8>,
    children: std::vec::IntoIter<OsString>,
}

struct Run<'f> {
    root: PathBuf,
    filters: &'f Filters,
    options: &'f SnapshotOptions,
    summary: SnapshotSummary,
    listing: ListingWriter,
    /// The parent's listing and the entry it stands at (not yet passed by the walk).
    parent: Option<(ListingReader, Option<Entry>)>,
    /// Files with several links already recorded, by (device, inode).
    links: HashMap<(u64, u64), FirstName>,
    /// Entries found and not yet recorded, in the walk's order.
    queue: VecDeque<Queued>,
    /// How many of them are files being read.
    reading: usize,
    /// How many of those are streamed (larger than a chunk).
    streaming: usize,
    /// Files with several links whose first name is being read, by (device, inode).
    links_being_read: HashSet<(u64, u64)>,
}

/// Files read at once, ahead of the one being stored: enough to keep every core busy reading,
/// hashing, compressing and encrypting, while the memory they hold (a small file whole, or a
/// streamed one's buffer, and two chunks each) stays bounded.
pub const READ_AHEAD: usize = 4;

/// Of those, files larger than a chunk read at once: each streams through an 8 MiB buffer, and
/// two keep both cores busy.
pub const STREAMED_AHEAD: usize = 2;

/// The most entries waiting in the walk's queue (a few hundred bytes each): beyond it the walk
/// waits for the file at the front.
const MAX_QUEUED: usize = 4096;

/// An entry waiting in the walk's queue.
enum Queued {
    /// Recorded as it is.
    Ready(Box<Entry>),
    /// A file being read: recorded once its chunks are stored.
    Reading(Box<Reading>),
}

/// A file being read on a blocking thread.
struct Reading {
    entry: Entry,
    /// Its (device, inode) when it has other links: the first name later ones link to.
    link_key: Option<(u64, u64)>,
    /// Larger than a chunk: streamed through the chunker (an 8 MiB buffer) rather than read
    /// whole.
    streamed: bool,
    chunks: ChunkReceiver,
    reader: tokio::task::JoinHandle<ReadOutcome>,
}

/// The first recorded name of a file with several links: later names link to it and carry its
/// content's chunks (so a restore of a subtree without the first name can still write it).
struct FirstName {
    path: Vec<u8>,
    size: u64,
    chunks: Vec<ChunkId>,
}

impl Run<'_> {
    async fn walk(&mut self, store: &mut ChunkStore<'_>) -> Result<()> {
        let root = self.root.clone();
        let children = read_sorted(root.clone())
            .await?
            .map_err(|e| Error::other(format!("listing {}: {e}", root.display())))?;
        let mut stack = vec![Frame {
            path: Vec::new(),
            children: children.into_iter(),
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.children.next() else {
                stack.pop();
                continue;
            };
            let mut path = frame.path.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            if self.filters.excluded(&path) {
                continue;
            }
            if let Err(e) = validate_path(&path) {
                self.skip(&path, e.to_string())?;
                continue;
            }
            let full = self.root.join(OsStr::from_bytes(&path));
            let meta = match std::fs::symlink_metadata(&full) {
                Ok(meta) => meta,
                Err(e) => {
                    self.skip(&path, io_reason(&e))?;
                    continue;
                }
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                let children = match read_sorted(full).await? {
                    Ok(children) => children,
                    Err(e) => {
                        self.skip(&path, io_reason(&e))?;
                        continue;
                    }
                };
                self.record(store, entry(&path, EntryKind::Dir, &meta))
                    .await?;
                self.summary.dirs += 1;
                stack.push(Frame {
                    path,
                    children: children.into_iter(),
                });
            } else if !self.filters.included(&path) {
                continue;
            } else if kind.is_symlink() {
                let target = match std::fs::read_link(&full) {
                    Ok(target) => target.into_os_string().into_vec(),
                    Err(e) => {
                        self.skip(&path, io_reason(&e))?;
                        continue;
                    }
                };
                let mut e = entry(&path, EntryKind::Symlink, &meta);
                e.target = Some(target);
                self.record(store, e).await?;
                self.summary.symlinks += 1;
            } else if kind.is_file() {
                self.file(store, path, &full, &meta).await?;
            } else {
                let what = if kind.is_fifo() {
                    "a FIFO"
                } else if kind.is_socket() {
                    "a socket"
                } else if kind.is_block_device() || kind.is_char_device() {
                    "a device"
                } else {
                    "of an unknown type"
                };
                self.skip(&path, format!("not recorded: {what}"))?;
            }
        }
        Ok(())
    }

    async fn file(
        &mut self,
        store: &mut ChunkStore<'_>,
        path: Vec<u8>,
        full: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<()> {
        let link_key = (meta.dev(), meta.ino());
        let links = meta.nlink() > 1;
        if links && self.links_being_read.contains(&link_key) {
            // Its first name is still being read: its chunks are needed here.
            self.settle_all(store).await?;
        }
        if links && let Some(first) = self.links.get(&link_key) {
            let mut e = entry(&path, EntryKind::Hardlink, meta);
            e.link = Some(first.path.clone());
            e.size = first.size;
            e.chunks = first.chunks.clone();
            self.record(store, e).await?;
            self.summary.hardlinks += 1;
            return Ok(());
        }
        let mut e = entry(&path, EntryKind::File, meta);
        let reused = match self.parent_entry(store, &path).await? {
            Some(old)
                if matches!(old.kind, EntryKind::File | EntryKind::Hardlink)
                    && old.size == e.size
                    && old.mtime_ns == e.mtime_ns
                    && old.ctime_ns == e.ctime_ns
                    && old.inode == e.inode
                    && old.chunks.iter().all(|c| store.index().contains(c)) =>
            {
                Some(old.chunks)
            }
            _ => None,
        };
        let link_key = links.then_some(link_key);
        match reused {
            Some(chunks) => {
                e.chunks = chunks;
                self.summary.reused_files += 1;
                self.stored_file(&e, link_key);
                self.record(store, e).await
            }
            None => {
                let streamed = meta.size() > chunker::MAX_SIZE as u64;
                while streamed && self.streaming >= STREAMED_AHEAD {
                    self.settle_front(store).await?;
                }
                let (chunks, reader) = start_reading(store, full, meta);
                if let Some(key) = link_key {
                    self.links_being_read.insert(key);
                }
                self.queue.push_back(Queued::Reading(Box::new(Reading {
                    entry: e,
                    link_key,
                    streamed,
                    chunks,
                    reader,
                })));
                self.reading += 1;
                self.streaming += usize::from(streamed);
                while self.reading > READ_AHEAD {
                    self.settle_front(store).await?;
                }
                Ok(())
            }
        }
    }

    /// Counts a file whose chunks are stored and remembers it when it has other links.
    fn stored_file(&mut self, e: &Entry, link_key: Option<(u64, u64)>) {
        self.summary.files += 1;
        self.summary.bytes += e.size;
        if let Some(key) = link_key {
            let first = FirstName {
                path: e.path.clone(),
                size: e.size,
                chunks: e.chunks.clone(),
            };
            self.links.insert(key, first);
        }
    }

    /// Stores the chunks of the file being read at the front of the queue and records it, or
    /// records the entry there.
    async fn settle_front(&mut self, store: &mut ChunkStore<'_>) -> Result<()> {
        match self.queue.pop_front() {
            None => Ok(()),
            Some(Queued::Ready(e)) => self.listing.push(store, &e).await,
            Some(Queued::Reading(reading)) => {
                self.reading -= 1;
                self.streaming -= usize::from(reading.streamed);
                self.finish_reading(store, *reading).await
            }
        }
    }

    /// Settles the whole queue.
    async fn settle_all(&mut self, store: &mut ChunkStore<'_>) -> Result<()> {
        while !self.queue.is_empty() {
            self.settle_front(store).await?;
        }
        Ok(())
    }

    async fn finish_reading(&mut self, store: &mut ChunkStore<'_>, reading: Reading) -> Result<()> {
        let Reading {
            mut entry,
            link_key,
            mut chunks,
            reader,
            ..
        } = reading;
        let (ids, new_bytes) = store.write_all_from(&mut chunks).await?;
        let outcome = reader
            .await
            .map_err(|e| Error::other(format!("the file reader panicked: {e}")))?;
        if let Some(key) = link_key {
            self.links_being_read.remove(&key);
        }
        if let Err(reason) = outcome {
            return self.skip(&entry.path, reason);
        }
        entry.chunks = ids;
        self.summary.read_files += 1;
        self.summary.new_bytes += new_bytes;
        self.stored_file(&entry, link_key);
        // It was at the front of the queue: its turn.
        self.listing.push(store, &entry).await
    }

    /// The parent's entry at `path`, if it has one; passes the parent's entries before it.
    async fn parent_entry(&mut self, store: &ChunkStore<'_>, path: &[u8]) -> Result<Option<Entry>> {
        let Some((reader, current)) = &mut self.parent else {
            return Ok(None);
        };
        loop {
            if current.is_none() {
                match reader
                    .next(store)
                    .await
                    .map_err(|e| e.context("reading the parent snapshot"))?
                {
                    Some(next) => *current = Some(next),
                    None => {
                        self.parent = None;
                        return Ok(None);
                    }
                }
            }
            let at = current.as_ref().expect("set above");
            match cmp_paths(&at.path, path) {
                std::cmp::Ordering::Less => *current = None,
                std::cmp::Ordering::Equal => return Ok(current.take()),
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
    }

    /// Records `e` behind the entries still queued (at once when there are none).
    async fn record(&mut self, store: &mut ChunkStore<'_>, e: Entry) -> Result<()> {
        if self.queue.is_empty() {
            return self.listing.push(store, &e).await;
        }
        self.queue.push_back(Queued::Ready(Box::new(e)));
        // A file being read holds up everything the walk finds after it: in a second backup
        // that reads few files, a long run of unchanged ones would otherwise pile up here.
        while self.queue.len() > MAX_QUEUED {
            self.settle_front(store).await?;
        }
        Ok(())
    }

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
}

fn entry(path: &[u8], kind: EntryKind, meta: &std::fs::Metadata) -> Entry {
    Entry {
        path: path.to_vec(),
        kind,
        size: if kind == EntryKind::File {
            meta.size()
        } else {
            0
        },
        mode: meta.mode() & 0o7777,
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        uid: meta.uid(),
        gid: meta.gid(),
        inode: meta.ino(),
        device: meta.dev(),
        target: None,
        link: None,
        chunks: Vec::new(),
        object: None,
    }
}

/// A folder's children, sorted by name bytes (the listing order within one folder). Read on a
/// blocking thread: a folder of many thousand names takes a while to list.
async fn read_sorted(dir: PathBuf) -> Result<std::io::Result<Vec<OsString>>> {
    tokio::task::spawn_blocking(move || {
        let mut names = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<Vec<_>>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(names)
    })
    .await
    .map_err(|e| Error::other(format!("the folder reader panicked: {e}")))
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "vanished before it was read".into(),
        std::io::ErrorKind::PermissionDenied => "unreadable: permission denied".into(),
        _ => format!("unreadable: {e}"),
    }
}

/// What the reading thread reports: the bytes it read, or why the file is skipped.
type ReadOutcome = std::result::Result<u64, String>;

/// Starts reading one file on a blocking thread, which cuts it into chunks and sends them with
/// their ids ([`ChunkStore::chunk_channel`]); the thread's outcome is the bytes it read or why
/// the file is skipped.
fn start_reading(
    store: &ChunkStore<'_>,
    full: &Path,
    before: &std::fs::Metadata,
) -> (ChunkReceiver, tokio::task::JoinHandle<ReadOutcome>) {
    let (send, rx) = store.chunk_channel();
    let path = full.to_path_buf();
    let (size, mtime) = (before.size(), (before.mtime(), before.mtime_nsec()));
    let ino = before.ino();
    let reader = tokio::task::spawn_blocking(move || -> ReadOutcome {
        // No following: the entry was a regular file when listed; if a symlink took its place
        // since, opening fails rather than reading what the link points at. NONBLOCK keeps a
        // FIFO swapped in from hanging the open.
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| io_reason(&std::io::Error::from(e)))?;
        let mut file = std::fs::File::from(fd);
        let opened = file.metadata().map_err(|e| io_reason(&e))?;
        if !opened.is_file() || opened.ino() != ino {
            return Err("changed while read: replaced before it was opened".into());
        }
        // Small files are read whole and cut in memory (`chunker::split`). When the store
        // stops taking chunks (it failed), the async side reports why.
        let read = chunker::split(&mut file, size, send).map_err(|e| format!("unreadable: {e}"))?;
        let after = file.metadata().map_err(|e| io_reason(&e))?;
        if after.size() != size || (after.mtime(), after.mtime_nsec()) != mtime || read != size {
            return Err(format!(
                "changed while read: {size} bytes when listed, {read} read, {} after",
                after.size()
            ));
        }
        Ok(read)
    });
    (rx, reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_relative_paths() {
        let f = Filters::new(&["docs/**".into()], &["**/*.tmp".into(), "cache".into()]).unwrap();
        assert!(f.included(b"docs/a/b.pdf"));
        assert!(!f.included(b"other.txt"));
        assert!(f.excluded(b"docs/x.tmp") && f.excluded(b"x.tmp") && f.excluded(b"cache"));
        assert!(!f.excluded(b"cache2"));
        assert!(Filters::new(&["a[".into()], &[]).is_err());
        assert!(Filters::all().included(b"anything") && !Filters::all().excluded(b"x"));
    }
}

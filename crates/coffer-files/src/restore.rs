//! Restoring a snapshot into a folder: [`restore_snapshot`]; browsing one: [`list_entries`].
//!
//! The listing comes from storage and is not trusted. Every record's path is checked again when
//! read ([`crate::entry::validate_path`]); a path that could leave the target (absolute, `..`,
//! NUL) is an integrity error naming it, raised before anything is written for that record.
//! Nothing is ever resolved through a symlink in the target: each folder is opened from its
//! parent's descriptor with `O_NOFOLLOW | O_DIRECTORY` (`openat`), starting at the target's own
//! descriptor, and every file, link and folder is created relative to the descriptor of its
//! folder. A symlink planted where the snapshot has a folder is refused (or, with `overwrite`,
//! replaced by the folder) but never followed.
//!
//! Files are written from their chunks, read by range and verified by the [`ChunkStore`].
//! Small files are gathered into batches ([`BATCH_BYTES`], [`BATCH_FILES`]) whose chunks are
//! read pack by pack, neighbours in one range read ([`ChunkStore::read_many`]), so a folder of
//! many small files costs a few requests per pack rather than one per file; a large file streams
//! chunk by chunk, a few chunks read ahead ([`CHUNKS_AHEAD`]). Writes run on blocking threads. A few batches or files are written at once ([`CONCURRENT_FILES`]), so a slow
//! storage round trip for one does not stall the others. Modes (without set-user/group-id bits, since
//! ownership is not restored) and modification times are restored on files, folders (once their
//! contents are in place) and symlinks.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use coffer_core::error::{Error, ErrorKind, Result};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::entry::{Entry, EntryKind, display_path, is_under, validate_path};
use crate::store::ChunkStore;
use crate::tree::{ListingReader, SnapshotSummary};

/// How many files (or batches of small files) are written at the same time.
pub const CONCURRENT_FILES: usize = 4;

/// How many chunks of a large file are read and decoded ahead of the one being written.
pub const CHUNKS_AHEAD: usize = 4;

/// Small files are written in batches of about this many content bytes: the memory a batch
/// holds, and so at most [`CONCURRENT_FILES`] times this for a restore. A file larger than
/// half of it is written on its own, chunk by chunk.
pub const BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// The most files in one batch (each held open until it is written).
pub const BATCH_FILES: usize = 64;

/// Files waiting to be created (in the folder held open beside each) and written. They are
/// created on the writing threads, not in the walk: creating a file can cost a file system more
/// than writing it (ext4 searches its inode bitmaps), and the walk is one thread.
enum Pending {
    /// A file written chunk by chunk.
    One(Arc<OwnedFd>, Box<Entry>),
    /// Small files whose chunks are read together.
    Batch(Vec<(Arc<OwnedFd>, Entry)>),
}

async fn write_pending(store: &ChunkStore<'_>, pending: Pending) -> Result<()> {
    match pending {
        Pending::One(file, entry) => write_file(store, file, *entry).await,
        Pending::Batch(files) => write_batch(store, files).await,
    }
}

/// The files a restore has yet to write: the batch of small files being gathered, and the
/// writes running (at most [`CONCURRENT_FILES`]).
struct Writes<'s, 'a> {
    store: &'s ChunkStore<'a>,
    running:
        FuturesUnordered<std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 's>>>,
    batch: Vec<(Arc<OwnedFd>, Entry)>,
    batch_bytes: u64,
}

impl<'s, 'a> Writes<'s, 'a> {
    fn new(store: &'s ChunkStore<'a>) -> Self {
        Self {
            store,
            running: FuturesUnordered::new(),
            batch: Vec::new(),
            batch_bytes: 0,
        }
    }

    /// Adds `entry`'s file, to be created in `folder`: a large one is written on its own, a small
    /// one joins the batch, which is written once full. Waits while too many writes run.
    async fn add(&mut self, folder: Arc<OwnedFd>, entry: Entry) -> Result<()> {
        if entry.size > BATCH_BYTES / 2 {
            return self.start(Pending::One(folder, Box::new(entry))).await;
        }
        self.batch_bytes += entry.size;
        self.batch.push((folder, entry));
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_FILES {
            self.start_batch().await?;
        }
        Ok(())
    }

    async fn start_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        self.start(Pending::Batch(batch)).await
    }

    async fn start(&mut self, pending: Pending) -> Result<()> {
        self.running
            .push(Box::pin(write_pending(self.store, pending)));
        if self.running.len() >= CONCURRENT_FILES
            && let Some(result) = self.running.next().await
        {
            result?;
        }
        Ok(())
    }

    /// Writes everything added so far, batch included, and waits for it.
    async fn finish(&mut self) -> Result<()> {
        self.start_batch().await?;
        while let Some(result) = self.running.next().await {
            result?;
        }
        Ok(())
    }
}

/// How a restore behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Read the listing and count what would be restored; write nothing.
    pub dry_run: bool,
    /// Restore into a target that is not empty, replacing entries in the way.
    pub overwrite: bool,
}

/// What a restore wrote (or, in a dry run, would write).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Regular files written (hard links written as files included).
    pub files: u64,
    /// Folders created or reused.
    pub dirs: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
}

/// Parses a path filter from the command line (`documents/`): a relative path, trailing `/`
/// allowed; empty or `/` means everything. A path that could escape is a configuration error.
pub(crate) fn parse_filter(filter: Option<&str>) -> Result<Option<Vec<u8>>> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    let trimmed = filter.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    validate_path(trimmed.as_bytes())
        .map_err(|e| Error::config(format!("invalid path filter: {e}")))?;
    Ok(Some(trimmed.as_bytes().to_vec()))
}

/// A snapshot's entries, streamed: at or under a prefix, in listing order.
pub struct EntryStream<'s, 'a> {
    store: &'s ChunkStore<'a>,
    reader: ListingReader,
}

impl EntryStream<'_, '_> {
    /// The next entry, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Entry>> {
        self.reader.next(self.store).await
    }
}

/// The entries of the snapshot `summary` at or under `prefix` (relative to the snapshot's root,
/// `documents/` or `documents`; `None` for all), for `coffer files ls`.
pub fn list_entries<'s, 'a>(
    store: &'s ChunkStore<'a>,
    summary: &SnapshotSummary,
    prefix: Option<&str>,
) -> Result<EntryStream<'s, 'a>> {
    Ok(EntryStream {
        store,
        reader: ListingReader::new(summary).under(parse_filter(prefix)?),
    })
}

/// Restores the snapshot `summary` (or, with `path_filter`, the subtree at that path, which keeps
/// its path under the target) into `target_dir`, created if missing.
///
/// A target that holds anything is refused unless `options.overwrite`. A damaged chunk or a
/// crafted listing stops the restore with an integrity error; what was written before stays.
pub async fn restore_snapshot(
    store: &ChunkStore<'_>,
    summary: &SnapshotSummary,
    path_filter: Option<&str>,
    target_dir: &Path,
    options: &RestoreOptions,
) -> Result<RestoreSummary> {
    let filter = parse_filter(path_filter)?;
    let fail = |what: &str, e: std::io::Error| {
        Error::new(
            ErrorKind::Restore,
            format!("{what} {}: {e}", target_dir.display()),
        )
    };
    match std::fs::read_dir(target_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() && !options.overwrite {
                return Err(Error::refused(format!(
                    "the target {} is not empty: restore into an empty folder or allow overwriting",
                    target_dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !options.dry_run {
                std::fs::create_dir_all(target_dir).map_err(|e| fail("creating", e))?;
            }
        }
        Err(e) => return Err(fail("reading", e)),
    }
    let mut reader = ListingReader::new(summary).under(filter.clone());
    let mut done = RestoreSummary::default();
    if options.dry_run {
        while let Some(entry) = reader.next(store).await? {
            match entry.kind {
                EntryKind::Dir => done.dirs += 1,
                EntryKind::Symlink => done.symlinks += 1,
                EntryKind::File => {
                    done.files += 1;
                    done.bytes += entry.size;
                }
                EntryKind::Hardlink => {
                    if filter.as_ref().is_none_or(|f| is_under(link(&entry), f)) {
                        done.hardlinks += 1;
                    } else {
                        done.files += 1;
                        done.bytes += entry.size;
                    }
                }
            }
        }
        return Ok(done);
    }
    let root = rustix::fs::open(
        target_dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail("opening", e.into()))?;
    let mut restore = Restore {
        root: Arc::new(root),
        stack: Vec::new(),
        overwrite: options.overwrite,
        left: Vec::new(),
    };
    let mut writes = Writes::new(store);
    while let Some(entry) = reader.next(store).await? {
        let parent = restore.enter_parent(&entry.path)?;
        let name = OsStr::from_bytes(last(&entry.path));
        let shown = entry.display();
        match entry.kind {
            EntryKind::Dir => {
                let fd = restore.make_dir(name, &shown)?;
                restore.stack.push(Folder {
                    name: name.as_bytes().to_vec(),
                    fd: Arc::new(fd),
                    times: Some((entry.mode, entry.mtime_ns)),
                });
                done.dirs += 1;
            }
            EntryKind::Symlink => {
                let parent = restore.fd(parent);
                clear(parent, name, &shown, restore.overwrite)?;
                let target = entry.target.as_deref().expect("checked when read");
                rustix::fs::symlinkat(OsStr::from_bytes(target), parent, name)
                    .map_err(|e| restore_error(&shown, "creating the symlink", e))?;
                rustix::fs::utimensat(
                    parent,
                    name,
                    &times(entry.mtime_ns),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| restore_error(&shown, "setting the symlink's time", e))?;
                done.symlinks += 1;
            }
            EntryKind::Hardlink
                if filter.as_ref().is_none_or(|f| is_under(link(&entry), f)) && {
                    // Its first name may still be waiting to be created.
                    writes.finish().await?;
                    restore.hard_link(parent, name, link(&entry), &shown)?
                } =>
            {
                done.hardlinks += 1;
            }
            EntryKind::File | EntryKind::Hardlink => {
                // A hard link whose first name is outside the restored subtree (or is missing)
                // is written as a file: its record carries the same chunks.
                let folder = restore.folder(parent);
                clear(folder.as_fd(), name, &shown, restore.overwrite)?;
                done.files += 1;
                done.bytes += entry.size;
                writes.add(folder, entry).await?;
            }
        }
        if restore.left.len() >= FOLDERS_LEFT_OPEN {
            // Their files may still be being created: finish those first.
            writes.finish().await?;
            restore.finish_left()?;
        }
    }
    writes.finish().await?;
    restore.leave_to(0)?;
    restore.finish_left()?;
    Ok(done)
}

fn link(entry: &Entry) -> &[u8] {
    entry.link.as_deref().expect("checked when read")
}

fn last(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/')
        .next()
        .expect("rsplit yields one")
}

fn restore_error(path: &str, what: &str, e: rustix::io::Errno) -> Error {
    Error::new(
        ErrorKind::Restore,
        format!("{path}: {what}: {}", std::io::Error::from(e)),
    )
}

fn times(mtime_ns: i64) -> Timestamps {
    let at = Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}

/// Set-user-id and set-group-id bits are dropped: ownership is not restored, so they would
/// make files run as the restoring user (root) that never did before.
fn safe_mode(mode: u32) -> Mode {
    Mode::from_raw_mode(mode & 0o1777)
}

/// Writes one file from its chunks, then sets its mode and time. Up to [`CHUNKS_AHEAD`] chunks
/// are read and decoded ahead of the one being written, and each write runs on a blocking
/// thread, so reading, decoding and writing overlap.
async fn write_file(store: &ChunkStore<'_>, folder: Arc<OwnedFd>, entry: Entry) -> Result<()> {
    use std::os::unix::fs::FileExt as _;
    let shown = entry.display();
    let file = Arc::new(create(&folder, &entry)?);
    let mut chunks = futures_util::stream::iter(&entry.chunks)
        .map(|id| store.read(id))
        .buffered(CHUNKS_AHEAD);
    let mut writing: Option<tokio::task::JoinHandle<std::io::Result<()>>> = None;
    let mut written = 0u64;
    let failed =
        |e: &dyn std::fmt::Display| Error::new(ErrorKind::Restore, format!("writing {shown}: {e}"));
    while let Some(data) = chunks.next().await {
        let data = data.map_err(|e| e.context(format!("restoring {shown}")))?;
        if let Some(write) = writing.take() {
            write
                .await
                .map_err(|e| failed(&e))?
                .map_err(|e| failed(&e))?;
        }
        let (at, to) = (written, file.clone());
        written += data.len() as u64;
        writing = Some(tokio::task::spawn_blocking(move || {
            to.write_all_at(&data, at)
        }));
    }
    if let Some(write) = writing {
        write
            .await
            .map_err(|e| failed(&e))?
            .map_err(|e| failed(&e))?;
    }
    finish_file(&file, &entry, written)
}

/// Writes small files whose chunks are read together (see [`ChunkStore::read_many`]); the
/// writes run on a blocking thread.
async fn write_batch(store: &ChunkStore<'_>, files: Vec<(Arc<OwnedFd>, Entry)>) -> Result<()> {
    let ids: Vec<_> = files
        .iter()
        .flat_map(|(_, e)| e.chunks.iter().copied())
        .collect();
    let chunks = store.read_many(&ids).await.map_err(|e| {
        let first = files.first().map(|(_, e)| e.display()).unwrap_or_default();
        e.context(format!(
            "restoring {first} and the {} files after it",
            files.len() - 1
        ))
    })?;
    tokio::task::spawn_blocking(move || {
        for (folder, entry) in files {
            let shown = entry.display();
            let mut file = create(&folder, &entry)?;
            let mut written = 0u64;
            for id in &entry.chunks {
                let data = &chunks[id];
                written += data.len() as u64;
                file.write_all(data)
                    .map_err(|e| Error::new(ErrorKind::Restore, format!("writing {shown}: {e}")))?;
            }
            finish_file(&file, &entry, written)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::other(format!("the file writer panicked: {e}")))?
}

/// Creates `entry`'s file in `folder`, new (never through a symlink, never over anything: the
/// walk cleared the name), private until its mode is set.
fn create(folder: &OwnedFd, entry: &Entry) -> Result<std::fs::File> {
    rustix::fs::openat(
        folder,
        OsStr::from_bytes(last(&entry.path)),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map(std::fs::File::from)
    .map_err(|e| restore_error(&entry.display(), "creating the file", e))
}

/// Checks a written file's length against its record, then sets its mode and time.
fn finish_file(file: &std::fs::File, entry: &Entry, written: u64) -> Result<()> {
    let shown = entry.display();
    if written != entry.size {
        return Err(Error::integrity(format!(
            "{shown}: its chunks hold {written} bytes where the listing says {}",
            entry.size
        )));
    }
    rustix::fs::fchmod(file, safe_mode(entry.mode))
        .map_err(|e| restore_error(&shown, "setting the mode", e))?;
    rustix::fs::futimens(file, &times(entry.mtime_ns))
        .map_err(|e| restore_error(&shown, "setting the time", e))?;
    Ok(())
}

/// A folder of the target held open, with the mode and time to give it once its contents are in
/// place (`None` for folders the listing does not have, above a path filter).
struct Folder {
    name: Vec<u8>,
    fd: Arc<OwnedFd>,
    times: Option<(u32, i64)>,
}

/// Folders left but not yet given their modes and times, at most this many: their files may
/// still be being created on the writing threads, so the restore waits for those, then sets
/// them all and closes them. This bounds the descriptors held open.
const FOLDERS_LEFT_OPEN: usize = 256;

/// Where a restore stands: the target's descriptor and the open folders from it down to the
/// current one (the listing is depth-first, so this is a stack).
struct Restore {
    root: Arc<OwnedFd>,
    stack: Vec<Folder>,
    overwrite: bool,
    /// Folders left, deepest first, whose modes and times are set once their files are written
    /// ([`Restore::finish_left`]).
    left: Vec<Folder>,
}

/// Which folder an entry goes in: the target itself or one on the stack.
type Depth = usize;

impl Restore {
    fn fd(&self, depth: Depth) -> std::os::fd::BorrowedFd<'_> {
        match depth {
            0 => self.root.as_fd(),
            n => self.stack[n - 1].fd.as_fd(),
        }
    }

    /// The folder at `depth`, for a writing thread to create a file in.
    fn folder(&self, depth: Depth) -> Arc<OwnedFd> {
        match depth {
            0 => self.root.clone(),
            n => self.stack[n - 1].fd.clone(),
        }
    }

    /// Makes the stack hold the folders of `path`'s parent, opening (or creating) each with no
    /// following; returns the depth of the parent.
    fn enter_parent(&mut self, path: &[u8]) -> Result<Depth> {
        let parents: Vec<&[u8]> = {
            let mut parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
            parts.pop();
            parts
        };
        let common = self
            .stack
            .iter()
            .zip(&parents)
            .take_while(|(folder, part)| folder.name == **part)
            .count();
        self.leave_to(common)?;
        for part in &parents[common..] {
            let name = OsStr::from_bytes(part);
            let fd = self.make_dir(name, &display_path(path))?;
            self.stack.push(Folder {
                name: part.to_vec(),
                fd: Arc::new(fd),
                times: None,
            });
        }
        Ok(self.stack.len())
    }

    /// Leaves the folders deeper than `depth`: their entries are all created or on their way
    /// (files are created on the writing threads), so their modes and times are set later, by
    /// [`Restore::finish_left`], once no later creation can change their times.
    fn leave_to(&mut self, depth: Depth) -> Result<()> {
        while self.stack.len() > depth {
            let folder = self.stack.pop().expect("deeper than depth");
            self.left.push(folder);
        }
        Ok(())
    }

    /// Sets the modes and times of the folders left (deepest first, as they were left) and
    /// closes them; every file written into them must be done.
    fn finish_left(&mut self) -> Result<()> {
        for folder in self.left.drain(..) {
            if let Some((mode, mtime)) = folder.times {
                let shown = display_path(&folder.name);
                rustix::fs::fchmod(&*folder.fd, safe_mode(mode))
                    .map_err(|e| restore_error(&shown, "setting the mode", e))?;
                rustix::fs::futimens(&*folder.fd, &times(mtime))
                    .map_err(|e| restore_error(&shown, "setting the time", e))?;
            }
        }
        Ok(())
    }

    /// Opens folder `name` in the current folder, creating it if missing. Whatever else is in
    /// the way (a symlink above all) is refused, or replaced with `overwrite`: never followed.
    fn make_dir(&self, name: &OsStr, shown: &str) -> Result<OwnedFd> {
        let parent = self.fd(self.stack.len());
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {}
            Ok(_) => {
                if !self.overwrite {
                    return Err(Error::refused(format!(
                        "{shown}: something other than a folder (a symlink?) is in the way of \
                         folder {:?}",
                        name.to_string_lossy()
                    )));
                }
                rustix::fs::unlinkat(parent, name, AtFlags::empty())
                    .map_err(|e| restore_error(shown, "removing what is in the way", e))?;
                mkdir(parent, name, shown)?;
            }
            Err(rustix::io::Errno::NOENT) => mkdir(parent, name, shown)?,
            Err(e) => return Err(restore_error(shown, "looking at the target", e)),
        }
        rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => Error::refused(format!(
                "{shown}: {:?} became a symlink during the restore: not followed",
                name.to_string_lossy()
            )),
            e => restore_error(shown, "opening a folder", e),
        })
    }

    /// Links `name` in folder `depth` to the earlier `link` (already restored); false when that
    /// is not a restored regular file, so the caller writes the content instead.
    fn hard_link(&mut self, depth: Depth, name: &OsStr, link: &[u8], shown: &str) -> Result<bool> {
        // Walk to the link's folder from the target with no following, like every folder.
        let mut parts: Vec<&[u8]> = link.split(|&b| b == b'/').collect();
        let link_name = OsStr::from_bytes(parts.pop().expect("split yields one"));
        let mut folder: Option<OwnedFd> = None;
        for part in parts {
            let from = folder.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
            match rustix::fs::openat(
                from,
                OsStr::from_bytes(part),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => folder = Some(fd),
                Err(_) => return Ok(false),
            }
        }
        let from = folder.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
        match rustix::fs::statat(from, link_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {}
            _ => return Ok(false),
        }
        let parent = self.fd(depth);
        clear(parent, name, shown, self.overwrite)?;
        rustix::fs::linkat(from, link_name, parent, name, AtFlags::empty())
            .map_err(|e| restore_error(shown, "creating the hard link", e))?;
        Ok(true)
    }
}

fn mkdir(parent: std::os::fd::BorrowedFd<'_>, name: &OsStr, shown: &str) -> Result<()> {
    // 0700 until the folder's own mode is set after its contents.
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(restore_error(shown, "creating a folder", e)),
    }
}

/// Removes what is at `name` so a file or link can be created there: refused without
/// `overwrite`, and a folder is never removed (its contents may be the user's).
fn clear(
    parent: std::os::fd::BorrowedFd<'_>,
    name: &OsStr,
    shown: &str,
    overwrite: bool,
) -> Result<()> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(restore_error(shown, "looking at the target", e)),
        Ok(_) if !overwrite => Err(Error::refused(format!(
            "{shown} exists in the target: allow overwriting to replace it"
        ))),
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
            Err(Error::refused(format!(
                "{shown}: a folder in the target is in the way of a file"
            )))
        }
        Ok(_) => rustix::fs::unlinkat(parent, name, AtFlags::empty())
            .map_err(|e| restore_error(shown, "removing what is in the way", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_filters_are_relative_and_cannot_escape() {
        assert_eq!(
            parse_filter(Some("documents/")).unwrap(),
            Some(b"documents".to_vec())
        );
        assert_eq!(parse_filter(Some("/")).unwrap(), None);
        assert_eq!(parse_filter(None).unwrap(), None);
        for bad in ["../x", "/etc", "a/../../b", "a\0b"] {
            let err = parse_filter(Some(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn times_split_negative_nanoseconds_properly() {
        let t = times(-1);
        assert_eq!(
            (t.last_modification.tv_sec, t.last_modification.tv_nsec),
            (-1, 999_999_999)
        );
    }
}

//! Pruning chunks: [`prune_chunks`], the chunk side of `coffer prune`, in two phases.
//!
//! The caller deletes the manifests of the snapshots retention no longer keeps, then passes the
//! summaries of the snapshots that remain. A run:
//!
//! 1. reads every kept snapshot's listing and collects the chunks they reference (the listing's
//!    own chunks and every entry's); a listing that cannot be read stops the run, since nothing
//!    can then be known to be garbage;
//! 2. takes every blob of the repository (from the index files, and from the headers of packs no
//!    index file names) whose chunk no kept snapshot references: the **garbage**;
//! 3. **sweeps**: a garbage blob is **due** when a mark object written at least `grace` before
//!    `now` names that very blob (pack and chunk) and its pack is not younger than `grace`. A pack
//!    whose every blob is due is deleted; a pack whose due blobs hold more than
//!    [`PruneOptions::repack_percent`] of its blob bytes is **repacked** (its other blobs read,
//!    verified and written into new packs) and then deleted;
//! 4. **marks**: garbage not yet named by a mark is recorded in a new mark object
//!    `gc/marks/TIME-RAND.json`; marks are rewritten without what is no longer garbage (deleted,
//!    or referenced again). A blob is therefore never deleted by the run that first finds it
//!    unreferenced.
//!
//! # Why a backup running meanwhile loses nothing
//!
//! A backup deduplicates against the index it loaded when it started. Two kinds of backups could
//! rely on a chunk the sweep deletes:
//!
//! - one that started **before** the mark naming the chunk was written: it finishes (and its
//!   snapshot, referencing the chunk, becomes visible) before `grace` has passed since the mark,
//!   so the sweep, which runs later, sees the chunk referenced and keeps it. This is why `grace`
//!   must exceed the longest backup plus the longest prune (a mark is dated with the run's
//!   `now` but stored at its end); [`MIN_GRACE`] is enforced, [`DEFAULT_GRACE`] is 24 hours;
//! - one that started **after** the mark: [`ChunkStore::open`] loads the marks
//!   ([`marked_chunks`]) and does not deduplicate against a marked chunk; it stores its own copy,
//!   in a new pack that no mark names, which no sweep touches until a later mark names it.
//!
//! Chunks of a backup still running (its packs and index files exist, its manifest does not)
//! are garbage to a run and get marked; by the time the mark is due the backup has finished and
//! references them, or has failed and left garbage. Packs younger than `grace` by their
//! last-modified time are never deleted nor repacked, as a second guard.
//!
//! A backup never stores a pack under the name of a pack that exists ([`PackWriter`]): without
//! encryption its copies of marked chunks could otherwise make a pack byte-identical to the
//! marked one, which the sweep would delete.
//!
//! This needs no lock between backups and a prune; two prunes must not run at once. `coffer
//! prune` takes the exclusive lock anyway, so that restores and
//! verifies, which read packs by an index loaded at their start, do not see a repacked pack
//! vanish under them. The clocks involved are the `now` of successive prunes (which must not go
//! backwards by more than `grace` minus the longest backup) and, for the second guard, the
//! storage's.
//!
//! # Order of writes
//!
//! So that at every moment every live chunk is findable: new packs, then the index file naming
//! them, then the rewritten index files (without the deleted and repacked packs), then the
//! deletion of the old index files, then of the old packs, and last the marks. The format
//! document (*Pruning chunks*) says what a crash at each step leaves.
//!
//! Memory: the referenced set (a [`ChunkSet`]: 32 bytes a chunk plus a control byte, in a table
//! at most 7/8 full, so 37 to 74 bytes a chunk), every blob of the repository as a pack header
//! entry (48 bytes each), and the garbage blobs of the marks; a repack holds one old pack and one
//! pack being written (each about 16 MiB).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::time::Duration;

use coffer_core::error::{Error, ErrorKind, Result};
use coffer_core::storage::Storage;
use futures_util::StreamExt;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::chunk_id::ChunkId;
use crate::index::{CONCURRENT_READS, INDEX, IdHasher, IndexWriter, Location, decode_index_file};
use crate::pack::{PackEntry, PackId, PackInfo, PackReader, PackWriter, TARGET_SIZE};
use crate::store::ChunkStore;
use crate::tree::{ListingReader, SnapshotSummary};

/// Where mark objects live.
pub const MARKS: &str = "gc/marks/";
/// The grace period a prune uses unless told otherwise: a marked chunk is deleted only this long
/// after it was marked. It must exceed the longest backup.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The shortest grace period accepted: below it, a backup that started before a mark could
/// still be running when the sweep deletes a chunk it deduplicated against.
pub const MIN_GRACE: Duration = Duration::from_secs(3600);
/// The share of a pack's blob bytes that must be due garbage for the pack to be repacked.
pub const DEFAULT_REPACK_PERCENT: u8 = 50;

/// A set of chunk ids, hashed by their first eight bytes (ids are uniformly random).
pub type ChunkSet = HashSet<ChunkId, BuildHasherDefault<IdHasher>>;

/// How a prune runs.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How long after its mark a garbage blob may be deleted (at least [`MIN_GRACE`]).
    pub grace: Duration,
    /// A pack whose due garbage is more than this percentage of its blob bytes is repacked.
    pub repack_percent: u8,
    /// Compute and report only; write and delete nothing.
    pub dry_run: bool,
    /// The size new packs are closed at (tests use small packs).
    pub pack_target_size: usize,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            repack_percent: DEFAULT_REPACK_PERCENT,
            dry_run: false,
            pack_target_size: TARGET_SIZE,
        }
    }
}

/// What a prune found and did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Kept snapshots whose listings were read.
    pub snapshots: u64,
    /// Distinct chunks they reference.
    pub chunks_referenced: u64,
    /// Packs in the repository (indexed or not).
    pub packs: u64,
    /// Packs no index file names (read by their headers).
    pub unindexed_packs: u64,
    /// Garbage blobs: blobs whose chunk no kept snapshot references.
    pub garbage_blobs: u64,
    /// Garbage blobs named by no mark before, marked now.
    pub chunks_marked: u64,
    /// Garbage blobs marked long enough ago to be deleted.
    pub chunks_due: u64,
    /// Blobs removed from the repository (in deleted or repacked packs).
    pub chunks_deleted: u64,
    /// Packs deleted whole (every blob due).
    pub packs_deleted: u64,
    /// Packs repacked (their other blobs copied, then deleted).
    pub packs_repacked: u64,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Bytes of the packs deleted and repacked, less the bytes of the new packs.
    pub bytes_freed: u64,
    /// Bytes of the new packs.
    pub bytes_rewritten: u64,
    /// Index files written (for new packs, and rewrites).
    pub index_files_written: u64,
    /// Index files deleted (rewritten or naming only deleted packs).
    pub index_files_deleted: u64,
    /// Mark objects written.
    pub marks_written: u64,
    /// Mark objects deleted (emptied or rewritten).
    pub marks_deleted: u64,
    /// Mark objects that could not be read (left alone; their blobs are not due).
    pub marks_unreadable: u64,
}

/// A pack as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackState {
    /// The pack.
    pub id: PackId,
    /// Whether an index file names it (readers find its chunks).
    pub indexed: bool,
    /// Whether it is younger than the grace period (never deleted nor repacked).
    pub young: bool,
    /// Its blobs.
    pub entries: Vec<PackEntry>,
}

/// What a sweep does to the packs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Packs deleted whole: every blob due.
    pub delete: Vec<PackId>,
    /// Packs repacked, each with the blobs copied out of it before it is deleted.
    pub repack: Vec<(PackId, Vec<PackEntry>)>,
}

impl Plan {
    /// Whether `pack` goes (deleted or repacked).
    fn removes(&self) -> HashSet<PackId> {
        self.delete
            .iter()
            .copied()
            .chain(self.repack.iter().map(|(p, _)| *p))
            .collect()
    }
}

/// Decides which packs to delete and which to repack.
///
/// `due` holds the blobs that may go (garbage, marked long enough ago); a blob whose chunk is in
/// `referenced` never goes, whatever `due` says. A pack is deleted when every blob is due,
/// repacked when its due blobs hold more than `repack_percent` of its blob bytes. A repacked
/// pack's other blobs are copied, once per chunk, except those whose chunk also lives in an
/// indexed pack that stays (a duplicate left by two backups that raced, or by a repack that was
/// interrupted).
pub fn plan(
    packs: &[PackState],
    referenced: &ChunkSet,
    due: &HashSet<(PackId, ChunkId)>,
    repack_percent: u8,
) -> Plan {
    let is_due =
        |pack: &PackId, e: &PackEntry| !referenced.contains(&e.id) && due.contains(&(*pack, e.id));
    let mut delete = Vec::new();
    let mut repack = Vec::new();
    for state in packs.iter().filter(|s| !s.young) {
        let total: u64 = state.entries.iter().map(|e| e.length as u64).sum();
        let due_bytes: u64 = state
            .entries
            .iter()
            .filter(|e| is_due(&state.id, e))
            .map(|e| e.length as u64)
            .sum();
        let due_count = state
            .entries
            .iter()
            .filter(|e| is_due(&state.id, e))
            .count();
        if due_count == state.entries.len() {
            delete.push(state.id);
        } else if due_count > 0 && due_bytes * 100 > total * repack_percent as u64 {
            repack.push(state.id);
        }
    }
    let going: HashSet<PackId> = delete.iter().chain(repack.iter()).copied().collect();
    let mut elsewhere: HashSet<ChunkId> = packs
        .iter()
        .filter(|s| s.indexed && !going.contains(&s.id))
        .flat_map(|s| s.entries.iter().map(|e| e.id))
        .collect();
    let by_id: HashMap<PackId, &PackState> = packs.iter().map(|s| (s.id, s)).collect();
    let repack = repack
        .into_iter()
        .map(|pack| {
            let copies = by_id[&pack]
                .entries
                .iter()
                .filter(|e| !is_due(&pack, e))
                .filter(|e| elsewhere.insert(e.id))
                .copied()
                .collect();
            (pack, copies)
        })
        .collect();
    Plan { delete, repack }
}

/// A mark object: `{"version":1,"created":TIME,"packs":[{"id":PACKID,"chunks":[CHUNKID,…]}]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MarkFile {
    version: u32,
    created: Timestamp,
    packs: Vec<MarkPack>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MarkPack {
    id: String,
    chunks: Vec<String>,
}

/// A mark read back.
#[derive(Debug, Clone)]
struct Mark {
    key: String,
    created: Timestamp,
    blobs: Vec<(PackId, ChunkId)>,
}

fn decode_mark(key: &str, bytes: &[u8]) -> Result<Mark> {
    let file: MarkFile =
        serde_json::from_slice(bytes).map_err(|e| Error::integrity(format!("mark {key}: {e}")))?;
    if file.version != 1 {
        return Err(Error::integrity(format!(
            "mark {key}: unknown version {}",
            file.version
        )));
    }
    let mut blobs = Vec::new();
    for pack in &file.packs {
        let id = PackId::from_hex(&pack.id)?;
        for chunk in &pack.chunks {
            blobs.push((id, ChunkId::from_hex(chunk)?));
        }
    }
    Ok(Mark {
        key: key.to_string(),
        created: file.created,
        blobs,
    })
}

fn encode_mark(created: Timestamp, blobs: &[(PackId, ChunkId)]) -> Vec<u8> {
    let mut by_pack: Vec<(PackId, Vec<ChunkId>)> = Vec::new();
    let mut sorted = blobs.to_vec();
    sorted.sort();
    for (pack, chunk) in sorted {
        match by_pack.last_mut() {
            Some((p, chunks)) if *p == pack => chunks.push(chunk),
            _ => by_pack.push((pack, vec![chunk])),
        }
    }
    let file = MarkFile {
        version: 1,
        created,
        packs: by_pack
            .into_iter()
            .map(|(pack, chunks)| MarkPack {
                id: pack.to_hex(),
                chunks: chunks.iter().map(ChunkId::to_hex).collect(),
            })
            .collect(),
    };
    let mut out = serde_json::to_vec(&file).expect("serializable");
    out.push(b'\n');
    out
}

fn mark_key(created: Timestamp) -> Result<String> {
    let mut rand = [0u8; 6];
    getrandom::getrandom(&mut rand)
        .map_err(|e| Error::other(format!("no random numbers for a mark name: {e}")))?;
    Ok(format!(
        "{MARKS}{}-{}.json",
        created.strftime("%Y%m%dT%H%M%SZ"),
        hex::encode(rand)
    ))
}

/// Reads every mark; those that do not parse are returned by key (with a warning).
async fn load_marks(storage: &dyn Storage) -> Result<(Vec<Mark>, Vec<String>)> {
    let mut marks = Vec::new();
    let mut unreadable = Vec::new();
    for object in storage.list(MARKS).await? {
        let bytes = match storage.get_bytes(&object.key).await {
            Ok(bytes) => bytes,
            // Removed by a prune meanwhile.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match decode_mark(&object.key, &bytes) {
            Ok(mark) => marks.push(mark),
            Err(e) => {
                tracing::warn!(key = %object.key, error = %e, "unreadable mark: left alone");
                unreadable.push(object.key);
            }
        }
    }
    Ok((marks, unreadable))
}

/// Every chunk some mark names: a backup does not deduplicate against these
/// ([`ChunkStore::open`] loads them), so that no backup started after a mark relies on a chunk
/// the sweep may delete. Marks that do not parse are skipped (a sweep skips them too).
pub async fn marked_chunks(storage: &dyn Storage) -> Result<ChunkSet> {
    let (marks, _) = load_marks(storage).await?;
    Ok(marks
        .iter()
        .flat_map(|m| m.blobs.iter().map(|(_, c)| *c))
        .collect())
}

/// The chunks the snapshots `kept` reference: their listings' chunks and every entry's.
pub async fn referenced_chunks(
    store: &ChunkStore<'_>,
    kept: &[SnapshotSummary],
) -> Result<ChunkSet> {
    let mut referenced = ChunkSet::default();
    for summary in kept {
        referenced.extend(summary.listing.iter().copied());
        let mut reader = ListingReader::new(summary);
        while let Some(entry) = reader.next(store).await.map_err(|e| {
            e.context(format!(
                "reading the listing of snapshot {} (nothing was pruned)",
                summary.source_name
            ))
        })? {
            referenced.extend(entry.chunks.iter().copied());
        }
    }
    Ok(referenced)
}

/// Prunes the chunks the snapshots `kept` do not reference: marks new garbage, deletes or
/// repacks what was marked at least `options.grace` before `now` and is still garbage (see the
/// module docs). `store` must have the chunk-id key (and the identity, for an encrypted
/// repository) to read listings and verify repacked blobs; its index is used for the listings.
///
/// `kept` must be every snapshot the repository keeps: a snapshot left out loses its chunks
/// after the grace period. A grace period under [`MIN_GRACE`] is refused.
pub async fn prune_chunks(
    store: &ChunkStore<'_>,
    kept: &[SnapshotSummary],
    now: Timestamp,
    options: &PruneOptions,
) -> Result<PruneReport> {
    prune_chunks_also_keeping(store, kept, &[], now, options).await
}

/// [`prune_chunks`], keeping also the chunks in `also_kept`: what other records in the
/// repository reference directly, without a listing (configuration versions).
pub async fn prune_chunks_also_keeping(
    store: &ChunkStore<'_>,
    kept: &[SnapshotSummary],
    also_kept: &[ChunkId],
    now: Timestamp,
    options: &PruneOptions,
) -> Result<PruneReport> {
    if options.grace < MIN_GRACE {
        return Err(Error::config(format!(
            "a grace period of {:?} is shorter than the minimum {:?}: a backup running during \
             the prune could lose chunks",
            options.grace, MIN_GRACE
        )));
    }
    let grace = SignedDuration::try_from(options.grace)
        .map_err(|e| Error::config(format!("grace period {:?}: {e}", options.grace)))?;
    let storage = store.storage();
    let mut report = PruneReport {
        dry_run: options.dry_run,
        snapshots: kept.len() as u64,
        ..PruneReport::default()
    };

    // Marks first: a mark written after this listing is at most this run's age, never due.
    let (marks, unreadable) = load_marks(storage).await?;
    report.marks_unreadable = unreadable.len() as u64;

    let mut referenced = referenced_chunks(store, kept).await?;
    referenced.extend(also_kept.iter().copied());
    report.chunks_referenced = referenced.len() as u64;

    // The packs: index files say what most hold; the others are read by their headers.
    let index_keys: Vec<String> = storage
        .list(INDEX)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut index_files: Vec<(String, Vec<PackInfo>)> = Vec::new();
    let mut files = futures_util::stream::iter(index_keys)
        .map(|key| async move {
            let bytes = storage.get_bytes(&key).await?;
            let packs = decode_index_file(&key, &bytes)?;
            Ok::<_, Error>((key, packs))
        })
        .buffered(CONCURRENT_READS);
    while let Some(file) = files.next().await {
        index_files.push(file?);
    }
    drop(files);
    let stored = storage.list(crate::pack::PACKS).await?;
    let mut packs: Vec<PackState> = Vec::new();
    let mut seen: HashMap<PackId, usize> = HashMap::new();
    let young =
        |modified: Option<Timestamp>| modified.is_some_and(|m| now.duration_since(m) < grace);
    let stored: HashMap<PackId, (u64, Option<Timestamp>)> = stored
        .into_iter()
        .filter_map(|o| PackId::from_key(&o.key).map(|id| (id, (o.size, o.last_modified))))
        .collect();
    for (_, infos) in &index_files {
        for info in infos {
            let Some(&(_, modified)) = stored.get(&info.id) else {
                // Named but missing: nothing to delete; verify reports it.
                continue;
            };
            match seen.get(&info.id) {
                // Named by two index files (an interrupted rewrite): the same header.
                Some(_) => {}
                None => {
                    seen.insert(info.id, packs.len());
                    packs.push(PackState {
                        id: info.id,
                        indexed: true,
                        young: young(modified),
                        entries: info.entries.clone(),
                    });
                }
            }
        }
    }
    let reader = PackReader::new(storage);
    let mut unindexed: Vec<(PackId, Option<Timestamp>)> = stored
        .iter()
        .filter(|(id, _)| !seen.contains_key(id))
        .map(|(id, (_, modified))| (*id, *modified))
        .collect();
    unindexed.sort();
    for (id, modified) in unindexed {
        match reader.read_header(&id).await {
            Ok(entries) => {
                report.unindexed_packs += 1;
                seen.insert(id, packs.len());
                packs.push(PackState {
                    id,
                    indexed: false,
                    young: young(modified),
                    entries,
                });
            }
            // Gone meanwhile, or damaged: left alone.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Integrity) => {
                tracing::warn!(pack = %id, error = %e, "unindexed pack unreadable: left alone");
            }
            Err(e) => return Err(e),
        }
    }
    report.packs = packs.len() as u64;

    // Garbage now, and which of it is due.
    let garbage: HashSet<(PackId, ChunkId)> = packs
        .iter()
        .flat_map(|s| s.entries.iter().map(move |e| (s.id, e.id)))
        .filter(|(_, c)| !referenced.contains(c))
        .collect();
    report.garbage_blobs = garbage.len() as u64;
    let due: HashSet<(PackId, ChunkId)> = marks
        .iter()
        .filter(|m| now.duration_since(m.created) >= grace)
        .flat_map(|m| m.blobs.iter().copied())
        .filter(|b| garbage.contains(b))
        .collect();
    report.chunks_due = due.len() as u64;

    let plan = plan(&packs, &referenced, &due, options.repack_percent);
    let going = plan.removes();
    let by_id: HashMap<PackId, &PackState> = packs.iter().map(|s| (s.id, s)).collect();
    report.packs_deleted = plan.delete.len() as u64;
    report.packs_repacked = plan.repack.len() as u64;
    let pack_size = |id: &PackId| stored.get(id).map_or(0, |(size, _)| *size);
    let mut freed: u64 = going.iter().map(pack_size).sum();
    for pack in &going {
        let state = by_id[pack];
        let copied = plan
            .repack
            .iter()
            .find(|(p, _)| p == pack)
            .map_or(0, |(_, c)| c.len());
        report.chunks_deleted += (state.entries.len() - copied) as u64;
    }

    // Which index files change.
    let rewrites: Vec<(&String, Vec<PackInfo>)> = index_files
        .iter()
        .filter(|(_, infos)| infos.iter().any(|i| going.contains(&i.id)))
        .map(|(key, infos)| {
            let rest = infos
                .iter()
                .filter(|i| !going.contains(&i.id))
                .cloned()
                .collect::<Vec<_>>();
            (key, rest)
        })
        .collect();

    // The marks after this run: what is still garbage and stays, by mark; new garbage apart.
    let stays = |b: &(PackId, ChunkId)| garbage.contains(b) && !going.contains(&b.0);
    let already: HashSet<(PackId, ChunkId)> = marks
        .iter()
        .flat_map(|m| m.blobs.iter().copied())
        .filter(stays)
        .collect();
    let mut fresh: Vec<(PackId, ChunkId)> = garbage
        .iter()
        .filter(|b| stays(b) && !already.contains(b))
        .copied()
        .collect();

    if options.dry_run {
        report.chunks_marked = fresh.len() as u64;
        report.bytes_freed = freed;
        return Ok(report);
    }

    // 1. Repack: live blobs into new packs, then the index file naming them.
    // Copies are sealed again under this run's key: a repacked pack begins with one age header,
    // like every pack, whichever runs wrote the blobs it gathers.
    let write_key = store.write_key()?;
    let mut writer = PackWriter::new(storage).with_target_size(options.pack_target_size);
    if let Some(key) = &write_key {
        writer.set_age_header(key.header().clone());
    }
    let mut index_writer = IndexWriter::new(storage);
    let mut written: Vec<PackInfo> = Vec::new();
    for (pack, copies) in &plan.repack {
        if copies.is_empty() {
            continue;
        }
        let (bytes, entries) = reader
            .read_verified(pack)
            .await
            .map_err(|e| e.context(format!("repacking pack {pack}")))?;
        for entry in copies {
            let start = entry.offset as usize;
            let blob = bytes
                .get(start..start + entry.length as usize)
                .ok_or_else(|| Error::integrity(format!("pack {pack}: blob past its end")))?;
            let at = Location {
                pack: *pack,
                age_header: crate::pack::age_header_len(&entries) as u32,
                offset: entry.offset,
                length: entry.length,
                raw_length: entry.raw_length,
            };
            let plain = store.decode(&entry.id, &at, blob).await?;
            let blob = crate::blob::encode(&plain, write_key.as_deref())?;
            written.extend(writer.add(entry.id, entry.raw_length, &blob).await?);
        }
    }
    written.extend(writer.flush().await?);
    for info in &written {
        report.packs_written += 1;
        report.bytes_rewritten += info.size;
        for entry in &info.entries {
            // Copied garbage (not yet due) is marked again in its new pack.
            if !referenced.contains(&entry.id) {
                fresh.push((info.id, entry.id));
            }
        }
        if index_writer.add(info.clone()).await?.is_some() {
            report.index_files_written += 1;
        }
    }
    if index_writer.flush().await?.is_some() {
        report.index_files_written += 1;
    }
    freed = freed.saturating_sub(report.bytes_rewritten);
    report.bytes_freed = freed;

    // 2. Index files without the packs that go: the new one first, then the old one deleted.
    let mut old_index_files = Vec::new();
    for (key, rest) in rewrites {
        if !rest.is_empty() {
            let mut rewrite = IndexWriter::new(storage).with_blobs_per_file(usize::MAX);
            for info in rest {
                rewrite.add(info).await?;
            }
            if let Some(new_key) = rewrite.flush().await?
                && new_key == *key
            {
                continue;
            }
            report.index_files_written += 1;
        }
        old_index_files.push(key.clone());
    }
    storage.delete_many(&old_index_files).await?;
    report.index_files_deleted = old_index_files.len() as u64;

    // 3. The packs that go.
    let mut old_packs: Vec<String> = going.iter().map(PackId::key).collect();
    old_packs.sort();
    storage.delete_many(&old_packs).await?;

    // 4. The marks: the new one, then the old ones rewritten without what is gone.
    if !fresh.is_empty() {
        report.chunks_marked = fresh.len() as u64;
        let key = mark_key(now)?;
        storage
            .put(&key, encode_mark(now, &fresh).into())
            .await
            .map_err(|e| e.context(format!("storing mark {key}")))?;
        report.marks_written += 1;
    }
    let mut old_marks = Vec::new();
    for mark in &marks {
        let rest: Vec<(PackId, ChunkId)> = mark.blobs.iter().copied().filter(stays).collect();
        if rest.len() == mark.blobs.len() {
            continue;
        }
        if !rest.is_empty() {
            let key = mark_key(mark.created)?;
            storage
                .put(&key, encode_mark(mark.created, &rest).into())
                .await
                .map_err(|e| e.context(format!("storing mark {key}")))?;
            report.marks_written += 1;
        }
        old_marks.push(mark.key.clone());
    }
    storage.delete_many(&old_marks).await?;
    report.marks_deleted = old_marks.len() as u64;

    tracing::info!(
        referenced = report.chunks_referenced,
        marked = report.chunks_marked,
        deleted = report.chunks_deleted,
        packs_deleted = report.packs_deleted,
        packs_repacked = report.packs_repacked,
        bytes_freed = report.bytes_freed,
        "chunks pruned"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(n: u8) -> ChunkId {
        let mut id = [0u8; 32];
        id[0] = n;
        id[8] = n;
        ChunkId(id)
    }

    fn pack(n: u8, chunks: &[u8], indexed: bool) -> PackState {
        PackState {
            id: PackId([n; 32]),
            indexed,
            young: false,
            entries: chunks
                .iter()
                .enumerate()
                .map(|(i, c)| PackEntry {
                    id: chunk(*c),
                    offset: i as u64 * 100,
                    length: 100,
                    raw_length: 300,
                })
                .collect(),
        }
    }

    fn set(chunks: &[u8]) -> ChunkSet {
        chunks.iter().map(|c| chunk(*c)).collect()
    }

    fn all_due(packs: &[PackState], referenced: &ChunkSet) -> HashSet<(PackId, ChunkId)> {
        packs
            .iter()
            .flat_map(|s| s.entries.iter().map(move |e| (s.id, e.id)))
            .filter(|(_, c)| !referenced.contains(c))
            .collect()
    }

    #[test]
    fn all_garbage_goes_mostly_garbage_is_repacked_a_little_stays() {
        let packs = vec![
            pack(1, &[1, 2, 3], true),    // all garbage
            pack(2, &[4, 5, 6, 7], true), // 3 of 4 garbage: repacked, 7 copied
            pack(3, &[8, 9, 10], true),   // 1 of 3 garbage: stays
        ];
        let referenced = set(&[7, 8, 9]);
        let due = all_due(&packs, &referenced);
        let plan = plan(&packs, &referenced, &due, 50);
        assert_eq!(plan.delete, vec![PackId([1; 32])]);
        assert_eq!(plan.repack.len(), 1);
        assert_eq!(plan.repack[0].0, PackId([2; 32]));
        let copied: Vec<ChunkId> = plan.repack[0].1.iter().map(|e| e.id).collect();
        assert_eq!(copied, vec![chunk(7)]);
    }

    #[test]
    fn nothing_goes_before_it_is_due_nor_from_a_young_pack() {
        let mut packs = vec![pack(1, &[1, 2], true), pack(2, &[3], true)];
        let referenced = set(&[]);
        // Only chunk 1 of pack 1 is due: pack 1 is repacked (half its bytes is not more
        // than 50 %: it stays), pack 2 stays.
        let due: HashSet<_> = [(PackId([1; 32]), chunk(1))].into();
        let plan_half = plan(&packs, &referenced, &due, 50);
        assert_eq!(plan_half, Plan::default());
        let plan_low = plan(&packs, &referenced, &due, 49);
        assert_eq!(plan_low.repack.len(), 1);
        assert_eq!(plan_low.repack[0].1[0].id, chunk(2), "not yet due: copied");
        packs[1].young = true;
        let due = all_due(&packs, &referenced);
        let plan = plan(&packs, &referenced, &due, 50);
        assert_eq!(plan.delete, vec![PackId([1; 32])]);
    }

    #[test]
    fn a_chunk_with_a_copy_in_a_pack_that_stays_is_not_copied_again() {
        let packs = vec![
            pack(1, &[1, 2, 3, 4], true), // mostly garbage; 4 also in pack 2
            pack(2, &[4, 5], true),
            pack(3, &[6, 7, 8, 4], false), // unindexed copy does not count
        ];
        let referenced = set(&[4, 5]);
        let due = all_due(&packs, &referenced);
        let plan = plan(&packs, &referenced, &due, 50);
        assert_eq!(plan.repack.len(), 2);
        assert!(plan.repack.iter().all(|(_, copies)| copies.is_empty()));
    }

    #[test]
    fn marks_round_trip() {
        let now: Timestamp = "2026-12-02T18:00:00Z".parse().unwrap();
        let blobs = vec![
            (PackId([2; 32]), chunk(1)),
            (PackId([1; 32]), chunk(3)),
            (PackId([1; 32]), chunk(2)),
        ];
        let bytes = encode_mark(now, &blobs);
        let mark = decode_mark("gc/marks/x.json", &bytes).unwrap();
        assert_eq!(mark.created, now);
        let mut expected = blobs.clone();
        expected.sort();
        assert_eq!(mark.blobs, expected);
        let key = mark_key(now).unwrap();
        assert!(key.starts_with("gc/marks/20261202T180000Z-"), "{key}");
        assert!(decode_mark("k", b"{\"version\":2}").is_err());
    }

    fn state() -> impl Strategy<Value = (Vec<PackState>, ChunkSet, Vec<bool>, u8)> {
        (
            prop::collection::vec(
                (
                    prop::collection::vec(0u8..40, 1..8),
                    any::<bool>(),
                    any::<bool>(),
                ),
                1..12,
            ),
            prop::collection::vec(0u8..40, 0..30),
            prop::collection::vec(any::<bool>(), 100),
            0u8..=100,
        )
            .prop_map(|(packs, referenced, due_bits, percent)| {
                let packs = packs
                    .into_iter()
                    .enumerate()
                    .map(|(n, (chunks, indexed, young))| {
                        let mut p = pack(n as u8, &chunks, indexed);
                        p.young = young;
                        p
                    })
                    .collect();
                (packs, set(&referenced), due_bits, percent)
            })
    }

    proptest! {
        #[test]
        fn no_referenced_chunk_is_lost((packs, referenced, due_bits, percent) in state()) {
            // Some blobs are called due, including referenced ones: the planner must not trust it.
            let due: HashSet<(PackId, ChunkId)> = packs
                .iter()
                .flat_map(|s| s.entries.iter().map(move |e| (s.id, e.id)))
                .enumerate()
                .filter(|(i, _)| due_bits[i % due_bits.len()])
                .map(|(_, b)| b)
                .collect();
            let plan = plan(&packs, &referenced, &due, percent);
            let going = plan.removes();
            for id in &plan.delete {
                let state = packs.iter().find(|s| s.id == *id).unwrap();
                prop_assert!(!state.young);
                for e in &state.entries {
                    prop_assert!(!referenced.contains(&e.id), "deleted pack holds a referenced chunk");
                }
            }
            // Every chunk that was findable and is not due is findable afterwards: in an
            // indexed pack that stays, or copied into a new (indexed) pack.
            let mut after: HashSet<ChunkId> = packs
                .iter()
                .filter(|s| s.indexed && !going.contains(&s.id))
                .flat_map(|s| s.entries.iter().map(|e| e.id))
                .collect();
            after.extend(plan.repack.iter().flat_map(|(_, c)| c.iter().map(|e| e.id)));
            for s in &packs {
                for e in &s.entries {
                    let kept_blob = referenced.contains(&e.id) || !due.contains(&(s.id, e.id));
                    if kept_blob && (s.indexed || going.contains(&s.id)) {
                        prop_assert!(after.contains(&e.id), "chunk {} lost", e.id);
                    }
                }
            }
            for (_, copies) in &plan.repack {
                let mut seen = HashSet::new();
                for e in copies {
                    prop_assert!(seen.insert(e.id));
                }
            }
        }
    }
}

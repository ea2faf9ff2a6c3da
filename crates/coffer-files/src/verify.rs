//! Verifying a snapshot: [`verify_snapshot`], the library side of `coffer backup verify`.
//!
//! Three depths ([`ReadData`]):
//!
//! - [`ReadData::None`], the structure: the listing's chunks are read (each verified) and parsed,
//!   every chunk a file names is looked up in the index, and every pack the index names for
//!   them is looked for in one listing of `packs/` (not a request per pack), with at least the
//!   size the index implies ([`crate::index::ChunkIndex::implied_pack_sizes`]: a lower bound,
//!   since a chunk stored twice is placed once, so only a pack too short is reported);
//! - [`ReadData::All`]: also every referenced chunk is read and decoded, which checks its keyed
//!   id (and its plain length); each chunk once however many files use it, grouped by pack, each
//!   pack read by one range read spanning its referenced blobs, [`CONCURRENT_PACKS`] packs at a
//!   time;
//! - [`ReadData::Subset`] (`"1/10"`): the same reads for the packs of one subset only. A pack
//!   belongs to subset `n` of `of` when the first four bytes of its id, read as a big-endian
//!   number, are `n - 1` modulo `of`, so running `1/of` to `of/of` reads every pack once, as
//!   restic's `--read-data-subset` does.
//!
//! What is wrong is collected as [`Problem`]s, not returned as an error: a verify reports
//! everything it finds. Storage failures other than a missing object are errors.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use coffer_core::error::{Error, ErrorKind, Result};
use futures_util::StreamExt;

use crate::chunk_id::ChunkId;
use crate::entry::{EntryKind, display_path};
use crate::index::Location;
use crate::pack::{PackId, PackReader};
use crate::store::ChunkStore;
use crate::tree::{ListingReader, SnapshotSummary};

/// How many packs are read at the same time with [`ReadData::All`] or [`ReadData::Subset`].
pub const CONCURRENT_PACKS: usize = 4;
/// How many problems a report lists; past that it only counts them.
pub const MAX_PROBLEMS_LISTED: usize = 1000;

/// How much of the snapshot's data a verify reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadData {
    /// No chunk contents: the listing, the index and the packs' presence and sizes only.
    #[default]
    None,
    /// Every referenced chunk.
    All,
    /// The referenced chunks in the packs of subset `n` of `of` (`1 <= n <= of`).
    Subset {
        /// Which subset, from 1.
        n: u32,
        /// Into how many subsets the packs are split.
        of: u32,
    },
}

impl ReadData {
    /// Whether the chunks in `pack` are read.
    pub fn reads(&self, pack: &PackId) -> bool {
        match *self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Subset { n, of } => n >= 1 && subset_of(pack, of) == n - 1,
        }
    }
}

/// The subset, from 0, a pack falls in when the packs are split `of` ways.
fn subset_of(pack: &PackId, of: u32) -> u32 {
    let first = u32::from_be_bytes(pack.0[..4].try_into().expect("4 bytes"));
    first % of.max(1)
}

impl FromStr for ReadData {
    type Err = Error;

    /// Parses a subset, `N/OF` with `1 <= N <= OF` (`"1/10"`: the first tenth).
    fn from_str(text: &str) -> Result<Self> {
        let invalid = |why: &str| Error::config(format!("invalid data subset {text:?}: {why}"));
        let (n, of) = text
            .split_once('/')
            .ok_or_else(|| invalid("expected N/OF, such as 1/10"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| invalid("N is not a whole number"))?;
        let of: u32 = of
            .trim()
            .parse()
            .map_err(|_| invalid("OF is not a whole number"))?;
        if of == 0 {
            return Err(invalid("OF must be at least 1"));
        }
        if n == 0 || n > of {
            return Err(invalid(&format!("N must be between 1 and {of}")));
        }
        Ok(ReadData::Subset { n, of })
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The listing could not be read or parsed; the files after the failure were not checked.
    Listing {
        /// Why.
        error: String,
    },
    /// A file names a chunk the index does not know.
    ChunkNotInIndex {
        /// The file's path in the snapshot.
        path: String,
        /// The chunk.
        chunk: ChunkId,
    },
    /// A pack the index names for a referenced chunk is not in storage.
    MissingPack {
        /// The pack.
        pack: PackId,
    },
    /// A pack is shorter than the blobs the index places in it need.
    PackTooShort {
        /// The pack.
        pack: PackId,
        /// The least size the index implies.
        expected: u64,
        /// Its size in storage.
        actual: u64,
    },
    /// A chunk read back does not decode to its id (or its length), or could not be read.
    DamagedChunk {
        /// The chunk.
        chunk: ChunkId,
        /// The pack holding it.
        pack: PackId,
        /// The first file that uses it (`None` when none of the files checked does).
        path: Option<String>,
        /// What is wrong.
        error: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Listing { error } => write!(f, "the listing is unreadable: {error}"),
            Problem::ChunkNotInIndex { path, chunk } => {
                write!(f, "{path}: chunk {chunk} is in no indexed pack")
            }
            Problem::MissingPack { pack } => write!(f, "pack {pack} is missing"),
            Problem::PackTooShort {
                pack,
                expected,
                actual,
            } => write!(
                f,
                "pack {pack} has {actual} bytes where the index needs at least {expected}"
            ),
            Problem::DamagedChunk {
                chunk,
                pack,
                path,
                error,
            } => {
                write!(f, "chunk {chunk} in pack {pack} is damaged")?;
                if let Some(path) = path {
                    write!(f, " (used by {path})")?;
                }
                write!(f, ": {error}")
            }
        }
    }
}

/// What a verify checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Regular files and hard links in the listing.
    pub files: u64,
    /// Chunk references of those files (a chunk used twice counts twice).
    pub chunks_referenced: u64,
    /// Distinct chunks among them.
    pub unique_chunks: u64,
    /// Distinct packs holding those chunks or the listing's.
    pub packs_referenced: u64,
    /// Packs read (range reads of their referenced blobs).
    pub packs_read: u64,
    /// Bytes read from those packs.
    pub bytes_read: u64,
    /// How many problems were found (may exceed the length of `problems`).
    pub problem_count: u64,
    /// The first [`MAX_PROBLEMS_LISTED`] problems.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, problem: Problem) {
        tracing::warn!(problem = %problem, "verify found a problem");
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS_LISTED {
            self.problems.push(problem);
        }
    }
}

/// Verifies the snapshot `summary` in the repository of `store` (whose index must be loaded),
/// reading as much data as `read` says.
///
/// Memory: the set of distinct chunk ids the snapshot references (32 bytes each, plus the hash
/// set's overhead), their places grouped by pack when data is read, and [`CONCURRENT_PACKS`]
/// spans of packs being read (each at most a pack, about 16 MiB); the listing is streamed.
pub async fn verify_snapshot(
    store: &ChunkStore<'_>,
    summary: &SnapshotSummary,
    read: ReadData,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let index = store.index();
    let mut packs: HashSet<PackId> = HashSet::new();
    for id in &summary.listing {
        // A listing chunk not in the index is reported by the listing's read below.
        if let Some(at) = index.get(id) {
            packs.insert(at.pack);
        }
    }

    // The listing, streamed: every chunk a file names, once.
    let mut chunks: HashSet<ChunkId> = HashSet::new();
    let mut reader = ListingReader::new(summary);
    loop {
        let entry = match reader.next(store).await {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) if is_damage(&e) => {
                report.problem(Problem::Listing {
                    error: e.to_string(),
                });
                break;
            }
            Err(e) => return Err(e),
        };
        if matches!(entry.kind, EntryKind::File | EntryKind::Hardlink) {
            report.files += 1;
        }
        for id in &entry.chunks {
            report.chunks_referenced += 1;
            if !chunks.insert(*id) {
                continue;
            }
            match index.get(id) {
                Some(at) => {
                    packs.insert(at.pack);
                }
                None => report.problem(Problem::ChunkNotInIndex {
                    path: display_path(&entry.path),
                    chunk: *id,
                }),
            }
        }
    }
    report.unique_chunks = chunks.len() as u64;
    report.packs_referenced = packs.len() as u64;

    // The packs: one listing of `packs/`.
    let stored: HashMap<PackId, u64> = PackReader::new(store.storage())
        .list()
        .await?
        .into_iter()
        .collect();
    let implied = index.implied_pack_sizes();
    let mut readable: HashSet<PackId> = HashSet::new();
    let mut sorted: Vec<PackId> = packs.into_iter().collect();
    sorted.sort();
    for pack in sorted {
        match stored.get(&pack) {
            None => report.problem(Problem::MissingPack { pack }),
            Some(&actual) => {
                let expected = implied.get(&pack).copied().unwrap_or(0);
                if actual < expected {
                    report.problem(Problem::PackTooShort {
                        pack,
                        expected,
                        actual,
                    });
                } else {
                    readable.insert(pack);
                }
            }
        }
    }
    if read == ReadData::None {
        return Ok(report);
    }

    // The data: the referenced blobs of each selected pack, in offset order.
    let mut by_pack: HashMap<PackId, Vec<(ChunkId, Location)>> = HashMap::new();
    for id in &chunks {
        if let Some(at) = index.get(id)
            && readable.contains(&at.pack)
            && read.reads(&at.pack)
        {
            by_pack.entry(at.pack).or_default().push((*id, at));
        }
    }
    drop(chunks);
    let mut work: Vec<(PackId, Vec<(ChunkId, Location)>)> = by_pack.into_iter().collect();
    work.sort_by_key(|(pack, _)| *pack);
    let mut damaged: Vec<(ChunkId, PackId, String)> = Vec::new();
    let mut results = futures_util::stream::iter(work)
        .map(|(pack, blobs)| check_pack(store, pack, blobs))
        .buffer_unordered(CONCURRENT_PACKS);
    while let Some(result) = results.next().await {
        let checked = result?;
        report.packs_read += 1;
        report.bytes_read += checked.bytes_read;
        damaged.extend(checked.damaged);
    }
    drop(results);
    if damaged.is_empty() {
        return Ok(report);
    }

    // Name the first file using each damaged chunk: a second pass over the listing, taken only
    // when something was found, so the first pass need not keep a path per chunk.
    damaged.sort_by_key(|(chunk, pack, _)| (*pack, *chunk));
    let mut users: HashMap<ChunkId, Option<String>> =
        damaged.iter().map(|(chunk, _, _)| (*chunk, None)).collect();
    let mut missing = users.len();
    let mut reader = ListingReader::new(summary);
    while missing > 0 {
        let entry = match reader.next(store).await {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) if is_damage(&e) => break,
            Err(e) => return Err(e),
        };
        for id in &entry.chunks {
            if let Some(user @ None) = users.get_mut(id) {
                *user = Some(display_path(&entry.path));
                missing -= 1;
            }
        }
    }
    for (chunk, pack, error) in damaged {
        let path = users.get(&chunk).cloned().flatten();
        report.problem(Problem::DamagedChunk {
            chunk,
            pack,
            path,
            error,
        });
    }
    Ok(report)
}

/// Whether an error is damage to report (a missing or corrupt object) rather than a failure.
fn is_damage(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Integrity | ErrorKind::NotFound)
}

/// What reading one pack found.
struct CheckedPack {
    bytes_read: u64,
    damaged: Vec<(ChunkId, PackId, String)>,
}

/// Reads the span of `pack` holding `blobs` in one range read and decodes each blob.
async fn check_pack(
    store: &ChunkStore<'_>,
    pack: PackId,
    mut blobs: Vec<(ChunkId, Location)>,
) -> Result<CheckedPack> {
    blobs.sort_by_key(|(_, at)| at.offset);
    let start = blobs.first().map_or(0, |(_, at)| at.offset);
    let end = blobs
        .iter()
        .map(|(_, at)| at.offset + at.length as u64)
        .max()
        .unwrap_or(start);
    let span = u32::try_from(end - start)
        .map_err(|_| Error::integrity(format!("pack {pack}: a span of {} bytes", end - start)))?;
    let mut checked = CheckedPack {
        bytes_read: 0,
        damaged: Vec::new(),
    };
    let bytes = match PackReader::new(store.storage())
        .read_blob(&pack, start, span)
        .await
    {
        Ok(bytes) => bytes,
        Err(e) if is_damage(&e) => {
            // The pack vanished or is shorter since it was listed: every blob is unreadable.
            let error = e.to_string();
            checked.damaged = blobs
                .into_iter()
                .map(|(id, _)| (id, pack, error.clone()))
                .collect();
            return Ok(checked);
        }
        Err(e) => return Err(e),
    };
    checked.bytes_read = bytes.len() as u64;
    for (id, at) in &blobs {
        let from = (at.offset - start) as usize;
        let blob = &bytes[from..from + at.length as usize];
        match store.decode(id, at, blob).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Integrity => {
                checked.damaged.push((*id, pack, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(first: [u8; 4]) -> PackId {
        let mut id = [7u8; 32];
        id[..4].copy_from_slice(&first);
        PackId(id)
    }

    #[test]
    fn subsets_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "1/10".parse::<ReadData>().unwrap(),
            ReadData::Subset { n: 1, of: 10 }
        );
        assert_eq!(
            "10/10".parse::<ReadData>().unwrap(),
            ReadData::Subset { n: 10, of: 10 }
        );
        assert_eq!(
            "1/1".parse::<ReadData>().unwrap(),
            ReadData::Subset { n: 1, of: 1 }
        );
        for bad in [
            "0/10", "11/10", "x", "1/0", "0/0", "1/", "/10", "a/b", "-1/10", "",
        ] {
            let err = bad.parse::<ReadData>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
            assert!(err.to_string().contains("invalid data subset"), "{err}");
        }
        let err = "11/10".parse::<ReadData>().unwrap_err().to_string();
        assert!(err.contains("between 1 and 10"), "{err}");
    }

    #[test]
    fn each_pack_falls_in_exactly_one_subset() {
        for of in [1u32, 2, 3, 10, 255, 256, 1000] {
            for n in 0..2000u32 {
                let p = pack(n.wrapping_mul(2_654_435_761).to_be_bytes());
                let holding = (1..=of)
                    .filter(|&k| ReadData::Subset { n: k, of }.reads(&p))
                    .count();
                assert_eq!(holding, 1, "pack {p} with of = {of}");
            }
        }
    }

    #[test]
    fn the_selection_is_the_pack_ids_first_bytes_modulo_the_count() {
        let p = pack([0, 0, 0, 7]);
        assert!(ReadData::Subset { n: 2, of: 3 }.reads(&p));
        assert!(!ReadData::Subset { n: 1, of: 3 }.reads(&p));
        assert!(ReadData::Subset { n: 8, of: 10 }.reads(&p));
        assert!(ReadData::All.reads(&p));
        assert!(!ReadData::None.reads(&p));
        // Built by hand, out of range: reads nothing rather than panicking.
        assert!(!ReadData::Subset { n: 0, of: 0 }.reads(&p));
    }
}

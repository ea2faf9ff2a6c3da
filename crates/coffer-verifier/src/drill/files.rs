//! The drill's "files accessible" item: a sample of each `[[files]]` source's newest snapshot
//! restored into a temporary folder, every chunk checked against its keyed digest and every
//! file's length against the listing.
//!
//! The sample always holds the newest file (by modification time) and the largest, the rest
//! drawn evenly at random from the listing in one pass (reservoir sampling), so a listing of a
//! million files costs the memory of the sample.

use std::io::Write as _;

use coffer_core::config::Config;
use coffer_core::error::{Error, Result};
use coffer_core::repository::Repository;
use coffer_files::entry::{Entry, EntryKind};
use coffer_files::snapshot::{self, SnapshotManifest};
use coffer_files::store::ChunkStore;
use coffer_files::tree::ListingReader;

use crate::report::Status;

/// Runs the item: `Skipped` only when no `[[files]]` source is configured.
pub async fn check_files(
    config: &Config,
    repository: &Repository,
    identity: Option<&age::x25519::Identity>,
) -> (Status, Vec<String>) {
    if config.files.is_empty() {
        return (
            Status::Skipped,
            vec!["no [[files]] source is configured: nothing to check".into()],
        );
    }
    match check(config, repository, identity).await {
        Ok((ok, evidence)) => (if ok { Status::Pass } else { Status::Fail }, evidence),
        Err(e) => (
            Status::Fail,
            vec![format!("could not check the files: {e}")],
        ),
    }
}

async fn check(
    config: &Config,
    repository: &Repository,
    identity: Option<&age::x25519::Identity>,
) -> Result<(bool, Vec<String>)> {
    let snapshots = snapshot::list(repository).await?;
    let recipient = config.repository.recipient()?;
    let store = ChunkStore::open_for_reading(
        repository.storage(),
        &config.persistent_state_dir()?,
        recipient,
        identity.cloned(),
    )
    .await?;
    let mut ok = true;
    let mut evidence = Vec::new();
    for source in &config.files {
        let Some(newest) = snapshot::newest(&snapshots, Some(&source.name)) else {
            ok = false;
            evidence.push(format!("{}: no snapshot in the repository", source.name));
            continue;
        };
        match check_snapshot(&store, newest, config.drill.files_sample).await {
            Ok(line) => evidence.push(line),
            Err(e) => {
                ok = false;
                evidence.push(format!("{}: snapshot {}: {e}", source.name, newest.id));
            }
        }
    }
    Ok((ok, evidence))
}

/// Restores the sample of `manifest` into a temporary folder and checks it; the evidence line.
async fn check_snapshot(
    store: &ChunkStore<'_>,
    manifest: &SnapshotManifest,
    sample_size: usize,
) -> Result<String> {
    let sample = draw_sample(store, manifest, sample_size, seed(&manifest.id)).await?;
    if sample.files.is_empty() {
        return Ok(format!(
            "{}: snapshot {} holds no file ({} entries)",
            manifest.source, manifest.id, manifest.snapshot.entries
        ));
    }
    let dir = coffer_core::scratch::dir("drill-files-")?;
    let mut bytes = 0u64;
    for (n, entry) in sample.files.iter().enumerate() {
        // Numbered names: the listing's paths are not needed to prove the contents come back.
        let path = dir.path().join(format!("{n:06}"));
        let mut file = std::fs::File::create(&path)
            .map_err(|e| Error::other(format!("creating {}: {e}", path.display())))?;
        let mut written = 0u64;
        for id in &entry.chunks {
            // Each chunk is decoded and checked against its keyed id by the store.
            let plain = store
                .read(id)
                .await
                .map_err(|e| e.context(entry.display()))?;
            file.write_all(&plain)
                .map_err(|e| Error::other(format!("writing {}: {e}", path.display())))?;
            written += plain.len() as u64;
        }
        if written != entry.size {
            return Err(Error::integrity(format!(
                "{}: {written} bytes restored where the listing says {}",
                entry.display(),
                entry.size
            )));
        }
        let on_disk = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if on_disk != entry.size {
            return Err(Error::other(format!(
                "{}: {on_disk} bytes on disk after writing {}",
                entry.display(),
                entry.size
            )));
        }
        bytes += written;
    }
    Ok(format!(
        "{}: {} of {} files of snapshot {} restored into a temporary folder ({bytes} bytes), every chunk's digest checked; newest {}, largest {} ({} bytes)",
        manifest.source,
        sample.files.len(),
        sample.total,
        manifest.id,
        sample.newest.as_deref().unwrap_or("-"),
        sample.largest.as_deref().unwrap_or("-"),
        sample.largest_size
    ))
}

/// The files drawn from one listing.
#[derive(Debug, Default)]
struct Sample {
    files: Vec<Entry>,
    total: u64,
    newest: Option<String>,
    largest: Option<String>,
    largest_size: u64,
}

/// A seed from the snapshot id, so one snapshot's drills check the same files and a new
/// snapshot other ones.
fn seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// xorshift64*: enough to spread a sample, no cryptography asked of it.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Streams the listing once: the newest and the largest file, and a uniform reservoir of the
/// others, `size` in all.
async fn draw_sample(
    store: &ChunkStore<'_>,
    manifest: &SnapshotManifest,
    size: usize,
    seed: u64,
) -> Result<Sample> {
    let mut state = seed | 1;
    let mut sample = Sample::default();
    let mut newest: Option<Entry> = None;
    let mut largest: Option<Entry> = None;
    let mut reservoir: Vec<Entry> = Vec::new();
    let keep = size.saturating_sub(2);
    let mut reader = ListingReader::new(&manifest.snapshot);
    let mut seen = 0u64;
    while let Some(entry) = reader.next(store).await? {
        if entry.kind != EntryKind::File {
            continue;
        }
        sample.total += 1;
        let mut displaced = Vec::new();
        let mut held = false;
        if newest.as_ref().is_none_or(|n| entry.mtime_ns > n.mtime_ns) {
            displaced.extend(newest.replace(entry.clone()));
            held = true;
        }
        if largest.as_ref().is_none_or(|l| entry.size > l.size) {
            displaced.extend(largest.replace(entry.clone()));
            held = true;
        }
        if !held {
            displaced.push(entry);
        }
        for old in displaced {
            let still_held = [&newest, &largest]
                .into_iter()
                .flatten()
                .any(|e| e.path == old.path);
            if !still_held {
                offer(&mut reservoir, old, keep, &mut seen, &mut state);
            }
        }
    }
    sample.newest = newest.as_ref().map(Entry::display);
    sample.largest = largest.as_ref().map(Entry::display);
    sample.largest_size = largest.as_ref().map_or(0, |e| e.size);
    let same = matches!((&newest, &largest), (Some(n), Some(l)) if n.path == l.path);
    sample.files.extend(newest);
    if !same {
        sample.files.extend(largest);
    }
    sample.files.extend(reservoir);
    Ok(sample)
}

/// Algorithm R: the `seen`-th candidate replaces a random slot with probability `keep / seen`.
fn offer(reservoir: &mut Vec<Entry>, entry: Entry, keep: usize, seen: &mut u64, state: &mut u64) {
    *seen += 1;
    if keep == 0 {
        return;
    }
    if reservoir.len() < keep {
        reservoir.push(entry);
        return;
    }
    let slot = next(state) % *seen;
    if (slot as usize) < keep {
        reservoir[slot as usize] = entry;
    }
}

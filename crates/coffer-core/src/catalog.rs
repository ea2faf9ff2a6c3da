//! The manifest cache on the backup host: manifests are immutable once written, so
//! [`Repository::list`](crate::repository::Repository::list) reads each one from storage once and
//! afterwards only when its listing says it changed.
//!
//! The storage listing stays the truth for what exists: an entry is used only for a manifest that
//! is listed, and only when what the listing says of it (size and last-modified time of
//! `ID.json`, and with a verify key of `ID.json.minisig` too) is what it said when the entry was
//! written. An entry is written only after the manifest passed every check a fresh read makes
//! (signature, format, names, its name against its id), records the verify key that checked it
//! (a digest of the whole public key: an entry checked by another key, or not checked, is not
//! used while a verify key is set) and a SHA-256 of the bytes (an entry whose bytes do not match
//! is ignored). The bytes are parsed again on every use, with the same code as a fresh read.
//!
//! Two stores:
//!
//! - **on disk** ([`Catalog::on_disk`]), with `state_dir`: `state_dir/cache/IDENTITY/manifests/ID.entry`,
//!   where `IDENTITY` is a digest of the repository's location (two repositories never share
//!   entries). Folders 0700, files 0600, written to a temporary file and renamed into place, so
//!   concurrent coffers never see half an entry. A damaged or unreadable entry is ignored and
//!   rewritten; failing to write one only logs. Entries of manifests no longer listed are removed
//!   after a listing.
//! - **in memory** ([`Catalog::in_memory`]), without `state_dir`: for the process only (a
//!   long-lived process, the daemon, still reads each manifest once), at the cost of a second copy
//!   of the parsed manifests.
//!
//! Entry format (text header, a blank line, then the manifest's bytes as stored):
//!
//! ```text
//! coffer-manifest-cache 1
//! manifest SIZE MODIFIED_NS|-
//! signature SIZE MODIFIED_NS|-      or: signature none
//! verified KEY_DIGEST               or: verified none
//! sha256 HEX
//!
//! {"format_version": 1, …}
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::manifest::Manifest;
use crate::signing::VerifyKey;
use crate::storage::ObjectMeta;

const MAGIC: &str = "coffer-manifest-cache 1";
const SUFFIX: &str = ".entry";

/// What a listing says of one object: its size and last-modified time (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Size in bytes.
    pub size: u64,
    /// Last-modified time in nanoseconds since the epoch, when the backend gives one.
    pub modified: Option<i128>,
}

impl Stamp {
    /// The stamp of a listed object.
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            size: meta.size,
            modified: meta.last_modified.map(|t| t.as_nanosecond()),
        }
    }
}

/// What an entry must match to be used: the manifest's stamp, its signature's (with a verify
/// key), and the key that checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    /// `ID.json` as listed.
    pub manifest: Stamp,
    /// `ID.json.minisig` as listed (`None`: not listed).
    pub signature: Option<Stamp>,
    /// The digest of the verify key that checked the manifest ([`key_digest`]); `None`: not
    /// checked (no verify key).
    pub verified_by: Option<String>,
}

impl Validator {
    /// Whether an entry recorded as `self` may stand for a manifest listed as `listed`.
    fn admits(&self, listed: &Validator) -> bool {
        if self.manifest != listed.manifest {
            return false;
        }
        match &listed.verified_by {
            // Unchecked reads: an entry checked or not is as good as a fresh unchecked read.
            None => true,
            Some(key) => {
                self.verified_by.as_deref() == Some(key.as_str())
                    && listed.signature.is_some()
                    && self.signature == listed.signature
            }
        }
    }
}

/// A digest of the whole public key (not just its 8-byte id): what an entry records as the key
/// that checked it.
pub fn key_digest(key: &VerifyKey) -> String {
    hex::encode(&Sha256::digest(key.to_base64().as_bytes())[..16])
}

/// Where entries are kept.
#[derive(Debug)]
enum Store {
    Disk(PathBuf),
    Memory(Mutex<HashMap<String, (Validator, Manifest)>>),
}

/// The manifest cache of one repository (see the module docs).
#[derive(Debug)]
pub struct Catalog {
    store: Store,
}

impl Catalog {
    /// Entries under `state_dir/cache/IDENTITY/manifests/`, `IDENTITY` a digest of `location`
    /// (a folder repository's path is made absolute first). Nothing is created yet.
    pub fn on_disk(state_dir: &Path, location: &str) -> Self {
        let location = if location.starts_with("s3://") {
            location.to_string()
        } else {
            std::fs::canonicalize(location)
                .or_else(|_| std::path::absolute(location))
                .map_or_else(|_| location.to_string(), |p| p.display().to_string())
        };
        let identity = hex::encode(&Sha256::digest(location.as_bytes())[..16]);
        Self {
            store: Store::Disk(state_dir.join("cache").join(identity).join("manifests")),
        }
    }

    /// Entries in this process's memory only.
    pub fn in_memory() -> Self {
        Self {
            store: Store::Memory(Mutex::new(HashMap::new())),
        }
    }

    /// The folder entries are written to (`None` in memory).
    pub fn dir(&self) -> Option<&Path> {
        match &self.store {
            Store::Disk(dir) => Some(dir),
            Store::Memory(_) => None,
        }
    }

    /// The manifest of `id` (stored at `key`), if an entry admits the listing's `validator` and
    /// its bytes still parse to a manifest named `key`; `None` otherwise (read it from storage).
    pub fn lookup(&self, id: &str, key: &str, validator: &Validator) -> Option<Manifest> {
        match &self.store {
            Store::Memory(entries) => {
                let entries = entries.lock().unwrap_or_else(|e| e.into_inner());
                let (recorded, manifest) = entries.get(id)?;
                recorded.admits(validator).then(|| manifest.clone())
            }
            Store::Disk(dir) => {
                let bytes = std::fs::read(dir.join(format!("{id}{SUFFIX}"))).ok()?;
                let (recorded, body) = parse_entry(&bytes)?;
                if !recorded.admits(validator) || body.len() as u64 != recorded.manifest.size {
                    return None;
                }
                let manifest = Manifest::from_json(key, body).ok()?;
                (manifest.id == id).then_some(manifest)
            }
        }
    }

    /// Records the manifest of `id` read from storage as `bytes` and checked, listed as
    /// `validator`. Never fails: an entry that cannot be written is only logged.
    pub fn store(&self, id: &str, validator: &Validator, bytes: &[u8], manifest: &Manifest) {
        match &self.store {
            Store::Memory(entries) => {
                entries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_string(), (validator.clone(), manifest.clone()));
            }
            Store::Disk(dir) => {
                if let Err(e) = write_entry(dir, id, validator, bytes) {
                    tracing::debug!("cannot cache manifest {id} in {}: {e}", dir.display());
                }
            }
        }
    }

    /// Forgets every entry whose id is not in `listed` (backups removed since).
    pub fn retain(&self, listed: &HashSet<&str>) {
        match &self.store {
            Store::Memory(entries) => entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|id, _| listed.contains(id.as_str())),
            Store::Disk(dir) => {
                let Ok(read) = std::fs::read_dir(dir) else {
                    return;
                };
                for entry in read.flatten() {
                    let name = entry.file_name();
                    let Some(id) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
                        continue;
                    };
                    if !listed.contains(id) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
    }
}

fn write_entry(dir: &Path, id: &str, validator: &Validator, bytes: &[u8]) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let stamp = |s: &Stamp| {
        format!(
            "{} {}",
            s.size,
            s.modified.map_or("-".to_string(), |m| m.to_string())
        )
    };
    let header = format!(
        "{MAGIC}\nmanifest {}\nsignature {}\nverified {}\nsha256 {}\n\n",
        stamp(&validator.manifest),
        validator.signature.as_ref().map_or("none".into(), stamp),
        validator.verified_by.as_deref().unwrap_or("none"),
        hex::encode(Sha256::digest(bytes)),
    );
    // tempfile creates 0600 whatever the umask; the rename makes the entry appear whole.
    let mut file = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    file.write_all(header.as_bytes())?;
    file.write_all(bytes)?;
    file.persist(dir.join(format!("{id}{SUFFIX}")))
        .map_err(|e| e.error)?;
    Ok(())
}

/// The validator and body of an entry, or `None` for anything damaged.
fn parse_entry(bytes: &[u8]) -> Option<(Validator, &[u8])> {
    let end = memchr::memmem::find(bytes, b"\n\n")?;
    let header = std::str::from_utf8(&bytes[..end]).ok()?;
    let body = &bytes[end + 2..];
    let mut lines = header.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ');
    let stamp = |text: &str| -> Option<Stamp> {
        let (size, modified) = text.split_once(' ')?;
        Some(Stamp {
            size: size.parse().ok()?,
            modified: match modified {
                "-" => None,
                m => Some(m.parse().ok()?),
            },
        })
    };
    let manifest = stamp(field("manifest")?)?;
    let signature = match field("signature")? {
        "none" => None,
        s => Some(stamp(s)?),
    };
    let verified_by = match field("verified")? {
        "none" => None,
        k => Some(k.to_string()),
    };
    let digest = field("sha256")?;
    if hex::encode(Sha256::digest(body)) != digest {
        return None;
    }
    Some((
        Validator {
            manifest,
            signature,
            verified_by,
        },
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{BackupKind, SourceInfo};
    use std::os::unix::fs::PermissionsExt;

    const ID: &str = "20261126T182103Z-full-a44d";
    const KEY: &str = "manifests/20261126T182103Z-full-a44d.json";

    fn manifest() -> Manifest {
        let source = SourceInfo {
            host: "127.0.0.1".into(),
            port: 3306,
            server_version: "10.11".into(),
            server_id: 1,
            dump_tool: "mariadb-dump".into(),
        };
        Manifest::finished_now(ID, BackupKind::Full, jiff::Timestamp::now(), source)
    }

    fn validator(size: u64, verified_by: Option<&str>) -> Validator {
        Validator {
            manifest: Stamp {
                size,
                modified: Some(7),
            },
            signature: Some(Stamp {
                size: 300,
                modified: Some(8),
            }),
            verified_by: verified_by.map(str::to_string),
        }
    }

    #[test]
    fn entries_are_private_used_only_when_the_listing_agrees_and_damage_is_ignored() {
        let state = tempfile::tempdir().unwrap();
        let catalog = Catalog::on_disk(state.path(), "s3://bucket/prefix at http://x");
        let other = Catalog::on_disk(state.path(), "s3://bucket/other at http://x");
        assert_ne!(catalog.dir(), other.dir());
        let manifest = manifest();
        let bytes = manifest.to_json();
        let size = bytes.len() as u64;
        let checked = validator(size, Some("k1"));
        catalog.store(ID, &checked, &bytes, &manifest);
        let dir = catalog.dir().unwrap();
        let file = dir.join(format!("{ID}{SUFFIX}"));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(catalog.lookup(ID, KEY, &checked), Some(manifest.clone()));
        assert_eq!(other.lookup(ID, KEY, &checked), None);
        // Checked entries serve unchecked reads; nothing serves another key, a changed
        // manifest or signature, or a signature no longer listed.
        assert!(catalog.lookup(ID, KEY, &validator(size, None)).is_some());
        assert!(
            catalog
                .lookup(ID, KEY, &validator(size, Some("k2")))
                .is_none()
        );
        assert!(
            catalog
                .lookup(ID, KEY, &validator(size + 1, Some("k1")))
                .is_none()
        );
        let mut resigned = checked.clone();
        resigned.signature.as_mut().unwrap().modified = Some(9);
        assert!(catalog.lookup(ID, KEY, &resigned).is_none());
        resigned.signature = None;
        assert!(catalog.lookup(ID, KEY, &resigned).is_none());
        // An unchecked entry never serves a checked read.
        catalog.store(ID, &validator(size, None), &bytes, &manifest);
        assert!(catalog.lookup(ID, KEY, &checked).is_none());
        // A flipped byte, a truncated entry, garbage: ignored, then rewritten.
        catalog.store(ID, &checked, &bytes, &manifest);
        let mut stored = std::fs::read(&file).unwrap();
        let last = stored.len() - 3;
        stored[last] ^= 1;
        std::fs::write(&file, &stored).unwrap();
        assert!(catalog.lookup(ID, KEY, &checked).is_none());
        std::fs::write(&file, &stored[..40]).unwrap();
        assert!(catalog.lookup(ID, KEY, &checked).is_none());
        std::fs::write(&file, b"\xff\xfe\n\n{}").unwrap();
        assert!(catalog.lookup(ID, KEY, &checked).is_none());
        catalog.store(ID, &checked, &bytes, &manifest);
        assert!(catalog.lookup(ID, KEY, &checked).is_some());
        // Under another name, an entry is not that manifest.
        std::fs::copy(
            &file,
            dir.join(format!("20300101T000000Z-full-beef{SUFFIX}")),
        )
        .unwrap();
        assert!(
            catalog
                .lookup(
                    "20300101T000000Z-full-beef",
                    "manifests/20300101T000000Z-full-beef.json",
                    &checked
                )
                .is_none()
        );
        // Entries of backups no longer listed go.
        catalog.retain(&HashSet::from([ID]));
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
        catalog.retain(&HashSet::new());
        assert!(catalog.lookup(ID, KEY, &checked).is_none());
    }

    #[test]
    fn the_memory_store_follows_the_same_rules() {
        let catalog = Catalog::in_memory();
        let manifest = manifest();
        let bytes = manifest.to_json();
        let checked = validator(bytes.len() as u64, Some("k1"));
        catalog.store(ID, &checked, &bytes, &manifest);
        assert_eq!(catalog.lookup(ID, KEY, &checked), Some(manifest));
        assert!(
            catalog
                .lookup(ID, KEY, &validator(bytes.len() as u64, Some("k2")))
                .is_none()
        );
        catalog.retain(&HashSet::new());
        assert!(catalog.lookup(ID, KEY, &checked).is_none());
    }
}

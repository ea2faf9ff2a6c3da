//! One version of a table's files: its manifest, `configs/NAME/ID.json`, and version ids.
//!
//! A version records *every* file of the table at that moment (path, size, mode, times, owner
//! and the keyed chunk ids of its content: no plain digest of a content is stored), plus which
//! paths changed against the version before. It is written last, after the chunks it names, and
//! signed like every manifest when a signing key is configured.

use coffer_core::error::{Error, Result};
use coffer_files::chunk_id::ChunkId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The newest version-manifest format this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;

/// Where version manifests live: `configs/NAME/ID.json`.
pub const PREFIX: &str = "configs/";

/// A version manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The version id ([`new_version_id`]).
    pub id: String,
    /// The `[[config_backup]]` table's name.
    pub name: String,
    /// When the files were read.
    pub created_at: Timestamp,
    /// `coffer X.Y.Z`.
    pub created_by: String,
    /// Whether the chunks are encrypted (an age recipient was configured).
    pub encrypted: bool,
    /// Every file of the table, sorted by path.
    pub files: Vec<FileRecord>,
    /// The paths whose content changed, appeared or disappeared since the version before.
    pub changes: Vec<Change>,
    /// Paths that could not be read this time (their record, if any, is the previous one's).
    #[serde(default)]
    pub unreadable: Vec<crate::paths::Unreadable>,
}

/// One file as a version recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Its absolute path.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its permission bits (`0o7777` at most).
    pub mode: u32,
    /// Its modification time.
    pub mtime: Timestamp,
    /// Its owner.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// Its content: the keyed ids of its chunks, in order, hex (none for an empty file).
    pub chunks: Vec<String>,
}

impl FileRecord {
    /// The chunk ids, parsed.
    pub fn chunk_ids(&self) -> Result<Vec<ChunkId>> {
        self.chunks.iter().map(|c| ChunkId::from_hex(c)).collect()
    }
}

/// How a path changed in a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// It was not in the version before.
    Added,
    /// Its content differs from the version before.
    Modified,
    /// It was in the version before and is gone.
    Deleted,
    /// Only in a history, never in a manifest: the oldest version a prune left holds the file,
    /// unchanged since a version that was pruned.
    Retained,
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Added => "added",
            Self::Retained => "retained",
            Self::Modified => "modified",
            Self::Deleted => "deleted",
        })
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The absolute path.
    pub path: String,
    /// How it changed.
    pub change: ChangeKind,
}

impl Version {
    /// The object key of version `id` of table `name`.
    pub fn key(name: &str, id: &str) -> String {
        format!("{PREFIX}{name}/{id}.json")
    }

    /// This version's record of `path`, if the file existed then.
    pub fn file(&self, path: &str) -> Option<&FileRecord> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }

    /// How `path` changed in this version, if it did.
    pub fn change_of(&self, path: &str) -> Option<ChangeKind> {
        self.changes
            .iter()
            .find(|c| c.path == path)
            .map(|c| c.change)
    }

    /// The manifest as stored.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a version serializes")
    }

    /// Parses and checks a manifest read from `key` (table `name`, id `id` by its key): the
    /// format, the id and name against the key, every path and chunk id. Anything else is an
    /// integrity error naming the object.
    pub fn from_json(bytes: &[u8], name: &str, id: &str) -> Result<Self> {
        let key = Self::key(name, id);
        let bad = |why: String| Error::integrity(format!("version manifest {key}: {why}"));
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a version: {e}")))?;
        if version.format_version > FORMAT_VERSION || version.format_version == 0 {
            return Err(bad(format!(
                "format version {} (this coffer reads up to {FORMAT_VERSION})",
                version.format_version
            )));
        }
        if version.id != id || version.name != name {
            return Err(bad(format!(
                "it says it is {}/{}",
                version.name, version.id
            )));
        }
        for (i, file) in version.files.iter().enumerate() {
            check_path(&file.path).map_err(&bad)?;
            if i > 0 && version.files[i - 1].path >= file.path {
                return Err(bad("files are not sorted by path".into()));
            }
            if file.mode > 0o7777 {
                return Err(bad(format!("mode {:o} of {}", file.mode, file.path)));
            }
            file.chunk_ids()
                .map_err(|e| bad(format!("{}: {e}", file.path)))?;
        }
        for change in &version.changes {
            check_path(&change.path).map_err(&bad)?;
            if change.change == ChangeKind::Retained {
                return Err(bad(format!(
                    "{}: \"retained\" is not a change",
                    change.path
                )));
            }
        }
        Ok(version)
    }
}

/// Checks a path from the command line or a manifest: absolute, UTF-8, no `.` or `..`
/// component, no empty component, no control character.
pub fn check_path(path: &str) -> std::result::Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{path:?} is not an absolute path"));
    };
    if rest.is_empty()
        || path.chars().any(char::is_control)
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("{path:?} is not a plain absolute file path"));
    }
    Ok(())
}

/// A new version id, `YYYYMMDDTHHMMSSZ-config-XXXX`: sortable by time like backup ids.
pub fn new_version_id(at: Timestamp) -> String {
    let stamp = at.strftime("%Y%m%dT%H%M%SZ");
    let mixed = u64::from(at.subsec_nanosecond().unsigned_abs())
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(std::process::id()).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let noise = (mixed >> 48) & 0xffff;
    format!("{stamp}-config-{noise:04x}")
}

/// Removes version `id` of table `name` (a prune): its manifest first (so it is never listed
/// half-removed), then its signature. Its chunks stay until a prune finds nothing references
/// them.
pub async fn remove(
    repository: &coffer_core::repository::Repository,
    name: &str,
    id: &str,
) -> Result<()> {
    check_version_id(id)?;
    let key = Version::key(name, id);
    repository.storage().delete(&key).await?;
    repository
        .storage()
        .delete(&coffer_core::signing::signature_key(&key))
        .await
}

/// Whether `id` has exactly the shape [`new_version_id`] makes (and so is safe in a key).
pub fn is_valid_version_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 28
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && &b[15..24] == b"Z-config-"
        && b[24..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Checks a version id given on the command line (a configuration error when malformed).
pub fn check_version_id(id: &str) -> Result<()> {
    if is_valid_version_id(id) {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{id:?} is not a configuration version id (YYYYMMDDTHHMMSSZ-config-XXXX)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Version {
        let at: Timestamp = "2026-12-02T18:00:00Z".parse().unwrap();
        Version {
            format_version: FORMAT_VERSION,
            id: new_version_id(at),
            name: "config".into(),
            created_at: at,
            created_by: "coffer 0.1.0".into(),
            encrypted: false,
            files: vec![FileRecord {
                path: "/srv/app/.env".into(),
                size: 3,
                mode: 0o600,
                mtime: at,
                uid: 0,
                gid: 0,
                chunks: vec!["ab".repeat(32)],
            }],
            changes: vec![Change {
                path: "/srv/app/.env".into(),
                change: ChangeKind::Added,
            }],
            unreadable: vec![],
        }
    }

    #[test]
    fn ids_have_the_documented_shape() {
        let id = new_version_id("2026-12-02T18:00:00Z".parse().unwrap());
        assert!(id.starts_with("20261202T180000Z-config-"), "{id}");
        assert!(is_valid_version_id(&id));
        for bad in [
            "",
            "latest",
            "20261202T180000Z-full-3fa9",
            "20261202T180000Z-config-3FA9",
            "../20261202T180000Z-config",
            "20261202T180000Z-config-3fa9/x",
        ] {
            assert!(!is_valid_version_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_version_round_trips_and_a_crafted_one_is_refused() {
        let version = sample();
        let back = Version::from_json(&version.to_json(), "config", &version.id).unwrap();
        assert_eq!(back, version);
        assert_eq!(back.file("/srv/app/.env").unwrap().size, 3);

        let err = Version::from_json(&version.to_json(), "other", &version.id).unwrap_err();
        assert_eq!(err.kind(), coffer_core::ErrorKind::Integrity);
        let mut crafted = sample();
        crafted.files[0].path = "/srv/../etc/shadow".into();
        assert!(Version::from_json(&crafted.to_json(), "config", &crafted.id).is_err());
        let mut newer = sample();
        newer.format_version = FORMAT_VERSION + 1;
        assert!(Version::from_json(&newer.to_json(), "config", &newer.id).is_err());
    }
}

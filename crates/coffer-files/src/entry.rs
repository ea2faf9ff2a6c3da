//! One record of a snapshot listing: an [`Entry`], and the rules its path must obey.
//!
//! A snapshot's paths come back from storage at restore time, so they are untrusted: every path
//! is checked by [`validate_path`] when a record is read ([`Entry::from_json_line`]) as well as
//! when one is made. A valid path is relative, not empty, made of components that are neither
//! `.` nor `..`, and holds no NUL byte: joined under a target folder it names something inside
//! it. Names are bytes (Unix file names need not be UTF-8); a name that is UTF-8 is written as a
//! JSON string, any other as base64 in a `*_b64` field, so every name round-trips exactly.
//!
//! An entry taken from an S3 prefix also carries the object's [`ObjectInfo`] (ETag, content
//! type, user metadata); a record has that field only when it is set, so listings of folders
//! are the same bytes as before it existed.
//!
//! Listings are ordered by [`cmp_paths`]: component by component, each compared as bytes. That is
//! the order of a depth-first walk that visits each folder's children sorted by name, so a
//! directory comes right before its contents, and a walk and a parent listing can be merged in
//! one pass.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use coffer_core::error::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::chunk_id::ChunkId;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file; its content is its chunks.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; its target is recorded, never followed.
    Symlink,
    /// Another name of a file listed earlier (same device and inode).
    Hardlink,
}

/// One entry of a snapshot: what a restore needs to recreate it, and what the next snapshot
/// needs to tell whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path relative to the snapshot's root, as bytes; valid by [`validate_path`].
    pub path: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// The file's length in bytes (0 for anything but files and hard links).
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch (change detection only).
    pub ctime_ns: i64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Inode number (change detection, hard links).
    pub inode: u64,
    /// Device number (change detection, hard links).
    pub device: u64,
    /// A symlink's target, as stored in the link (may point anywhere, even outside the tree).
    pub target: Option<Vec<u8>>,
    /// A hard link's earlier path (valid by [`validate_path`]).
    pub link: Option<Vec<u8>>,
    /// The content's chunks in order (files and hard links; empty for an empty file).
    pub chunks: Vec<ChunkId>,
    /// For an entry read from an S3 prefix: what the object carried besides its bytes. `None`
    /// for entries of a folder and for directories synthesized from key prefixes.
    pub object: Option<ObjectInfo>,
}

/// What an S3 object carries besides its bytes, recorded so a restore to S3 gives it back and
/// the next snapshot can tell whether it changed. Its last-modified time is the entry's
/// `mtime_ns`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// The ETag (without quotes); empty when the server did not give one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    /// `Content-Type`, when the object has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-NAME`: value), names as S3 returns them (lowercase).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The record as written: one JSON object per line.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    #[serde(rename = "type")]
    kind: EntryKind,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    ctime_ns: i64,
    uid: u32,
    gid: u32,
    inode: u64,
    device: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    chunks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object: Option<ObjectInfo>,
}

/// A name as its text field or, when not UTF-8, its base64 field.
fn split_name(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(B64.encode(bytes))),
    }
}

fn join_name(text: Option<String>, b64: Option<String>, field: &str) -> Result<Option<Vec<u8>>> {
    match (text, b64) {
        (None, None) => Ok(None),
        (Some(text), None) => Ok(Some(text.into_bytes())),
        (None, Some(b64)) => B64
            .decode(b64.as_bytes())
            .map(Some)
            .map_err(|e| Error::integrity(format!("{field}_b64 is not base64: {e}"))),
        (Some(_), Some(_)) => Err(Error::integrity(format!(
            "a record has both {field} and {field}_b64"
        ))),
    }
}

impl Entry {
    /// The record as one JSON line, newline included.
    pub fn to_json_line(&self) -> Vec<u8> {
        let (path, path_b64) = split_name(&self.path);
        let (target, target_b64) = self
            .target
            .as_deref()
            .map(split_name)
            .unwrap_or((None, None));
        let (link, link_b64) = self.link.as_deref().map(split_name).unwrap_or((None, None));
        let record = Record {
            path,
            path_b64,
            kind: self.kind,
            size: self.size,
            mode: self.mode,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            uid: self.uid,
            gid: self.gid,
            inode: self.inode,
            device: self.device,
            target,
            target_b64,
            link,
            link_b64,
            chunks: self.chunks.iter().map(ChunkId::to_hex).collect(),
            object: self.object.clone(),
        };
        let mut line = serde_json::to_vec(&record).expect("records serialize");
        line.push(b'\n');
        line
    }

    /// Reads one record (without its newline) and checks it: a path that could escape, a
    /// symlink without a target, a hard link without a valid earlier path, or a bad chunk id is
    /// an integrity error naming the path.
    pub fn from_json_line(line: &[u8]) -> Result<Self> {
        let record: Record = serde_json::from_slice(line)
            .map_err(|e| Error::integrity(format!("a listing record is not valid: {e}")))?;
        let path = join_name(record.path, record.path_b64, "path")?
            .ok_or_else(|| Error::integrity("a listing record has no path"))?;
        validate_path(&path)?;
        let shown = display_path(&path);
        let target =
            join_name(record.target, record.target_b64, "target").map_err(|e| e.context(&shown))?;
        let link =
            join_name(record.link, record.link_b64, "link").map_err(|e| e.context(&shown))?;
        match record.kind {
            EntryKind::Symlink if target.is_none() => {
                return Err(Error::integrity(format!(
                    "{shown}: a symlink without a target"
                )));
            }
            EntryKind::Hardlink => match &link {
                Some(link) => {
                    validate_path(link).map_err(|e| e.context(format!("{shown}: hard link")))?
                }
                None => {
                    return Err(Error::integrity(format!(
                        "{shown}: a hard link without the path it links to"
                    )));
                }
            },
            _ => {}
        }
        if target
            .as_ref()
            .is_some_and(|t| t.is_empty() || t.contains(&0))
        {
            return Err(Error::integrity(format!(
                "{shown}: an invalid symlink target"
            )));
        }
        let chunks = record
            .chunks
            .iter()
            .map(|c| ChunkId::from_hex(c))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| e.context(&shown))?;
        Ok(Self {
            path,
            kind: record.kind,
            size: record.size,
            mode: record.mode & 0o7777,
            mtime_ns: record.mtime_ns,
            ctime_ns: record.ctime_ns,
            uid: record.uid,
            gid: record.gid,
            inode: record.inode,
            device: record.device,
            target,
            link,
            chunks,
            object: record.object,
        })
    }

    /// The path for messages (lossy for names that are not UTF-8).
    pub fn display(&self) -> String {
        display_path(&self.path)
    }
}

/// A path for messages: UTF-8 as is, other bytes replaced, control characters escaped (a name
/// with a newline must not split a log line).
pub fn display_path(path: &[u8]) -> String {
    String::from_utf8_lossy(path).escape_debug().to_string()
}

/// Checks that `path` is a relative path that stays inside whatever folder it is joined to:
/// not empty, not absolute, no empty, `.` or `..` component, no NUL byte. Anything else is an
/// integrity error naming the path (paths are checked when read back from storage).
pub fn validate_path(path: &[u8]) -> Result<()> {
    let refuse = |why: &str| {
        Err(Error::integrity(format!(
            "the snapshot path {:?} {why}",
            display_path(path)
        )))
    };
    if path.is_empty() {
        return refuse("is empty");
    }
    if path.contains(&0) {
        return refuse("contains a NUL byte");
    }
    if path[0] == b'/' {
        return refuse("is absolute");
    }
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" => return refuse("has an empty component"),
            b"." | b".." => return refuse("has a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// The listing order: component by component, each compared as bytes. A directory sorts right
/// before its contents (`a`, `a/z`, `a b`), which is the order of a sorted depth-first walk.
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// Whether `path` is `prefix` or lies under it (by whole components).
pub fn is_under(path: &[u8], prefix: &[u8]) -> bool {
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(path: &[u8]) -> Entry {
        Entry {
            path: path.to_vec(),
            kind: EntryKind::File,
            size: 3,
            mode: 0o644,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_000_000_000_001,
            uid: 1000,
            gid: 1000,
            inode: 42,
            device: 7,
            target: None,
            link: None,
            chunks: vec![ChunkId([9; 32])],
            object: None,
        }
    }

    /// A folder's record is exactly what it was before object metadata existed: old readers
    /// read new folder listings, and listings of an unchanged folder keep their chunks.
    #[test]
    fn a_record_without_object_metadata_is_unchanged_and_one_with_it_round_trips() {
        let line = file(b"docs/a.pdf").to_json_line();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            concat!(
                r#"{"path":"docs/a.pdf","type":"file","size":3,"mode":420,"#,
                r#""mtime_ns":1700000000123456789,"ctime_ns":1700000000000000001,"#,
                r#""uid":1000,"gid":1000,"inode":42,"device":7,"#,
                r#""chunks":["0909090909090909090909090909090909090909090909090909090909090909"]}"#,
                "\n"
            )
        );
        let mut object = file(b"tenants/t1/report 2026.pdf");
        object.object = Some(ObjectInfo {
            etag: "5d41402abc4b2a76b9719d911017c592".into(),
            content_type: Some("application/pdf".into()),
            metadata: [("owner".to_string(), "Tenant \u{e9}".to_string())].into(),
        });
        let line = object.to_json_line();
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(
            text.contains(r#""object":{"etag":"5d41402abc4b2a76b9719d911017c592","content_type":"application/pdf","metadata":{"owner":"Tenant é"}}"#),
            "{text}"
        );
        assert_eq!(
            Entry::from_json_line(&line[..line.len() - 1]).unwrap(),
            object
        );
        // An old reader ignores the field (unknown fields are ignored); a new one reads old
        // records without it.
        let old = text.replace(
            r#","object":{"etag":"5d41402abc4b2a76b9719d911017c592","content_type":"application/pdf","metadata":{"owner":"Tenant é"}}"#,
            "",
        );
        assert_eq!(
            Entry::from_json_line(old.trim_end().as_bytes())
                .unwrap()
                .object,
            None
        );
    }

    #[test]
    fn records_round_trip_utf8_and_other_names() {
        for path in [
            &b"docs/r\xc3\xa9sum\xc3\xa9 2026.pdf"[..],
            b"bin/\xff\xfe-raw",
            b"-x/a\nb",
        ] {
            let entry = file(path);
            let line = entry.to_json_line();
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
            let back = Entry::from_json_line(&line[..line.len() - 1]).unwrap();
            assert_eq!(back, entry);
        }
        let line = file(b"bin/\xff").to_json_line();
        assert!(String::from_utf8_lossy(&line).contains("\"path_b64\""));
        let mut link = file(b"l");
        link.kind = EntryKind::Symlink;
        link.target = Some(b"../../etc/\xffpasswd".to_vec());
        link.chunks.clear();
        let line = link.to_json_line();
        assert_eq!(
            Entry::from_json_line(&line[..line.len() - 1]).unwrap(),
            link
        );
    }

    #[test]
    fn crafted_records_are_integrity_errors() {
        let good = String::from_utf8(file(b"a").to_json_line()).unwrap();
        for (from, to) in [
            ("\"path\":\"a\"", "\"path\":\"../x\""),
            ("\"path\":\"a\"", "\"path\":\"/etc/passwd\""),
            ("\"path\":\"a\"", "\"path\":\"a\\u0000b\""),
            ("\"path\":\"a\"", "\"path_b64\":\"Li4veA==\""),
            ("\"type\":\"file\"", "\"type\":\"symlink\""),
            (
                "\"type\":\"file\"",
                "\"type\":\"hardlink\",\"link\":\"../a\"",
            ),
            ("0909", "zz09"),
        ] {
            let bad = good.trim_end().replacen(from, to, 1);
            assert_ne!(bad, good.trim_end());
            let err = Entry::from_json_line(bad.as_bytes()).unwrap_err();
            assert_eq!(
                err.kind(),
                coffer_core::error::ErrorKind::Integrity,
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_order_puts_a_directory_right_before_its_contents() {
        let mut paths: Vec<&[u8]> = vec![b"a b", b"a/z", b"a", b"a/b/c", b"a-", b"b", b"a/b"];
        paths.sort_by(|x, y| cmp_paths(x, y));
        let expected: Vec<&[u8]> = vec![b"a", b"a/b", b"a/b/c", b"a/z", b"a b", b"a-", b"b"];
        assert_eq!(paths, expected);
        assert!(is_under(b"a/b", b"a") && is_under(b"a", b"a") && !is_under(b"ab", b"a"));
    }

    #[test]
    fn paths_that_escape_are_refused() {
        for bad in [
            &b""[..],
            b"/",
            b"/etc",
            b"..",
            b"../x",
            b"a/../../x",
            b"a/./b",
            b".",
            b"a//b",
            b"a/",
            b"a\0b",
        ] {
            assert!(validate_path(bad).is_err(), "{:?}", display_path(bad));
        }
        for good in [
            &b"a"[..],
            b"a/b",
            b"...",
            b"..a",
            b"-rf",
            b"a b/\n",
            b"\xff",
        ] {
            validate_path(good).unwrap();
        }
    }

    proptest! {
        /// Whatever the bytes, an accepted path joined under a root stays under it: resolving its
        /// components lexically never climbs above the root, and no component is special.
        #[test]
        fn an_accepted_path_never_escapes(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(b"..".to_vec()), Just(b".".to_vec()), Just(Vec::new()),
                    Just(b"\0".to_vec()), proptest::collection::vec(any::<u8>(), 0..6)
                ],
                0..6,
            ),
            leading_slash in any::<bool>(),
        ) {
            let mut path = if leading_slash { b"/".to_vec() } else { Vec::new() };
            path.extend(parts.join(&b'/'));
            if validate_path(&path).is_ok() {
                let joined = std::path::Path::new("/root").join(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&path),
                );
                let mut depth = 0i32;
                for c in joined.strip_prefix("/root").unwrap().components() {
                    match c {
                        std::path::Component::Normal(_) => depth += 1,
                        other => prop_assert!(false, "component {other:?} in {path:?}"),
                    }
                }
                prop_assert!(depth >= 1);
                prop_assert!(!path.contains(&0));
            }
        }
    }
}

//! Signatures over what coffer writes to describe backups: manifests and drill reports.
//!
//! A SHA-256 digest proves that an artifact matches its manifest, not that the manifest is ours:
//! whoever can write to the storage can write a manifest (and, since the age recipient is public,
//! a valid encrypted artifact) of their own. A signature made with an Ed25519 key that never
//! leaves the backup host proves that coffer wrote it.
//!
//! The format is minisign's (<https://jedisct1.github.io/minisign/>), so an operator can check
//! any signed object by hand without coffer:
//!
//! ```text
//! minisign -Vm manifests/ID.json -p coffer.pub
//! ```
//!
//! - The secret key file is minisign's secret key format, unencrypted (a key that is needed
//!   unattended cannot ask for a password: `minisign -G -W` makes the same kind), mode `0600`.
//! - The public key file is minisign's public key format; the key alone is its second line
//!   (`RW…`), as `minisign -P` takes it.
//! - Signatures are minisign's pre-hashed (BLAKE2b-512) Ed25519 signatures, stored next to the
//!   signed object as `KEY.minisig`. The trusted comment (signed too) says when, what and who:
//!   `timestamp:UNIX\tfile:KEY\tcoffer VERSION`; it is informative, readers do not act on it.
//!
//! Parsing keys and signatures never panics on any input: a signature file is checked for the
//! shape minisign expects before the `minisign` crate sees it.

use std::fmt;
use std::io::{Cursor, Write as _};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The suffix of a signature next to the object it signs (`manifests/ID.json.minisig`).
pub const SIGNATURE_SUFFIX: &str = ".minisig";
/// The file name `coffer key generate` gives the secret key.
pub const SECRET_KEY_FILE: &str = "coffer.key";
/// The file name `coffer key generate` gives the public key.
pub const PUBLIC_KEY_FILE: &str = "coffer.pub";

const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
const TRUSTED_PREFIX: &str = "trusted comment: ";
/// Length of a base64 public key: 2 algorithm bytes, 8 key id bytes, 32 key bytes.
const PUBLIC_KEY_B64_LEN: usize = 56;
/// Length of a base64 signature line: 2 algorithm bytes, 8 key id bytes, 64 signature bytes.
const SIGNATURE_B64_LEN: usize = 100;
/// Length of a secret key: algorithm, KDF, checksum algorithm (2 bytes each), KDF salt (32),
/// KDF limits (8 + 8), key id (8), key (64), checksum (32).
const SECRET_KEY_BYTES: usize = 158;
/// Length of a base64 global (trusted comment) signature: 64 bytes.
const GLOBAL_SIGNATURE_B64_LEN: usize = 88;
/// Longest trusted comment minisign itself writes or reads.
const TRUSTED_COMMENT_MAX: usize = 8192;

/// The key of the signature of the object at `key`.
pub fn signature_key(key: &str) -> String {
    format!("{key}{SIGNATURE_SUFFIX}")
}

/// The trusted comment coffer signs with every object: when, which key, which coffer.
pub fn trusted_comment(key: &str) -> String {
    let now = jiff::Timestamp::now().as_second();
    format!(
        "timestamp:{now}\tfile:{key}\tcoffer {}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The secret half: signs manifests and reports on the backup host. Never printed.
#[derive(Clone)]
pub struct SigningKey {
    secret: minisign::SecretKey,
    public: minisign::PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, ***)", key_id(self.public.keynum()))
    }
}

impl SigningKey {
    /// Reads a secret key file's text (minisign's format, unencrypted).
    pub fn from_text(text: &str) -> Result<Self> {
        let encoded = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with(UNTRUSTED_PREFIX.trim_end()))
            .ok_or_else(|| Error::config("not a minisign secret key: no key line"))?;
        // minisign's layout: algorithm "Ed", KDF (none: [0, 0]; "Sc": a password), checksum
        // algorithm, KDF salt and limits, key id, the 64-byte key, its checksum.
        let bytes = base64_decode(encoded)
            .filter(|b| b.len() == SECRET_KEY_BYTES)
            .ok_or_else(|| Error::config("not a minisign secret key (want its base64 line)"))?;
        if &bytes[..2] != b"Ed" {
            return Err(Error::config(
                "not a minisign Ed25519 secret key (unknown algorithm)",
            ));
        }
        if bytes[2..4] != [0, 0] {
            return Err(Error::config(
                "the secret key is protected by a password, but coffer signs unattended: use an \
                 unencrypted key (`coffer key generate`, or `minisign -G -W`)",
            ));
        }
        // Not through minisign's box parser: `minisign -G -W` leaves the checksum of an
        // unencrypted key zero, which that parser calls corrupted. The self-test below checks the
        // key itself instead, which the checksum only stands in for.
        let secret = minisign::SecretKey::from_bytes(&bytes)
            .map_err(|e| Error::config(format!("not a minisign secret key: {e}")))?;
        let public = minisign::PublicKey::from_secret_key(&secret)
            .map_err(|e| Error::config(format!("not a minisign secret key: {e}")))?;
        let key = SigningKey { secret, public };
        // A key whose halves do not belong together would sign what nobody can verify.
        key.sign(b"coffer key self-test", "self-test")
            .map_err(|_| Error::config("not a usable minisign secret key (self-test failed)"))?;
        Ok(key)
    }

    /// Reads a secret key file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!(
                "cannot read secret key file {}: {e}",
                path.display()
            ))
        })?;
        Self::from_text(&text)
    }

    /// The public half, to check what this key signs.
    pub fn verify_key(&self) -> VerifyKey {
        VerifyKey {
            public: self.public.clone(),
        }
    }

    /// The key id, as minisign prints it (16 hex digits).
    pub fn key_id(&self) -> String {
        key_id(self.public.keynum())
    }

    /// Signs `data`; returns the text of a `.minisig` file. The signature is checked against the
    /// public half before it is returned.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<Vec<u8>> {
        // minisign trims the comment line when it reads it back: sign what it will read.
        let comment: String = trusted_comment
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .take(TRUSTED_COMMENT_MAX)
            .collect();
        let untrusted = format!("signature from coffer secret key {}", self.key_id());
        let signature = minisign::sign(
            Some(&self.public),
            &self.secret,
            Cursor::new(data),
            Some(comment.trim()),
            Some(&untrusted),
        )
        .map_err(|e| Error::other(format!("signing failed: {e}")))?;
        Ok(signature.to_bytes())
    }
}

/// The public half: checks signatures. Safe to print and to share.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyKey {
    public: minisign::PublicKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyKey({})", self.key_id())
    }
}

/// Why a signature was not accepted (a sentence fragment; the caller names the object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    /// The signature file is not a minisign signature.
    Malformed(String),
    /// Signed by another key.
    OtherKey {
        /// The key id in the signature.
        signed_by: String,
        /// The key id of the verify key.
        expected: String,
    },
    /// The key matches but the signature does not: the object (or its trusted comment) changed.
    Mismatch,
}

impl fmt::Display for SignatureProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "not a minisign signature ({why})"),
            Self::OtherKey {
                signed_by,
                expected,
            } => write!(
                f,
                "signed by key {signed_by}, not by the verify key {expected}"
            ),
            Self::Mismatch => f.write_str("the signature does not match its contents"),
        }
    }
}

impl VerifyKey {
    /// Whether `value` has the shape of a public key itself (`RW…`, 56 base64 characters)
    /// rather than a path to a public key file.
    pub fn looks_like_key(value: &str) -> bool {
        let value = value.trim();
        value.len() == PUBLIC_KEY_B64_LEN
            && value.starts_with("RW")
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    }

    /// Parses a public key: the key alone (`RW…`) or a public key file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with(UNTRUSTED_PREFIX.trim_end()))
            .collect();
        let [encoded] = lines.as_slice() else {
            return Err(Error::config(
                "not a minisign public key (want the `RW…` line, or a file holding it)",
            ));
        };
        if !Self::looks_like_key(encoded) {
            return Err(Error::config(
                "not a minisign Ed25519 public key (want 56 base64 characters starting with RW)",
            ));
        }
        let public = minisign::PublicKey::from_base64(encoded)
            .map_err(|e| Error::config(format!("not a minisign public key: {e}")))?;
        if public.to_bytes().get(..2) != Some(b"Ed".as_slice()) {
            return Err(Error::config(
                "not a minisign Ed25519 public key (unknown algorithm)",
            ));
        }
        Ok(VerifyKey { public })
    }

    /// Reads a public key file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!(
                "cannot read public key file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text)
    }

    /// The key id, as minisign prints it (16 hex digits).
    pub fn key_id(&self) -> String {
        key_id(self.public.keynum())
    }

    /// The key alone, as `minisign -P` takes it (`RW…`).
    pub fn to_base64(&self) -> String {
        self.public.to_base64()
    }

    /// A public key file, as minisign writes one.
    pub fn to_file_text(&self) -> String {
        format!(
            "{UNTRUSTED_PREFIX}minisign public key {}\n{}\n",
            self.key_id(),
            self.to_base64()
        )
    }

    /// Checks that `signature` (a `.minisig` file's bytes) signs `data` with this key; returns
    /// the trusted comment.
    pub fn verify(
        &self,
        data: &[u8],
        signature: &[u8],
    ) -> std::result::Result<String, SignatureProblem> {
        let text = std::str::from_utf8(signature)
            .map_err(|_| SignatureProblem::Malformed("not UTF-8 text".into()))?;
        check_signature_shape(text)?;
        let signature_box = minisign::SignatureBox::from_string(text)
            .map_err(|e| SignatureProblem::Malformed(e.to_string()))?;
        if !signature_box.is_prehashed() {
            return Err(SignatureProblem::Malformed(
                "a legacy (not pre-hashed) signature".into(),
            ));
        }
        if signature_box.keynum() != self.public.keynum() {
            return Err(SignatureProblem::OtherKey {
                signed_by: key_id(signature_box.keynum()),
                expected: self.key_id(),
            });
        }
        minisign::verify(
            &self.public,
            &signature_box,
            Cursor::new(data),
            true,
            false,
            false,
        )
        .map_err(|_| SignatureProblem::Mismatch)?;
        signature_box
            .trusted_comment()
            .map_err(|e| SignatureProblem::Malformed(e.to_string()))
    }
}

/// Rejects what is not shaped like a minisign signature before the `minisign` crate parses it
/// (it indexes into the decoded signatures and would panic on short ones).
fn check_signature_shape(text: &str) -> std::result::Result<(), SignatureProblem> {
    let malformed = |why: &str| Err(SignatureProblem::Malformed(why.to_string()));
    let mut lines = text.lines();
    let (Some(untrusted), Some(signature), Some(trusted), Some(global)) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return malformed("fewer than four lines");
    };
    if !untrusted.starts_with(UNTRUSTED_PREFIX) {
        return malformed("no untrusted comment line");
    }
    let base64 = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    };
    let signature = signature.trim();
    if signature.len() != SIGNATURE_B64_LEN || !base64(signature) || !signature.ends_with('=') {
        return malformed("the signature line is not 74 bytes of base64");
    }
    if !trusted.starts_with(TRUSTED_PREFIX) || trusted.len() > TRUSTED_COMMENT_MAX {
        return malformed("no trusted comment line");
    }
    let global = global.trim();
    if global.len() != GLOBAL_SIGNATURE_B64_LEN || !base64(global) || !global.ends_with("==") {
        return malformed("the comment signature line is not 64 bytes of base64");
    }
    Ok(())
}

/// Decodes standard base64 with padding; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let body = text.trim_end_matches('=');
    if !text.len().is_multiple_of(4) || text.len() - body.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in body.bytes() {
        let value = ALPHABET.iter().position(|&a| a == b)? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    let n = keynum.len().min(8);
    bytes[..n].copy_from_slice(&keynum[..n]);
    format!("{:016X}", u64::from_le_bytes(bytes))
}

/// What `coffer key generate` wrote.
#[derive(Debug, Clone)]
pub struct GeneratedKeys {
    /// The secret key file (mode 0600).
    pub secret_key_file: PathBuf,
    /// The public key file.
    pub public_key_file: PathBuf,
    /// The new key's public half.
    pub verify_key: VerifyKey,
}

/// Makes a new key pair in `dir` (created, mode 0700, if missing): [`SECRET_KEY_FILE`], mode
/// 0600 whatever the umask, and [`PUBLIC_KEY_FILE`]. Refuses to replace either file.
pub fn generate_key_pair(dir: &Path) -> Result<GeneratedKeys> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};

    let secret_key_file = dir.join(SECRET_KEY_FILE);
    let public_key_file = dir.join(PUBLIC_KEY_FILE);
    for file in [&secret_key_file, &public_key_file] {
        if std::fs::symlink_metadata(file).is_ok() {
            return Err(Error::config(format!(
                "{} already exists: refusing to replace a key (backups signed with it could no \
                 longer be checked); move it away or choose another --output-dir",
                file.display()
            )));
        }
    }
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::other(format!("cannot create {}: {e}", dir.display())))?;
    }

    let pair = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| Error::other(format!("cannot generate a key pair: {e}")))?;
    let verify_key = VerifyKey { public: pair.pk };
    let secret_text = pair
        .sk
        .to_box(Some(&format!(
            "coffer secret key {} (unencrypted: keep it on the backup host, mode 0600)",
            verify_key.key_id()
        )))
        .map_err(|e| Error::other(format!("cannot encode the secret key: {e}")))?
        .to_string();

    let write = |path: &Path, mode: u32, text: &str| -> Result<()> {
        let fail =
            |e: std::io::Error| Error::other(format!("cannot write {}: {e}", path.display()));
        // create_new: an existing file (or one that appeared meanwhile) is never replaced.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(fail)?;
        // The umask may have taken bits off (or the file is meant to have exactly these).
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)
    };
    write(&secret_key_file, 0o600, &secret_text)?;
    if let Err(e) = write(&public_key_file, 0o644, &verify_key.to_file_text()) {
        let _ = std::fs::remove_file(&secret_key_file);
        return Err(e);
    }
    Ok(GeneratedKeys {
        secret_key_file,
        public_key_file,
        verify_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        let dir = tempfile::tempdir().unwrap();
        let keys = generate_key_pair(dir.path()).unwrap();
        SigningKey::from_file(&keys.secret_key_file).unwrap()
    }

    #[test]
    fn a_signature_round_trips_and_keeps_its_trusted_comment() {
        let key = key();
        let data = b"{\"id\": \"20261126T182103Z-full-a44d\"}\n";
        let comment = trusted_comment("manifests/20261126T182103Z-full-a44d.json");
        let signature = key.sign(data, &comment).unwrap();
        let text = String::from_utf8(signature.clone()).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.starts_with("untrusted comment: signature from coffer secret key "));
        assert!(
            text.contains(&format!("trusted comment: {comment}\n")),
            "{text}"
        );
        let read_back = key.verify_key().verify(data, &signature).unwrap();
        assert_eq!(read_back, comment);
        assert!(read_back.contains("file:manifests/20261126T182103Z-full-a44d.json"));
    }

    #[test]
    fn a_comment_with_line_breaks_or_padding_still_verifies() {
        let key = key();
        let signature = key.sign(b"x", "  two\nlines  ").unwrap();
        assert_eq!(
            key.verify_key().verify(b"x", &signature).unwrap(),
            "two lines"
        );
    }

    #[test]
    fn a_modified_object_is_refused() {
        let key = key();
        let data = b"{\"rows\": 2000}\n".to_vec();
        let signature = key.sign(&data, "c").unwrap();
        let mut changed = data.clone();
        changed[10] = b'1';
        assert_eq!(
            key.verify_key().verify(&changed, &signature),
            Err(SignatureProblem::Mismatch)
        );
        let mut longer = data.clone();
        longer.push(b'\n');
        assert_eq!(
            key.verify_key().verify(&longer, &signature),
            Err(SignatureProblem::Mismatch)
        );
    }

    #[test]
    fn a_changed_trusted_comment_is_refused() {
        let key = key();
        let signature = String::from_utf8(key.sign(b"data", "timestamp:1").unwrap()).unwrap();
        let forged = signature.replace(
            "trusted comment: timestamp:1",
            "trusted comment: timestamp:2",
        );
        assert_ne!(forged, signature);
        assert_eq!(
            key.verify_key().verify(b"data", forged.as_bytes()),
            Err(SignatureProblem::Mismatch)
        );
    }

    #[test]
    fn another_key_is_refused_and_named() {
        let (ours, theirs) = (key(), key());
        let signature = theirs.sign(b"data", "c").unwrap();
        match ours.verify_key().verify(b"data", &signature) {
            Err(SignatureProblem::OtherKey {
                signed_by,
                expected,
            }) => {
                assert_eq!(signed_by, theirs.key_id());
                assert_eq!(expected, ours.key_id());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_key_with_the_same_id_is_refused() {
        // The key id is a label, not a proof: a forger can copy it into a key of their own.
        let (ours, theirs) = (key(), key());
        let signature = String::from_utf8(theirs.sign(b"data", "c").unwrap()).unwrap();
        let their_id = &theirs.verify_key().to_base64();
        let our_id = &ours.verify_key().to_base64();
        // The signature line is base64 of "ED" + key id + signature: re-label it with our id.
        let lines: Vec<&str> = signature.lines().collect();
        use b64::{decode, encode};
        let mut raw = decode(lines[1]);
        raw[2..10].copy_from_slice(&decode(our_id)[2..10]);
        assert_ne!(decode(their_id)[2..10], decode(our_id)[2..10]);
        let relabelled = format!(
            "{}\n{}\n{}\n{}\n",
            lines[0],
            encode(&raw),
            lines[2],
            lines[3]
        );
        assert_eq!(
            ours.verify_key().verify(b"data", relabelled.as_bytes()),
            Err(SignatureProblem::Mismatch)
        );
    }

    /// A small standard base64 codec for the tests above.
    mod b64 {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

        pub fn decode(text: &str) -> Vec<u8> {
            super::super::base64_decode(text).unwrap_or_default()
        }

        pub fn encode(bytes: &[u8]) -> String {
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.len();
                let v = (u32::from(chunk[0]) << 16)
                    | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*chunk.get(2).unwrap_or(&0));
                for i in 0..4 {
                    if i <= n {
                        out.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
                    } else {
                        out.push('=');
                    }
                }
            }
            out
        }
    }

    #[test]
    fn malformed_signatures_are_refused_without_panicking() {
        let key = key();
        let verify = key.verify_key();
        let good = String::from_utf8(key.sign(b"data", "comment").unwrap()).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let mut candidates: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"\n\n\n\n".to_vec(),
            vec![0xff, 0xfe, 0x00],
            good.as_bytes()[..good.len() / 2].to_vec(),
            format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]).into_bytes(),
            // A global signature that decodes to fewer than 64 bytes.
            format!("{}\n{}\n{}\nAAAA\n", lines[0], lines[1], lines[2]).into_bytes(),
            format!("{}\nAAAA\n{}\n{}\n", lines[0], lines[2], lines[3]).into_bytes(),
            format!("x\n{}\n{}\n{}\n", lines[1], lines[2], lines[3]).into_bytes(),
            format!("{}\n{}\nx\n{}\n", lines[0], lines[1], lines[3]).into_bytes(),
        ];
        // Every truncation and every single-byte change of a good signature.
        for cut in 0..good.len() {
            candidates.push(good.as_bytes()[..cut].to_vec());
        }
        for at in 0..good.len() {
            for byte in [b'A', b'=', b'\n', b' ', 0u8, 0xC3] {
                let mut bytes = good.clone().into_bytes();
                bytes[at] = byte;
                candidates.push(bytes);
            }
        }
        for candidate in candidates {
            if candidate == good.as_bytes() {
                continue;
            }
            // What may still verify: a change to the untrusted comment (it is not signed),
            // whitespace minisign trims, or base64 that decodes to the same bytes.
            if verify.verify(b"data", &candidate).is_ok() {
                let text = String::from_utf8(candidate).unwrap();
                let got: Vec<&str> = text.lines().map(str::trim).collect();
                assert_eq!(
                    b64::decode(got[1]),
                    b64::decode(lines[1]),
                    "accepted {text:?}"
                );
                assert_eq!(got[2], lines[2], "accepted {text:?}");
                assert_eq!(
                    b64::decode(got[3]),
                    b64::decode(lines[3]),
                    "accepted {text:?}"
                );
            }
        }
        assert!(verify.verify(b"data", good.as_bytes()).is_ok());
    }

    #[test]
    fn keys_parse_from_the_key_alone_or_a_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let keys = generate_key_pair(dir.path()).unwrap();
        let file_text = std::fs::read_to_string(&keys.public_key_file).unwrap();
        let alone = keys.verify_key.to_base64();
        assert!(VerifyKey::looks_like_key(&alone));
        assert!(!VerifyKey::looks_like_key("keys/coffer.pub"));
        assert_eq!(VerifyKey::parse(&file_text).unwrap(), keys.verify_key);
        assert_eq!(VerifyKey::parse(&alone).unwrap(), keys.verify_key);
        assert_eq!(
            VerifyKey::from_file(&keys.public_key_file).unwrap(),
            keys.verify_key
        );
        for bad in [
            "",
            "RW",
            "not a key",
            &alone[..50],
            &format!("{alone}\n{alone}"),
        ] {
            assert!(VerifyKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        // The secret key file is not a public key, and the public key file is not a secret key.
        let secret_text = std::fs::read_to_string(&keys.secret_key_file).unwrap();
        assert!(VerifyKey::parse(&secret_text).is_err());
        assert!(SigningKey::from_text(&file_text).is_err());
        assert!(SigningKey::from_text("").is_err());
        assert!(SigningKey::from_text("untrusted comment: x\nAAAA\n").is_err());
        // `minisign -G -W` leaves the checksum zero: accepted. A damaged key is not.
        let raw = b64::decode(secret_text.lines().nth(1).unwrap());
        let mut unchecked = raw.clone();
        unchecked[126..].fill(0);
        let zero_checksum = SigningKey::from_text(&b64::encode(&unchecked)).unwrap();
        assert_eq!(zero_checksum.verify_key(), keys.verify_key);
        let mut damaged = raw.clone();
        damaged[70] ^= 1;
        let err = SigningKey::from_text(&b64::encode(&damaged)).unwrap_err();
        assert!(err.to_string().contains("self-test"), "{err}");
        let mut encrypted = raw.clone();
        encrypted[2..4].copy_from_slice(b"Sc");
        let err = SigningKey::from_text(&b64::encode(&encrypted)).unwrap_err();
        assert!(err.to_string().contains("password"), "{err}");
        let signing = SigningKey::from_text(&secret_text).unwrap();
        assert_eq!(signing.verify_key(), keys.verify_key);
        assert!(!format!("{signing:?}").contains(secret_text.lines().nth(1).unwrap()));
    }

    #[test]
    fn the_config_reads_both_halves_and_refuses_halves_of_different_pairs() {
        use crate::config::Config;
        let dir = tempfile::tempdir().unwrap();
        let ours = generate_key_pair(&dir.path().join("keys")).unwrap();
        let theirs = generate_key_pair(&dir.path().join("other")).unwrap();
        let no_env = |_: &str| None;
        let load = |repository: &str| {
            let path = dir.path().join("coffer.toml");
            std::fs::write(&path, format!("[repository]\nurl = \"repo\"\n{repository}")).unwrap();
            Config::load(&path, &no_env)
        };
        let config =
            load("signing_key_file = \"keys/coffer.key\"\nverify_key = \"keys/coffer.pub\"\n")
                .unwrap();
        let repository = &config.repository;
        assert_eq!(repository.verify_key.as_ref(), Some(&ours.verify_key));
        assert_eq!(
            repository.signing_key.as_ref().map(SigningKey::verify_key),
            Some(ours.verify_key.clone())
        );
        assert!(
            !format!("{config:?}").contains(
                std::fs::read_to_string(&ours.secret_key_file)
                    .unwrap()
                    .lines()
                    .nth(1)
                    .unwrap()
            )
        );
        // The key itself instead of a path; and the environment wins over the file.
        let inline = load(&format!(
            "verify_key = \"{}\"\n",
            ours.verify_key.to_base64()
        ))
        .unwrap();
        assert_eq!(inline.repository.verify_key, Some(ours.verify_key.clone()));
        let theirs_b64 = theirs.verify_key.to_base64();
        let env = |name: &str| (name == "COFFER_REPOSITORY_VERIFY_KEY").then(|| theirs_b64.clone());
        let path = dir.path().join("coffer.toml");
        let overridden = Config::load(&path, &env).unwrap();
        assert_eq!(
            overridden.repository.verify_key,
            Some(theirs.verify_key.clone())
        );
        // Neither: nothing signed, nothing checked.
        let none = load("").unwrap();
        assert!(none.repository.signing_key.is_none() && none.repository.verify_key.is_none());

        for (text, key, says) in [
            (
                "signing_key_file = \"keys/coffer.key\"\nverify_key = \"other/coffer.pub\"\n",
                "repository.verify_key",
                "not the public half",
            ),
            (
                "verify_key = \"keys/missing.pub\"\n",
                "repository.verify_key",
                "cannot read",
            ),
            (
                "verify_key = \"keys/coffer.key\"\n",
                "repository.verify_key",
                "public key",
            ),
            (
                "signing_key_file = \"keys/coffer.pub\"\n",
                "repository.signing_key_file",
                "secret key",
            ),
            (
                "signing_key_file = \"keys/none\"\n",
                "repository.signing_key_file",
                "cannot read",
            ),
        ] {
            let err = load(text).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{text}");
            let message = err.to_string();
            assert!(
                message.contains(key) && message.contains(says),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn generate_writes_a_private_secret_key_and_never_replaces_one() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("new/keys");
        let keys = generate_key_pair(&target).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys.secret_key_file), 0o600);
        assert_eq!(mode(&keys.public_key_file), 0o644);
        assert_eq!(mode(&target), 0o700);
        let secret = std::fs::read(&keys.secret_key_file).unwrap();
        let err = generate_key_pair(&target).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&keys.secret_key_file).unwrap(), secret);
        // Only the public half left: still refused, and the secret is not written.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(PUBLIC_KEY_FILE), "x").unwrap();
        assert!(generate_key_pair(&other).is_err());
        assert!(!other.join(SECRET_KEY_FILE).exists());
    }
}

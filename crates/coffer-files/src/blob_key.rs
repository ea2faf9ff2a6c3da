//! One age header for many blobs: the **blob key** of a run.
//!
//! An age file is a header (the file key wrapped to each recipient, and a MAC) followed by a
//! 16-byte nonce and the payload, encrypted with STREAM (ChaCha20-Poly1305 in 64 KiB chunks)
//! under a key derived from the file key and that nonce. Encrypting every blob as a file of its
//! own costs a header (about 170 bytes) and an X25519 exchange per blob: on a tree of small files,
//! more than the blob itself, and a tenth of a backup's CPU.
//!
//! So a run makes one file key and one header ([`BlobKey::generate`]), writes the header once at
//! the start of each pack it fills, and stores each blob as a nonce of its own followed by its
//! STREAM payload ([`BlobKey::seal`]). The header followed by a blob is byte for byte an age file:
//! `cat header blob | age -d` decrypts it by hand (`docs/FORMAT.md`, *Blobs*). Reading unwraps
//! the file key once per header ([`BlobKey::open`]) and then decrypts any blob under it
//! ([`BlobKey::unseal`]).
//!
//! Reusing a file key across payloads is safe for the same reason it is within one age file:
//! each payload key is HKDF-SHA256 of the file key and a fresh random 128-bit nonce, so no two
//! blobs are encrypted under the same ChaCha20-Poly1305 key. The header is built and checked
//! with age's own pieces: the recipient wraps the file key ([`age::Recipient::wrap_file_key`]),
//! the identity unwraps it ([`age::Identity::unwrap_stanzas`]), `age-core` parses the stanzas and
//! derives the keys. What is written here is the framing around them, which the tests check
//! against the age crate's own decryptor.

use std::io::Write as _;

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza};
use age_core::primitives::hkdf;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Tag};
use coffer_core::error::{Error, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The first line of every age header.
const VERSION_LINE: &[u8] = b"age-encryption.org/v1\n";
/// How the MAC line begins.
const MAC_PREFIX: &[u8] = b"---";
/// Bytes of the nonce each blob starts with.
pub const NONCE_SIZE: usize = 16;
/// Plain bytes per STREAM chunk.
const CHUNK: usize = 64 * 1024;
/// Bytes of a ChaCha20-Poly1305 tag.
const TAG_SIZE: usize = 16;
/// The longest header read back: a header coffer writes (one X25519 stanza) is about 170 bytes;
/// anything this long is not one of ours.
pub const MAX_HEADER: usize = 4096;

/// A run's file key and the age header that wraps it to the repository's recipient.
pub struct BlobKey {
    file_key: FileKey,
    header: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The file key decrypts every blob of the run: never printed.
        f.debug_struct("BlobKey")
            .field("header_len", &self.header.len())
            .finish_non_exhaustive()
    }
}

impl BlobKey {
    /// A new random file key, wrapped to `recipient` in a new age header.
    pub fn generate(recipient: &age::x25519::Recipient) -> Result<Self> {
        let file_key = FileKey::try_init_with_mut(|key| getrandom::getrandom(key))
            .map_err(|e| Error::other(format!("making a blob key: the random source: {e}")))?;
        let (stanzas, _labels) = age::Recipient::wrap_file_key(recipient, &file_key)
            .map_err(|e| Error::other(format!("making a blob key: {e}")))?;
        let mut header = Vec::with_capacity(256);
        header.extend_from_slice(VERSION_LINE);
        for stanza in &stanzas {
            write_stanza(&mut header, stanza);
        }
        header.extend_from_slice(MAC_PREFIX);
        let mac = header_mac(&file_key, &header).finalize().into_bytes();
        header.push(b' ');
        header.extend_from_slice(STANDARD_NO_PAD.encode(mac).as_bytes());
        header.push(b'\n');
        Ok(Self {
            file_key,
            header: header.into(),
        })
    }

    /// Reads the file key out of `header` with `identity`: the header must be a whole age v1
    /// header (nothing after its MAC line), one of its stanzas must open with `identity`, and its
    /// MAC must hold. `what` names where the header comes from in errors.
    pub fn open(header: &[u8], identity: &age::x25519::Identity, what: &str) -> Result<Self> {
        let damaged =
            |why: &str| Error::integrity(format!("{what}: the age header is damaged: {why}"));
        let (stanzas, mac_at, mac_text) = parse_header(header).map_err(damaged)?;
        let file_key = match age::Identity::unwrap_stanzas(identity, &stanzas) {
            Some(Ok(key)) => key,
            Some(Err(e)) => return Err(damaged(&e.to_string())),
            None => {
                return Err(Error::integrity(format!(
                    "{what}: the age identity given is not the one its blobs are encrypted to"
                )));
            }
        };
        let mac = STANDARD_NO_PAD
            .decode(mac_text)
            .map_err(|_| damaged("its MAC is not base64"))?;
        header_mac(&file_key, &header[..mac_at])
            .verify_slice(&mac)
            .map_err(|_| damaged("its MAC does not match"))?;
        Ok(Self {
            file_key,
            header: header.into(),
        })
    }

    /// The age header, as stored at the start of each pack of the run.
    pub fn header(&self) -> &std::sync::Arc<[u8]> {
        &self.header
    }

    /// Encrypts `plain` as one blob: a random nonce, then the STREAM payload.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_SIZE];
        getrandom::getrandom(&mut nonce)
            .map_err(|e| Error::other(format!("encrypting a chunk: the random source: {e}")))?;
        let chunks = plain.len().div_ceil(CHUNK).max(1);
        let mut out = Vec::with_capacity(NONCE_SIZE + plain.len() + chunks * TAG_SIZE);
        out.extend_from_slice(&nonce);
        let aead = self.payload_cipher(&nonce);
        for (n, chunk) in split(plain).enumerate() {
            let last = n + 1 == chunks;
            let start = out.len();
            out.extend_from_slice(chunk);
            let tag = aead
                .encrypt_in_place_detached(&stream_nonce(n as u64, last), &[], &mut out[start..])
                .map_err(|_| Error::other("encrypting a chunk: too long for one payload"))?;
            out.extend_from_slice(&tag);
        }
        Ok(out)
    }

    /// Decrypts a blob made by [`BlobKey::seal`] under this key. Anything that does not
    /// authenticate (a flipped byte, a cut, a blob of another key) is an integrity error naming
    /// `what`.
    pub fn unseal(&self, blob: &[u8], what: &dyn std::fmt::Display) -> Result<Vec<u8>> {
        let damaged = |why: &str| Error::integrity(format!("{what}: cannot decrypt: {why}"));
        let Some((nonce, mut rest)) = blob.split_first_chunk::<NONCE_SIZE>() else {
            return Err(damaged("shorter than a nonce"));
        };
        let aead = self.payload_cipher(nonce);
        let mut plain = Vec::with_capacity(rest.len());
        let mut n = 0u64;
        loop {
            // Every chunk but the last holds exactly CHUNK plain bytes; the last holds the rest,
            // and is empty only when the whole payload is.
            let last = rest.len() <= CHUNK + TAG_SIZE;
            let take = rest.len().min(CHUNK + TAG_SIZE);
            if take < TAG_SIZE || (last && n > 0 && take == TAG_SIZE) {
                return Err(damaged("the payload is cut short"));
            }
            let (sealed, after) = rest.split_at(take);
            let (text, tag) = sealed.split_at(take - TAG_SIZE);
            let start = plain.len();
            plain.extend_from_slice(text);
            aead.decrypt_in_place_detached(
                &stream_nonce(n, last),
                &[],
                &mut plain[start..],
                Tag::from_slice(tag),
            )
            .map_err(|_| damaged("a chunk does not authenticate (damaged, or another key's)"))?;
            if last {
                return Ok(plain);
            }
            rest = after;
            n += 1;
        }
    }

    fn payload_cipher(&self, nonce: &[u8; NONCE_SIZE]) -> ChaCha20Poly1305 {
        let key = hkdf(nonce, b"payload", self.file_key.expose_secret());
        ChaCha20Poly1305::new(&key.into())
    }
}

/// The plain payload cut into STREAM chunks: at least one, possibly empty.
fn split(plain: &[u8]) -> impl Iterator<Item = &[u8]> {
    let empty: &[u8] = &[];
    let none = plain.is_empty().then_some(empty);
    plain.chunks(CHUNK).chain(none)
}

/// STREAM's nonce: an 11-byte big-endian counter and a last-chunk flag.
fn stream_nonce(counter: u64, last: bool) -> chacha20poly1305::Nonce {
    let mut nonce = [0u8; 12];
    nonce[3..11].copy_from_slice(&counter.to_be_bytes());
    nonce[11] = u8::from(last);
    nonce.into()
}

/// HMAC-SHA256 under the header key, fed `header` (everything up to and including `---`).
fn header_mac(file_key: &FileKey, header: &[u8]) -> Hmac<Sha256> {
    let key = hkdf(&[], b"header", file_key.expose_secret());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(header);
    mac
}

/// Writes one stanza: `-> TAG ARGS…`, then its body in base64 without padding, 64 columns a
/// line, the last line shorter than 64 (empty when the body fills whole lines).
fn write_stanza(out: &mut Vec<u8>, stanza: &Stanza) {
    let _ = write!(out, "-> {}", stanza.tag);
    for arg in &stanza.args {
        let _ = write!(out, " {arg}");
    }
    out.push(b'\n');
    let body = STANDARD_NO_PAD.encode(&stanza.body);
    let mut lines = body.as_bytes().chunks(64).peekable();
    let mut last_full = body.is_empty();
    while let Some(line) = lines.next() {
        out.extend_from_slice(line);
        out.push(b'\n');
        last_full = lines.peek().is_none() && line.len() == 64;
    }
    if last_full {
        out.push(b'\n');
    }
}

/// Splits a header into its stanzas, where its MAC line starts, and the MAC's base64 text.
fn parse_header(header: &[u8]) -> std::result::Result<(Vec<Stanza>, usize, &[u8]), &'static str> {
    if header.len() > MAX_HEADER {
        return Err("longer than any header coffer writes");
    }
    let mut rest = header
        .strip_prefix(VERSION_LINE)
        .ok_or("it does not begin with the age v1 line")?;
    let mut stanzas = Vec::new();
    while rest.starts_with(b"-> ") {
        match age_core::format::read::age_stanza(rest) {
            Ok((after, stanza)) => {
                stanzas.push(Stanza::from(stanza));
                rest = after;
            }
            Err(_) => return Err("a recipient stanza does not parse"),
        }
    }
    let mac_at = header.len() - rest.len() + MAC_PREFIX.len();
    let line = rest
        .strip_prefix(b"--- ")
        .ok_or("no MAC line after the stanzas")?;
    let mac = line
        .strip_suffix(b"\n")
        .ok_or("the MAC line does not end the header")?;
    if stanzas.is_empty() || mac.len() != 43 || mac.contains(&b'\n') {
        return Err("no stanza, or a MAC of the wrong length");
    }
    Ok((stanzas, mac_at, mac))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::error::ErrorKind;
    use proptest::prelude::*;
    use std::io::Read as _;

    fn pair() -> (age::x25519::Identity, BlobKey) {
        let identity = age::x25519::Identity::generate();
        let key = BlobKey::generate(&identity.to_public()).unwrap();
        (identity, key)
    }

    /// What `cat header blob | age -d` does, with the age crate.
    fn age_decrypt(header: &[u8], blob: &[u8], identity: &age::x25519::Identity) -> Vec<u8> {
        let file = [header, blob].concat();
        let decryptor = age::Decryptor::new(&file[..]).unwrap();
        let mut plain = Vec::new();
        decryptor
            .decrypt(std::iter::once(identity as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        plain
    }

    #[test]
    fn the_header_and_a_blob_are_an_age_file_that_age_itself_decrypts() {
        let (identity, key) = pair();
        for len in [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 200_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let blob = key.seal(&plain).unwrap();
            assert_eq!(blob.len(), seal_len(len), "length {len}");
            assert_eq!(age_decrypt(key.header(), &blob, &identity), plain, "{len}");
        }
    }

    fn seal_len(len: usize) -> usize {
        NONCE_SIZE + len + len.div_ceil(CHUNK).max(1) * TAG_SIZE
    }

    #[test]
    fn a_blob_costs_its_nonce_and_one_tag_per_64_kib_and_the_header_is_stored_once() {
        let (_, key) = pair();
        assert_eq!(key.seal(b"invoice").unwrap().len(), 7 + 32);
        assert!(
            (150..=200).contains(&key.header().len()),
            "{}",
            key.header().len()
        );
    }

    #[test]
    fn age_encrypted_files_open_with_their_header_and_decrypt_blob_by_blob() {
        // A file the age crate wrote: its header opens, and its payload is a blob.
        let identity = age::x25519::Identity::generate();
        let plain = b"avatar bytes ".repeat(10_000);
        let encryptor = age::Encryptor::with_recipients(std::iter::once(
            &identity.to_public() as &dyn age::Recipient
        ))
        .unwrap();
        let mut file = Vec::new();
        let mut writer = encryptor.wrap_output(&mut file).unwrap();
        writer.write_all(&plain).unwrap();
        writer.finish().unwrap();
        let header_end = file.windows(4).position(|w| w == b"--- ").unwrap();
        let header_end = header_end + file[header_end..].iter().position(|&b| b == b'\n').unwrap();
        let (header, blob) = file.split_at(header_end + 1);
        let key = BlobKey::open(header, &identity, "pack p").unwrap();
        assert_eq!(key.unseal(blob, &"chunk c").unwrap(), plain);
    }

    #[test]
    fn our_header_opens_again_and_many_blobs_share_it() {
        let (identity, key) = pair();
        let opened = BlobKey::open(key.header(), &identity, "pack p").unwrap();
        let a = key.seal(b"first").unwrap();
        let b = key.seal(b"first").unwrap();
        assert_ne!(a, b, "each blob has its own nonce");
        assert_eq!(opened.unseal(&a, &"a").unwrap(), b"first");
        assert_eq!(opened.unseal(&b, &"b").unwrap(), b"first");
    }

    #[test]
    fn another_identity_or_a_damaged_header_is_refused() {
        let (_, key) = pair();
        let other = age::x25519::Identity::generate();
        let err = BlobKey::open(key.header(), &other, "pack p").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert!(err.to_string().contains("pack p"), "{err}");

        let (identity, key) = pair();
        let header = key.header().to_vec();
        for at in 0..header.len() {
            let mut bad = header.clone();
            bad[at] ^= 0x01;
            let err = BlobKey::open(&bad, &identity, "pack p").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Integrity, "byte {at}: {err}");
        }
        let mut longer = header.clone();
        longer.push(b'x');
        assert!(BlobKey::open(&longer, &identity, "p").is_err());
        assert!(BlobKey::open(&header[..header.len() - 1], &identity, "p").is_err());
        assert!(BlobKey::open(b"", &identity, "p").is_err());
    }

    #[test]
    fn a_flipped_cut_or_foreign_blob_does_not_decrypt() {
        let (_, key) = pair();
        let (_, other) = pair();
        let plain: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
        let blob = key.seal(&plain).unwrap();
        for at in [0, NONCE_SIZE, blob.len() / 2, blob.len() - 1] {
            let mut bad = blob.clone();
            bad[at] ^= 0x80;
            let err = key.unseal(&bad, &"chunk c").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Integrity);
            assert!(err.to_string().contains("chunk c"), "{err}");
        }
        // Cut at a chunk boundary: the last chunk left is not marked last.
        let cut = NONCE_SIZE + CHUNK + TAG_SIZE;
        assert!(key.unseal(&blob[..cut], &"c").is_err());
        assert!(key.unseal(&blob[..blob.len() - 1], &"c").is_err());
        assert!(key.unseal(&blob[..5], &"c").is_err());
        assert!(other.unseal(&blob, &"c").is_err());
        // A payload of whole chunks ends with a full chunk marked last.
        let full = key.seal(&plain[..2 * CHUNK]).unwrap();
        assert_eq!(key.unseal(&full, &"c").unwrap(), &plain[..2 * CHUNK]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn blobs_round_trip_through_our_reader_and_age(plain in proptest::collection::vec(any::<u8>(), 0..140_000)) {
            let (identity, key) = pair();
            let blob = key.seal(&plain).unwrap();
            prop_assert_eq!(&key.unseal(&blob, &"c").unwrap(), &plain);
            prop_assert_eq!(age_decrypt(key.header(), &blob, &identity), plain);
        }
    }
}

//! One chunk as stored: a **blob**.
//!
//! A blob is the chunk's plain bytes compressed into one zstd frame, then, when the repository
//! has an age recipient, that frame sealed under the run's [`BlobKey`]: a 16-byte nonce and the
//! age STREAM payload, whose age header is stored once at the start of the pack
//! ([`crate::blob_key`]). Each blob still stands alone given its pack's header, so a restore can
//! fetch one by a range read and decode it without its neighbours.
//!
//! Packs written before 2026-12-08 hold no header: their encrypted blobs are each a whole age file
//! (about 200 bytes of overhead a blob), which [`decode`] still reads ([`Sealing::Standalone`]).
//!
//! Decoding trusts nothing: the plain bytes must come out no longer than
//! [`MAX_SIZE`](crate::chunker::MAX_SIZE) and must hash (under the chunk-id key) to the id the
//! blob was asked for, so a corrupted blob, or a blob swapped for another, is an integrity error
//! naming the chunk.

use std::io::Read;

use coffer_core::error::{Error, Result};

use crate::blob_key::BlobKey;
use crate::chunk_id::{ChunkId, ChunkIdKey};
use crate::chunker::MAX_SIZE;

/// The zstd level blobs are written with (zstd's default).
pub const ZSTD_LEVEL: i32 = 3;
/// How an age file begins; a blob of a pack without a header that begins otherwise is a bare
/// zstd frame.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Encodes a chunk's plain bytes: zstd, then sealed under `key` when there is one.
pub fn encode(plain: &[u8], key: Option<&BlobKey>) -> Result<Vec<u8>> {
    let compressed = with_compressor(|compressor| compressor.compress(plain))
        .map_err(|e| Error::other(format!("compressing a chunk: {e}")))?;
    match key {
        Some(key) => key.seal(&compressed),
        None => Ok(compressed),
    }
}

/// How the blobs of one pack are encrypted, as its header says.
#[derive(Clone, Copy)]
pub enum Sealing<'a> {
    /// The pack has no age header: each blob is a bare zstd frame or a whole age file, which
    /// needs this identity.
    Standalone(Option<&'a age::x25519::Identity>),
    /// The pack starts with an age header: each blob is sealed under its key.
    Sealed(&'a BlobKey),
}

impl std::fmt::Debug for Sealing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the identity nor the key is ever printed.
        match self {
            Self::Standalone(identity) => write!(f, "Standalone(identity: {})", identity.is_some()),
            Self::Sealed(_) => f.write_str("Sealed"),
        }
    }
}

/// Compression contexts not in use. A context costs more to make than compressing a small
/// chunk, and holds a few MiB once it has compressed a large one: one per encoding running at
/// once is kept, not one per thread of the blocking pool (which grows to dozens while a backup
/// reads small files).
static COMPRESSORS: std::sync::Mutex<Vec<zstd::bulk::Compressor<'static>>> =
    std::sync::Mutex::new(Vec::new());

fn with_compressor<T>(
    work: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let idle = COMPRESSORS.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut compressor = match idle {
        Some(compressor) => compressor,
        None => zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
    };
    let result = work(&mut compressor);
    COMPRESSORS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(compressor);
    result
}

/// Whether a blob of a pack without a header is a whole age file.
pub fn is_encrypted(blob: &[u8]) -> bool {
    blob.starts_with(AGE_MAGIC)
}

/// Decodes the blob of chunk `id` and checks that its plain bytes are that chunk's.
///
/// An encrypted blob of a pack without a header needs an identity (a configuration error
/// without one). Anything that does not decrypt, decompress, fit in [`MAX_SIZE`] or hash to `id`
/// is an integrity error naming the chunk.
pub fn decode(
    id: &ChunkId,
    blob: &[u8],
    key: &ChunkIdKey,
    sealing: Sealing<'_>,
) -> Result<Vec<u8>> {
    decode_with_capacity(id, blob, key, sealing, 0)
}

/// [`decode`] into a buffer made for `expected` plain bytes (the length the index records), so
/// a large chunk is not grown by doubling. The hint is capped at [`MAX_SIZE`] and checks
/// nothing: a blob that decodes to another length is caught by its id.
pub fn decode_with_capacity(
    id: &ChunkId,
    blob: &[u8],
    key: &ChunkIdKey,
    sealing: Sealing<'_>,
    expected: usize,
) -> Result<Vec<u8>> {
    let damaged = |what: &dyn std::fmt::Display| {
        Error::integrity(format!("chunk {id}: the blob is damaged: {what}"))
    };
    let opened;
    let compressed: Box<dyn Read + '_> = match sealing {
        Sealing::Sealed(blob_key) => {
            opened = blob_key.unseal(blob, &format_args!("chunk {id}"))?;
            Box::new(&opened[..])
        }
        Sealing::Standalone(identity) if is_encrypted(blob) => {
            let Some(identity) = identity else {
                return Err(Error::config(format!(
                    "chunk {id} is encrypted: an age identity (private key) is needed to read it"
                )));
            };
            let decryptor = age::Decryptor::new(blob).map_err(|e| damaged(&e))?;
            Box::new(
                decryptor
                    .decrypt(std::iter::once(identity as &dyn age::Identity))
                    .map_err(|e| {
                        Error::integrity(format!("chunk {id}: cannot decrypt the blob: {e}"))
                    })?,
            )
        }
        Sealing::Standalone(_) => Box::new(blob),
    };
    let mut plain = Vec::with_capacity(expected.min(MAX_SIZE));
    zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| damaged(&e))?
        .take(MAX_SIZE as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| damaged(&e))?;
    if plain.len() > MAX_SIZE {
        return Err(damaged(&format_args!(
            "it decodes to more than {MAX_SIZE} bytes"
        )));
    }
    if key.id(&plain) != *id {
        return Err(Error::integrity(format!(
            "chunk {id}: the blob decodes to other bytes than the chunk's (damaged or swapped)"
        )));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::error::ErrorKind;
    use proptest::prelude::*;
    use std::io::Write as _;

    fn key() -> ChunkIdKey {
        ChunkIdKey::from_bytes([42; 32])
    }

    /// A blob as packs without a header hold it: the zstd frame as one whole age file.
    fn standalone_age_blob(plain: &[u8], recipient: &age::x25519::Recipient) -> Vec<u8> {
        let compressed = encode(plain, None).unwrap();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        writer.write_all(&compressed).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn a_plain_blob_is_a_zstd_frame_anyone_can_decompress() {
        let plain = b"invoice 2026-001 ".repeat(1000);
        let blob = encode(&plain, None).unwrap();
        assert!(!is_encrypted(&blob));
        assert!(blob.len() < plain.len() / 10);
        assert_eq!(zstd::decode_all(&blob[..]).unwrap(), plain);
        assert_eq!(
            decode(&key().id(&plain), &blob, &key(), Sealing::Standalone(None)).unwrap(),
            plain
        );
    }

    #[test]
    fn a_sealed_blob_needs_its_packs_key_and_costs_32_bytes_over_its_frame() {
        let identity = age::x25519::Identity::generate();
        let blob_key = BlobKey::generate(&identity.to_public()).unwrap();
        let plain = b"avatar bytes".to_vec();
        let blob = encode(&plain, Some(&blob_key)).unwrap();
        assert_eq!(blob.len(), encode(&plain, None).unwrap().len() + 32);
        let id = key().id(&plain);
        let err = decode(&id, &blob, &key(), Sealing::Standalone(Some(&identity))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "not a zstd frame: {err}");
        let other = BlobKey::generate(&identity.to_public()).unwrap();
        let err = decode(&id, &blob, &key(), Sealing::Sealed(&other)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert!(err.to_string().contains(&id.to_hex()), "{err}");
        assert_eq!(
            decode(&id, &blob, &key(), Sealing::Sealed(&blob_key)).unwrap(),
            plain
        );
    }

    #[test]
    fn a_whole_age_file_blob_of_an_older_pack_still_reads_with_the_identity() {
        let identity = age::x25519::Identity::generate();
        let plain = b"avatar bytes".to_vec();
        let blob = standalone_age_blob(&plain, &identity.to_public());
        assert!(is_encrypted(&blob));
        let id = key().id(&plain);
        let err = decode(&id, &blob, &key(), Sealing::Standalone(None)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let other = age::x25519::Identity::generate();
        let err = decode(&id, &blob, &key(), Sealing::Standalone(Some(&other))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert_eq!(
            decode(&id, &blob, &key(), Sealing::Standalone(Some(&identity))).unwrap(),
            plain
        );
    }

    #[test]
    fn a_swapped_blob_is_an_integrity_error_naming_the_chunk() {
        let a = encode(b"chunk a", None).unwrap();
        let id_b = key().id(b"chunk b");
        let err = decode(&id_b, &a, &key(), Sealing::Standalone(None)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert!(err.to_string().contains(&id_b.to_hex()), "{err}");
    }

    #[test]
    fn a_flipped_byte_is_found_plain_sealed_or_in_a_whole_age_file() {
        let identity = age::x25519::Identity::generate();
        let blob_key = BlobKey::generate(&identity.to_public()).unwrap();
        let plain: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i * 7).to_le_bytes())
            .collect();
        let id = key().id(&plain);
        let cases = [
            (encode(&plain, None).unwrap(), Sealing::Standalone(None)),
            (
                encode(&plain, Some(&blob_key)).unwrap(),
                Sealing::Sealed(&blob_key),
            ),
            (
                standalone_age_blob(&plain, &identity.to_public()),
                Sealing::Standalone(Some(&identity)),
            ),
        ];
        for (blob, sealing) in cases {
            for at in [0, blob.len() / 2, blob.len() - 1] {
                let mut bad = blob.clone();
                bad[at] ^= 0x01;
                let err = decode(&id, &bad, &key(), sealing).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
            }
        }
    }

    #[test]
    fn a_blob_that_inflates_past_the_maximum_chunk_is_refused() {
        let huge = vec![0u8; MAX_SIZE + 1];
        let blob = encode(&huge, None).unwrap();
        let err = decode(&key().id(&huge), &blob, &key(), Sealing::Standalone(None)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn blobs_round_trip(plain in proptest::collection::vec(any::<u8>(), 0..20_000), encrypt in any::<bool>()) {
            let identity = age::x25519::Identity::generate();
            let blob_key = encrypt.then(|| BlobKey::generate(&identity.to_public()).unwrap());
            let blob = encode(&plain, blob_key.as_ref()).unwrap();
            let sealing = match &blob_key {
                Some(k) => Sealing::Sealed(k),
                None => Sealing::Standalone(None),
            };
            let id = key().id(&plain);
            prop_assert_eq!(decode(&id, &blob, &key(), sealing).unwrap(), plain);
        }
    }
}

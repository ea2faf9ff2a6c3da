//! One chunk as stored: a **blob**.
//!
//! A blob is the chunk's plain bytes compressed into one zstd frame, then, when the repository
//! has an age recipient, that frame encrypted as one age file (binary, X25519). Each blob stands
//! alone, so a restore can fetch one by a range read and decode it without its neighbours. age
//! costs about 200 bytes per blob (its header and one tag per 64 KiB).
//!
//! Decoding trusts nothing: the plain bytes must come out no longer than
//! [`MAX_SIZE`](crate::chunker::MAX_SIZE) and must hash (under the chunk-id key) to the id the
//! blob was asked for, so a corrupted blob, or a blob swapped for another, is an integrity error
//! naming the chunk.

use std::io::{Read, Write};

use coffer_core::error::{Error, Result};

use crate::chunk_id::{ChunkId, ChunkIdKey};
use crate::chunker::MAX_SIZE;

/// The zstd level blobs are written with (zstd's default).
pub const ZSTD_LEVEL: i32 = 3;
/// How an age file begins; a blob that begins otherwise is a bare zstd frame.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Encodes a chunk's plain bytes: zstd, then age to `recipient` when there is one.
pub fn encode(plain: &[u8], recipient: Option<&age::x25519::Recipient>) -> Result<Vec<u8>> {
    let compressed = with_compressor(|compressor| compressor.compress(plain))
        .map_err(|e| Error::other(format!("compressing a chunk: {e}")))?;
    let Some(recipient) = recipient else {
        return Ok(compressed);
    };
    let fail = |e: &dyn std::fmt::Display| Error::other(format!("encrypting a chunk: {e}"));
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .map_err(|e| fail(&e))?;
    let mut out = Vec::with_capacity(compressed.len() + 256);
    let mut writer = encryptor.wrap_output(&mut out).map_err(|e| fail(&e))?;
    writer.write_all(&compressed).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))?;
    Ok(out)
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

/// Whether a blob is age-encrypted.
pub fn is_encrypted(blob: &[u8]) -> bool {
    blob.starts_with(AGE_MAGIC)
}

/// Decodes the blob of chunk `id` and checks that its plain bytes are that chunk's.
///
/// An encrypted blob needs `identity` (a configuration error without one). Anything that does
/// not decrypt, decompress, fit in [`MAX_SIZE`] or hash to `id` is an integrity error naming the
/// chunk.
pub fn decode(
    id: &ChunkId,
    blob: &[u8],
    key: &ChunkIdKey,
    identity: Option<&age::x25519::Identity>,
) -> Result<Vec<u8>> {
    decode_with_capacity(id, blob, key, identity, 0)
}

/// [`decode`] into a buffer made for `expected` plain bytes (the length the index records), so
/// a large chunk is not grown by doubling. The hint is capped at [`MAX_SIZE`] and checks
/// nothing: a blob that decodes to another length is caught by its id.
pub fn decode_with_capacity(
    id: &ChunkId,
    blob: &[u8],
    key: &ChunkIdKey,
    identity: Option<&age::x25519::Identity>,
    expected: usize,
) -> Result<Vec<u8>> {
    let damaged = |what: &dyn std::fmt::Display| {
        Error::integrity(format!("chunk {id}: the blob is damaged: {what}"))
    };
    let compressed: Box<dyn Read + '_> = if is_encrypted(blob) {
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
    } else {
        Box::new(blob)
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

    fn key() -> ChunkIdKey {
        ChunkIdKey::from_bytes([42; 32])
    }

    #[test]
    fn a_plain_blob_is_a_zstd_frame_anyone_can_decompress() {
        let plain = b"invoice 2026-001 ".repeat(1000);
        let blob = encode(&plain, None).unwrap();
        assert!(!is_encrypted(&blob));
        assert!(blob.len() < plain.len() / 10);
        assert_eq!(zstd::decode_all(&blob[..]).unwrap(), plain);
        assert_eq!(
            decode(&key().id(&plain), &blob, &key(), None).unwrap(),
            plain
        );
    }

    #[test]
    fn an_encrypted_blob_needs_the_identity() {
        let identity = age::x25519::Identity::generate();
        let plain = b"avatar bytes".to_vec();
        let blob = encode(&plain, Some(&identity.to_public())).unwrap();
        assert!(is_encrypted(&blob));
        let id = key().id(&plain);
        let err = decode(&id, &blob, &key(), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let other = age::x25519::Identity::generate();
        let err = decode(&id, &blob, &key(), Some(&other)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert_eq!(decode(&id, &blob, &key(), Some(&identity)).unwrap(), plain);
    }

    #[test]
    fn a_swapped_blob_is_an_integrity_error_naming_the_chunk() {
        let a = encode(b"chunk a", None).unwrap();
        let id_b = key().id(b"chunk b");
        let err = decode(&id_b, &a, &key(), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert!(err.to_string().contains(&id_b.to_hex()), "{err}");
    }

    #[test]
    fn a_flipped_byte_is_found_plain_or_encrypted() {
        let identity = age::x25519::Identity::generate();
        let plain: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i * 7).to_le_bytes())
            .collect();
        let id = key().id(&plain);
        for recipient in [None, Some(identity.to_public())] {
            let blob = encode(&plain, recipient.as_ref()).unwrap();
            for at in [0, blob.len() / 2, blob.len() - 1] {
                let mut bad = blob.clone();
                bad[at] ^= 0x01;
                let err = decode(&id, &bad, &key(), Some(&identity)).unwrap_err();
                assert!(
                    matches!(err.kind(), ErrorKind::Integrity | ErrorKind::Config),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn a_blob_that_inflates_past_the_maximum_chunk_is_refused() {
        let huge = vec![0u8; MAX_SIZE + 1];
        let blob = encode(&huge, None).unwrap();
        let err = decode(&key().id(&huge), &blob, &key(), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn blobs_round_trip(plain in proptest::collection::vec(any::<u8>(), 0..20_000), encrypt in any::<bool>()) {
            let identity = age::x25519::Identity::generate();
            let recipient = encrypt.then(|| identity.to_public());
            let blob = encode(&plain, recipient.as_ref()).unwrap();
            prop_assert_eq!(is_encrypted(&blob), encrypt);
            let id = key().id(&plain);
            prop_assert_eq!(decode(&id, &blob, &key(), Some(&identity)).unwrap(), plain);
        }
    }
}

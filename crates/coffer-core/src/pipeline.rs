//! The artifact pipeline: source bytes → compression → encryption → SHA-256 → storage, and back.
//!
//! Writing happens on a blocking thread (compression is CPU work) through an [`ArtifactWriter`],
//! a plain [`std::io::Write`]. It hands fixed-size chunks to the storage upload over a bounded
//! channel, so memory is the channel (a few chunks) plus what the backend buffers (one S3 part),
//! whatever the artifact's size. The digest covers the *stored* bytes, so an operator can check
//! an object with `sha256sum` before decrypting or decompressing it.
//!
//! Reading ([`ArtifactReader`]) reverses the chain and fails with an integrity error the moment
//! the stored bytes end with a size or digest other than the recorded one.
//!
//! Storage that stops answering never hangs the chain: the backend bounds each request and each
//! read of an object by the stall timeout (`stall_timeout_seconds`). A stalled upload fails
//! [`store`] with that storage error (exit 4) and drops the channel, so the writer thread fails
//! on its next send and whatever produces the bytes (the dump tool) is stopped too.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::Compression;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::Storage;

/// Size of the chunks handed from the writer thread to the upload.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the writer thread and the upload (2 MiB).
const CHANNEL_CHUNKS: usize = 8;

/// How an artifact is encoded on storage.
#[derive(Debug, Clone)]
pub struct Encoding {
    /// Compression applied first.
    pub compression: Compression,
    /// age recipient the compressed bytes are encrypted to, if any.
    pub recipient: Option<String>,
}

impl Encoding {
    /// The suffix appended to an artifact's name on storage (`.zst`, `.zst.age`, …).
    pub fn suffix(&self) -> String {
        let age = if self.recipient.is_some() { ".age" } else { "" };
        format!("{}{age}", self.compression.suffix())
    }
}

/// What the manifest records of one stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Logical name (`dump.sql`).
    pub name: String,
    /// Object key, relative to the repository root (`data/ID/dump.sql.zst`).
    pub key: String,
    /// `zstd`, `gzip` or `none`.
    pub compression: String,
    /// Whether the object is age-encrypted (after compression).
    pub encrypted: bool,
    /// Bytes before compression and encryption.
    pub size: u64,
    /// Bytes on storage.
    pub stored_size: u64,
    /// Lowercase hex SHA-256 of the bytes on storage.
    pub sha256: String,
}

/// Counts bytes as they pass, for progress bars and metrics. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    /// Bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts `n` more bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// A chunk on its way to storage; `End` is sent only by a writer that finished cleanly, so a
/// producer that dies mid-way can never be mistaken for a short artifact.
enum Chunk {
    Data(Bytes),
    End,
}

/// The last stage: hashes and counts stored bytes and hands them to the upload in chunks.
struct StoreSink {
    tx: mpsc::Sender<Chunk>,
    buffer: BytesMut,
    hasher: Sha256,
    stored: u64,
}

impl StoreSink {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.tx
            .blocking_send(Chunk::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the storage upload stopped"))
    }
}

impl Write for StoreSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.stored += data.len() as u64;
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send()?;
            self.buffer.reserve(CHUNK);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Encrypt {
    Plain(StoreSink),
    Age(age::stream::StreamWriter<StoreSink>),
}

impl Write for Encrypt {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(data),
            Self::Age(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Age(w) => w.flush(),
        }
    }
}

impl Encrypt {
    fn finish(self) -> io::Result<StoreSink> {
        match self {
            Self::Plain(w) => Ok(w),
            Self::Age(w) => w.finish(),
        }
    }
}

enum Compress {
    Zstd(zstd::Encoder<'static, Encrypt>),
    Gzip(flate2::write::GzEncoder<Encrypt>),
    None(Encrypt),
}

impl Compress {
    fn finish(self) -> io::Result<Encrypt> {
        match self {
            Self::Zstd(w) => w.finish(),
            Self::Gzip(w) => w.finish(),
            Self::None(w) => Ok(w),
        }
    }
}

/// A [`Write`] that encodes and stores one artifact. Call `finish`; dropping it
/// unfinished aborts the upload.
pub struct ArtifactWriter {
    inner: Compress,
    size: u64,
    progress: Progress,
}

impl Write for ArtifactWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Compress::Zstd(w) => w.write(data)?,
            Compress::Gzip(w) => w.write(data)?,
            Compress::None(w) => w.write(data)?,
        };
        self.size += n as u64;
        self.progress.add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Compress::Zstd(w) => w.flush(),
            Compress::Gzip(w) => w.flush(),
            Compress::None(w) => w.flush(),
        }
    }
}

/// What a finished writer knows; the key and name are added by [`store`].
struct Finished {
    size: u64,
    stored_size: u64,
    sha256: String,
}

impl ArtifactWriter {
    fn new(encoding: &Encoding, tx: mpsc::Sender<Chunk>, progress: Progress) -> Result<Self> {
        let sink = StoreSink {
            tx,
            buffer: BytesMut::with_capacity(CHUNK),
            hasher: Sha256::new(),
            stored: 0,
        };
        let encrypt = match &encoding.recipient {
            None => Encrypt::Plain(sink),
            Some(recipient) => {
                let recipient: age::x25519::Recipient = recipient
                    .parse()
                    .map_err(|e| Error::config(format!("invalid age recipient: {e}")))?;
                let encryptor = age::Encryptor::with_recipients(std::iter::once(
                    &recipient as &dyn age::Recipient,
                ))
                .map_err(|e| Error::other(format!("setting up encryption: {e}")))?;
                Encrypt::Age(encryptor.wrap_output(sink)?)
            }
        };
        let inner = match encoding.compression {
            Compression::Zstd(level) => {
                let mut encoder = zstd::Encoder::new(encrypt, level)?;
                // One worker thread: compression overlaps reading and scanning, as it does in
                // `mariadb-dump | zstd`, instead of adding to them.
                encoder.multithread(1)?;
                // Cap the worker's job (the default grows with the level's window, 32 MiB and
                // more at high levels) so memory stays predictable whatever the level.
                encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(4 << 20))?;
                Compress::Zstd(encoder)
            }
            Compression::Gzip(level) => Compress::Gzip(flate2::write::GzEncoder::new(
                encrypt,
                flate2::Compression::new(level),
            )),
            Compression::None => Compress::None(encrypt),
        };
        Ok(Self {
            inner,
            size: 0,
            progress,
        })
    }

    /// Flushes every stage and tells the upload the artifact is complete.
    fn finish(self) -> io::Result<Finished> {
        let mut sink = self.inner.finish()?.finish()?;
        sink.send()?;
        sink.tx
            .blocking_send(Chunk::End)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the storage upload stopped"))?;
        Ok(Finished {
            size: self.size,
            stored_size: sink.stored,
            sha256: hex::encode(sink.hasher.finalize()),
        })
    }

    /// Bytes written so far (before compression).
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The upload body: chunks until `End`; a channel closed without `End` (the writer thread died
/// or was dropped) becomes an error item, so the upload is aborted rather than committed short.
struct BodyChunks {
    inner: mpsc::Receiver<Chunk>,
    done: bool,
}

impl tokio_stream::Stream for BodyChunks {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Chunk::Data(bytes))) => Poll::Ready(Some(Ok(bytes))),
            Poll::Ready(Some(Chunk::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the artifact writer stopped before the end",
                ))))
            }
        }
    }
}

/// Stores one artifact: runs `produce` on a blocking thread with a writer whose bytes are
/// encoded, hashed and uploaded to `key` as they come. Returns the record for the manifest and
/// what `produce` returned. If `produce` fails, nothing is stored under `key`.
pub async fn store<T, F>(
    storage: &dyn Storage,
    name: &str,
    key: &str,
    encoding: &Encoding,
    progress: Progress,
    produce: F,
) -> Result<(ArtifactRecord, T)>
where
    T: Send + 'static,
    F: FnOnce(&mut ArtifactWriter) -> Result<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let mut writer = ArtifactWriter::new(encoding, tx, progress)?;
    let producer = tokio::task::spawn_blocking(move || match produce(&mut writer) {
        Ok(value) => writer
            .finish()
            .map(|finished| (finished, value))
            .map_err(Error::from),
        // Dropping the writer without `End` makes the upload fail and store nothing.
        Err(err) => Err(err),
    });
    let upload = storage.put_stream(
        key,
        Box::pin(BodyChunks {
            inner: rx,
            done: false,
        }),
    );
    let (produced, uploaded) = tokio::join!(producer, upload);
    let produced =
        produced.map_err(|e| Error::other(format!("artifact writer thread failed: {e}")))?;
    let (finished, value) = match (produced, uploaded) {
        (Ok(produced), Ok(_)) => produced,
        // When both fail, one caused the other: a storage failure makes the writer's next send
        // fail ("upload stopped"); a producer failure makes the upload see a premature end.
        (Err(_), Err(upload))
            if matches!(upload.kind(), ErrorKind::Storage | ErrorKind::NotFound) =>
        {
            return Err(upload);
        }
        (Err(err), _) | (Ok(_), Err(err)) => return Err(err),
    };
    let record = ArtifactRecord {
        name: name.to_string(),
        key: key.to_string(),
        compression: encoding.compression.name().to_string(),
        encrypted: encoding.recipient.is_some(),
        size: finished.size,
        stored_size: finished.stored_size,
        sha256: finished.sha256,
    };
    Ok((record, value))
}

/// Checks the stored bytes of an artifact as they are read: at their end, the size and SHA-256
/// must equal the record's, or the read fails with an integrity error naming the object.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    expected_size: u64,
    expected_sha256: String,
    key: String,
    checked: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps the raw object bytes of `record`.
    pub fn new(inner: R, record: &ArtifactRecord) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
            expected_size: record.stored_size,
            expected_sha256: record.sha256.clone(),
            key: record.key.clone(),
            checked: false,
        }
    }

    fn mismatch(&self, what: String) -> io::Error {
        Error::integrity(format!("{}: {what}", self.key)).into()
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        if self.read > self.expected_size {
            return Err(self.mismatch(format!(
                "object is larger than the recorded {} bytes",
                self.expected_size
            )));
        }
        if n == 0 && !buf.is_empty() && !self.checked {
            self.checked = true;
            if self.read != self.expected_size {
                return Err(self.mismatch(format!(
                    "object has {} bytes, the manifest records {}",
                    self.read, self.expected_size
                )));
            }
            let actual = hex::encode(self.hasher.clone().finalize());
            if actual != self.expected_sha256 {
                return Err(self.mismatch(format!(
                    "SHA-256 is {actual}, the manifest records {}",
                    self.expected_sha256
                )));
            }
        }
        Ok(n)
    }
}

/// Decodes an artifact: verifies the stored bytes, decrypts them with `identity` when encrypted,
/// and decompresses them. The result reads the original bytes.
pub struct ArtifactReader {
    inner: Box<dyn Read + Send>,
}

impl ArtifactReader {
    /// Wraps the raw object bytes of `record`.
    pub fn new(
        raw: Box<dyn Read + Send>,
        record: &ArtifactRecord,
        identity: Option<&age::x25519::Identity>,
    ) -> Result<Self> {
        let verified = io::BufReader::with_capacity(CHUNK, VerifyingReader::new(raw, record));
        let decrypted: Box<dyn Read + Send> = if record.encrypted {
            let identity = identity.ok_or_else(|| {
                Error::config(format!(
                    "{} is encrypted: an age identity (private key) is needed to read it",
                    record.key
                ))
            })?;
            let decryptor = age::Decryptor::new_buffered(verified).map_err(|e| {
                Error::integrity(format!("{}: not a valid age file: {e}", record.key))
            })?;
            let reader = decryptor
                .decrypt(std::iter::once(identity as &dyn age::Identity))
                .map_err(|e| Error::integrity(format!("{}: cannot decrypt: {e}", record.key)))?;
            Box::new(reader)
        } else {
            Box::new(verified)
        };
        let inner: Box<dyn Read + Send> = match record.compression.as_str() {
            "zstd" => Box::new(zstd::Decoder::new(decrypted)?),
            "gzip" => Box::new(flate2::read::MultiGzDecoder::new(decrypted)),
            "none" => decrypted,
            other => {
                return Err(Error::integrity(format!(
                    "{}: unknown compression {other:?}",
                    record.key
                )));
            }
        };
        Ok(Self { inner })
    }
}

impl Read for ArtifactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// Opens the stored object of `record`. An artifact that a manifest lists and storage does not
/// hold is damage to the backup (an integrity error, exit 6), not an unknown name.
pub async fn open_artifact(
    storage: &dyn Storage,
    record: &ArtifactRecord,
) -> Result<crate::storage::ObjectReader> {
    storage.get(&record.key).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::integrity(format!(
                "artifact {} is missing from the repository",
                record.key
            ))
        } else {
            e
        }
    })
}

/// Reads the stored bytes of `record` to the end and checks their size and SHA-256, without
/// decoding them (works without the private key).
pub async fn verify_stored(storage: &dyn Storage, record: &ArtifactRecord) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut reader = open_artifact(storage, record).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut read = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| Error::storage(format!("reading {}: {e}", record.key)).transient())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    if read != record.stored_size {
        return Err(Error::integrity(format!(
            "{}: object has {read} bytes, the manifest records {}",
            record.key, record.stored_size
        )));
    }
    let actual = hex::encode(hasher.finalize());
    if actual != record.sha256 {
        return Err(Error::integrity(format!(
            "{}: SHA-256 is {actual}, the manifest records {}",
            record.key, record.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    async fn roundtrip(compression: Compression, identity: Option<age::x25519::Identity>) {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let encoding = Encoding {
            compression,
            recipient: identity.as_ref().map(|i| i.to_public().to_string()),
        };
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let payload = data.clone();
        let (record, ()) = store(
            &storage,
            "blob",
            "data/x/blob",
            &encoding,
            Progress::default(),
            move |w| {
                for piece in payload.chunks(70_001) {
                    w.write_all(piece)?;
                }
                Ok(())
            },
        )
        .await
        .unwrap();
        assert_eq!(record.size, data.len() as u64);
        verify_stored(&storage, &record).await.unwrap();
        let raw = std::fs::File::open(dir.path().join("data/x/blob")).unwrap();
        let mut out = Vec::new();
        ArtifactReader::new(Box::new(raw), &record, identity.as_ref())
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == data, "roundtrip changed the data");

        // One flipped byte is caught both by the digest check and by a decoding read.
        let path = dir.path().join("data/x/blob");
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let err = verify_stored(&storage, &record).await.unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Integrity);
        assert!(err.to_string().contains("data/x/blob"));
        let raw = std::fs::File::open(&path).unwrap();
        let read = ArtifactReader::new(Box::new(raw), &record, identity.as_ref())
            .and_then(|mut r| r.read_to_end(&mut Vec::new()).map_err(Error::from));
        assert!(read.is_err(), "a corrupted artifact must not read cleanly");
    }

    #[tokio::test]
    async fn zstd_roundtrip_and_corruption() {
        roundtrip(Compression::Zstd(3), None).await;
    }

    #[tokio::test]
    async fn gzip_roundtrip_and_corruption() {
        roundtrip(Compression::Gzip(6), None).await;
    }

    #[tokio::test]
    async fn uncompressed_roundtrip_and_corruption() {
        roundtrip(Compression::None, None).await;
    }

    #[tokio::test]
    async fn encrypted_roundtrip_and_corruption() {
        roundtrip(
            Compression::Zstd(3),
            Some(age::x25519::Identity::generate()),
        )
        .await;
    }

    #[tokio::test]
    async fn failed_producer_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().to_path_buf());
        let encoding = Encoding {
            compression: Compression::Zstd(3),
            recipient: None,
        };
        let result: Result<(ArtifactRecord, ())> = store(
            &storage,
            "blob",
            "data/x/blob",
            &encoding,
            Progress::default(),
            |w| {
                w.write_all(&[7u8; 1_000_000])?;
                Err(Error::new(
                    crate::error::ErrorKind::Backup,
                    "mariadb-dump exited with status 2",
                ))
            },
        )
        .await;
        assert!(result.unwrap_err().to_string().contains("status 2"));
        assert!(storage.list("").await.unwrap().is_empty());
    }
}

//! An S3 server that stops answering fails the operation after the stall timeout, naming it;
//! a stalled multipart upload is aborted. The server here is a few lines of HTTP over a socket
//! that answer what the scenario needs and then go silent, as a frozen server does.

use std::time::{Duration, Instant};

use bytes::Bytes;
use coffer_core::ErrorKind;
use coffer_core::config::{ChecksumMode, S3Config};
use coffer_core::secret::Secret;
use coffer_core::storage::{BodyStream, S3Storage, Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const MIB: usize = 1024 * 1024;
const STALL: Duration = Duration::from_secs(1);

/// What the fake server saw: `METHOD TARGET` of each request.
type Seen = mpsc::UnboundedReceiver<String>;

/// A server that starts multipart uploads and accepts their abort, and goes silent on anything
/// else: part uploads, single PUTs and listings get no answer, a GET gets 10 of 1,000 bytes.
async fn frozen_s3() -> (S3Storage, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(socket, tx.clone()));
        }
    });
    let config = S3Config {
        bucket: "bucket".into(),
        prefix: "repo".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        path_style: true,
        checksum_mode: ChecksumMode::WhenRequired,
        access_key_id: Secret::new("key"),
        secret_access_key: Secret::new("secret"),
        part_size: 5 * MIB,
    };
    (S3Storage::new(config).with_stall_timeout(STALL), seen)
}

async fn serve(mut socket: TcpStream, seen: mpsc::UnboundedSender<String>) {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let end = loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end);
        let line = head.lines().next().unwrap_or_default().to_string();
        let mut words = line.split(' ');
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let _ = seen.send(format!("{method} {target}"));
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let answer: &[u8] = match method {
            "POST" if target.contains("uploads") => {
                b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 161\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?><InitiateMultipartUploadResult><Bucket>bucket</Bucket><Key>k</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>"
            }
            "DELETE" => b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            "GET" if !target.contains("list-type") => {
                // Headers and the first bytes of the body, then nothing.
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
                std::future::pending::<()>().await;
                return;
            }
            _ => {
                // Frozen: the request (and its body) sits unread in the socket.
                std::future::pending::<()>().await;
                return;
            }
        };
        // Skip the request's body before answering.
        while pending.len() < length {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        pending.drain(..length);
        if socket.write_all(answer).await.is_err() {
            return;
        }
    }
}

fn body(len: usize) -> BodyStream {
    let chunks: Vec<std::io::Result<Bytes>> = (0..len / (256 * 1024))
        .map(|_| Ok(Bytes::from(vec![7u8; 256 * 1024])))
        .collect();
    Box::pin(tokio_stream::iter(chunks))
}

fn expect_stall(err: &coffer_core::Error, what: &str, started: Instant) {
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    assert_eq!(
        err.to_string(),
        format!("{what} in s3://bucket/repo made no progress for 1 s (stall_timeout_seconds)")
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_part_upload_that_stalls_fails_and_aborts_its_multipart_upload() {
    let (storage, mut seen) = frozen_s3().await;
    let started = Instant::now();
    let err = storage
        .put_stream("data/x", body(6 * MIB))
        .await
        .unwrap_err();
    expect_stall(&err, "uploading part 1 of data/x", started);
    let mut requests = Vec::new();
    while let Ok(Some(request)) = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await {
        let aborted = request.starts_with("DELETE") && request.contains("uploadId=up-1");
        requests.push(request);
        if aborted {
            return;
        }
    }
    panic!("the multipart upload was not aborted: {requests:?}");
}

#[tokio::test]
async fn a_single_put_that_stalls_fails() {
    let (storage, _seen) = frozen_s3().await;
    let started = Instant::now();
    let err = storage
        .put_stream("data/small", body(MIB))
        .await
        .unwrap_err();
    expect_stall(&err, "storing data/small", started);
}

#[tokio::test]
async fn a_listing_without_an_answer_fails() {
    let (storage, _seen) = frozen_s3().await;
    let started = Instant::now();
    let err = storage.list("manifests/").await.unwrap_err();
    expect_stall(&err, "listing manifests/", started);
}

#[tokio::test]
async fn a_download_whose_body_stops_fails() {
    let (storage, _seen) = frozen_s3().await;
    let mut reader = storage.get("data/x").await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let err = coffer_core::Error::from(reader.read_to_end(&mut out).await.unwrap_err());
    expect_stall(&err, "reading data/x", started);
}

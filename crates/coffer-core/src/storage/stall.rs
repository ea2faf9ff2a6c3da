//! Storage that stops answering: every request a backend sends, and every read of an object's
//! bytes, fails once it has waited `stall_timeout_seconds` for the server (or the file system),
//! so a frozen S3 server or a hung mount fails the job (exit 4) instead of hanging it.
//!
//! Two measures, both free of per-byte work:
//!
//! - a request (an S3 `PutObject`, `UploadPart`, listing, …, with the SDK's own retries inside,
//!   or a folder backend's write of one chunk) must complete within the limit ([`bounded`]);
//! - a reader of an object ([`StallReader`]) fails when one read waits longer than the limit for
//!   bytes. The clock runs only while the caller waits for data: a consumer that stops reading
//!   for a while (a restore building indexes) is not a stall.

use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{Error, Result};

/// `stall_timeout_seconds` when nothing else is configured.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The error of a storage operation that waited `limit` without progress. Transient: the same
/// call may succeed once the server answers again.
pub(crate) fn stalled(what: &str, limit: Duration) -> Error {
    Error::storage(format!(
        "{what} made no progress for {} s (stall_timeout_seconds)",
        limit.as_secs()
    ))
    .transient()
}

/// Awaits `work`, failing with [`stalled`] (naming `what()`) when it takes longer than `limit`.
pub(crate) async fn bounded<F: IntoFuture>(
    limit: Duration,
    what: impl FnOnce() -> String,
    work: F,
) -> Result<F::Output> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| stalled(&what(), limit))
}

/// An object reader whose reads fail when bytes stop arriving for the limit.
pub(crate) struct StallReader<R> {
    inner: R,
    limit: Duration,
    /// `reading KEY in LOCATION`, for the error.
    what: String,
    /// The deadline of the read now waiting; made once, reset for each wait.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the last poll found no data (the deadline is then armed).
    waiting: bool,
}

impl<R> StallReader<R> {
    pub(crate) fn new(inner: R, limit: Duration, what: String) -> Self {
        Self {
            inner,
            limit,
            what,
            deadline: None,
            waiting: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for StallReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(done) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            this.waiting = false;
            return Poll::Ready(done);
        }
        if !this.waiting {
            // The first poll of this wait that found nothing: the clock starts now.
            this.waiting = true;
            let at = tokio::time::Instant::now() + this.limit;
            match &mut this.deadline {
                Some(deadline) => deadline.as_mut().reset(at),
                None => this.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let deadline = this.deadline.as_mut().expect("armed above");
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(stalled(&this.what, this.limit).into()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_that_waits_too_long_fails_and_a_slow_consumer_does_not() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = StallReader::new(rx, Duration::from_secs(1), "reading data/x".into());
        tx.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        reader.read_exact(&mut buf).await.unwrap();
        // The consumer pausing longer than the limit is not a stall: nobody was waiting.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tx.write_all(b"def").await.unwrap();
        reader.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"def");
        // Data that stops coming is.
        let started = std::time::Instant::now();
        let err = reader.read(&mut buf).await.unwrap_err();
        let err = Error::from(err);
        assert_eq!(err.kind(), crate::error::ErrorKind::Storage);
        assert!(
            err.to_string() == "reading data/x made no progress for 1 s (stall_timeout_seconds)",
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(tx);
    }

    #[tokio::test]
    async fn work_past_the_limit_fails_naming_it() {
        let err = bounded(
            Duration::from_secs(1),
            || "listing manifests/ in /repo".into(),
            std::future::pending::<()>(),
        )
        .await
        .unwrap_err();
        assert!(err.is_transient());
        assert!(err.to_string().contains("no progress for 1 s"), "{err}");
        assert_eq!(
            bounded(Duration::from_secs(1), String::new, async { 7 })
                .await
                .unwrap(),
            7
        );
    }
}

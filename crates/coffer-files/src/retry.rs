//! A bounded retry for uploads: packs and index files are named by their content, so writing one
//! again after a failure is always safe.

use std::future::Future;
use std::time::Duration;

use coffer_core::error::Result;

/// How often and how patiently an upload is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The wait before the second attempt; it doubles before each later one.
    pub first_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
}

impl Default for Retry {
    /// Four attempts, waiting 200 ms, 400 ms and 800 ms between them.
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl Retry {
    /// Runs `attempt` until it succeeds, fails permanently, or has failed transiently
    /// [`Retry::attempts`] times; the last error is returned.
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut delay = self.first_delay;
        let mut tried = 1;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_transient() && tried < self.attempts.max(1) => {
                    tracing::warn!(what, attempt = tried, error = %e, "retrying after a transient failure");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.max_delay);
                    tried += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::error::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick(attempts: u32) -> Retry {
        Retry {
            attempts,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_up_to_the_bound() {
        let calls = AtomicU32::new(0);
        let out = quick(3)
            .run("upload", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::storage("503").transient())
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 7);
        calls.store(0, Ordering::SeqCst);
        let out: Result<()> = quick(3)
            .run("upload", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::storage("503").transient())
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = quick(5)
            .run("upload", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::storage("403"))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

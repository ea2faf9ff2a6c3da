//! What time it is, from a clock tests can set.
//!
//! Everything that decides by the time of day (which schedule is due, how old a backup is, what
//! a status reports) asks a [`Clock`] instead of the system, so tests can move time across a
//! daylight-saving change or a month in an instant. [`Clock::system`] is the wall clock;
//! [`Clock::manual`] stands still until the test sets or advances it, and wakes whatever sleeps
//! until a time it passes.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// The source of the current time; cheap to clone, clones share it.
#[derive(Debug, Clone)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    Manual(watch::Sender<Timestamp>),
}

/// The longest a system-clock sleep waits before looking at the clock again: the wall clock can
/// jump (NTP, a suspended VM), and a long monotonic sleep would not notice.
const RECHECK: Duration = Duration::from_secs(30);

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A clock that shows `at` until it is set or advanced.
    pub fn manual(at: Timestamp) -> Self {
        Self(Arc::new(Source::Manual(watch::Sender::new(at))))
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match &*self.0 {
            Source::System => Timestamp::now(),
            Source::Manual(now) => *now.borrow(),
        }
    }

    /// Sets a manual clock (time may go backwards, as a wall clock can); no effect on the system
    /// clock.
    pub fn set(&self, at: Timestamp) {
        if let Source::Manual(now) = &*self.0 {
            now.send_replace(at);
        }
    }

    /// Moves a manual clock forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        if let Source::Manual(now) = &*self.0 {
            now.send_modify(|t| *t = t.saturating_add(by).unwrap_or(*t));
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(&*self.0, Source::Manual(_))
    }

    /// Completes once the clock shows `at` or later.
    pub async fn sleep_until(&self, at: Timestamp) {
        match &*self.0 {
            Source::System => loop {
                let left = at.duration_since(Timestamp::now());
                if left <= SignedDuration::ZERO {
                    return;
                }
                let left = Duration::try_from(left).unwrap_or(RECHECK);
                tokio::time::sleep(left.min(RECHECK)).await;
            },
            Source::Manual(now) => {
                let mut watching = now.subscribe();
                // `wait_for` looks at the current value first, then at every change.
                let _ = watching.wait_for(|now| *now >= at).await;
            }
        }
    }

    /// Completes once `by` has passed on this clock.
    pub async fn sleep(&self, by: SignedDuration) {
        let at = self.now().saturating_add(by).unwrap_or(Timestamp::MAX);
        self.sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_manual_clock_stands_still_until_moved() {
        let clock = Clock::manual(at("2026-03-08T06:59:00Z"));
        assert_eq!(clock.now(), at("2026-03-08T06:59:00Z"));
        clock.advance(SignedDuration::from_mins(2));
        assert_eq!(clock.now(), at("2026-03-08T07:01:00Z"));
        clock.set(at("2026-01-01T00:00:00Z"));
        assert_eq!(clock.now(), at("2026-01-01T00:00:00Z"));
    }

    #[tokio::test]
    async fn a_sleeper_wakes_when_the_manual_clock_passes_its_time() {
        let clock = Clock::manual(at("2026-11-01T05:00:00Z"));
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(at("2026-11-01T06:30:00Z")).await }
        });
        clock.advance(SignedDuration::from_hours(1));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "06:00 is not yet 06:30");
        clock.advance(SignedDuration::from_hours(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken")
            .unwrap();
    }

    #[tokio::test]
    async fn a_time_already_passed_does_not_sleep() {
        let clock = Clock::manual(at("2026-11-01T05:00:00Z"));
        clock.sleep_until(at("2026-11-01T04:00:00Z")).await;
        Clock::system()
            .sleep_until(at("2020-01-01T00:00:00Z"))
            .await;
    }

    #[tokio::test]
    async fn the_system_clock_sleeps_for_real() {
        let clock = Clock::system();
        let start = std::time::Instant::now();
        clock.sleep(SignedDuration::from_millis(50)).await;
        assert!(start.elapsed() >= Duration::from_millis(45));
        assert!(!clock.is_manual());
    }
}

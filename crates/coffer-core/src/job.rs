//! What a job is handed by whoever runs it.

use crate::cancel::Cancel;
use crate::clock::Clock;

/// The context every job (backup, archive, restore, verify, drill) runs in: when to stop, and
/// what time it is. The binary gives each command a root cancelled by SIGINT/SIGTERM and the
/// system clock; the daemon gives each job a child of its shutdown and its own clock; tests give
/// a manual clock.
#[derive(Debug, Clone, Default)]
pub struct JobContext {
    /// Fired to stop the job cleanly.
    pub cancel: Cancel,
    /// The time the job records (backup ids, `started_at`) and decides by.
    pub clock: Clock,
}

impl JobContext {
    /// A context with its own cancellation and the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context for a job run under this one: cancelled with it (or alone), same clock.
    pub fn child(&self) -> Self {
        Self {
            cancel: self.cancel.child(),
            clock: self.clock.clone(),
        }
    }
}

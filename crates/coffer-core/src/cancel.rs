//! Cancelling one job, or every job of a process, cleanly.
//!
//! A [`Cancel`] is what a job is told to stop by. The binary makes one root per run and cancels
//! it on SIGINT/SIGTERM; the daemon makes one child of its own root per job, so it can stop one
//! job (a shutdown grace that ran out) without touching the others. Cancelling a handle cancels
//! its children too.
//!
//! Cancelling does three things, in this order: it records why ([`Reason`]), fires the
//! [`CancellationToken`] async code selects on, and kills the process group of every child
//! registered with this handle or a descendant ([`crate::process::Registered`]). Blocking code
//! asks [`Cancel::check`] before it starts the next piece of work. The job then unwinds through
//! its normal error path: temp files dropped, multipart uploads aborted, no manifest written.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, Weak};

pub use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};

/// Why a job was cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The process received this signal (2 for SIGINT, 15 for SIGTERM).
    Signal(i32),
    /// Whoever runs the job stopped it, saying why (`daemon shutting down`).
    Stopped(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Signal(signal) => write!(f, "interrupted by {}", signal_name(*signal)),
            Reason::Stopped(why) => write!(f, "cancelled: {why}"),
        }
    }
}

/// `SIGINT`, `SIGTERM`, or the number.
pub fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// A job's cancellation: cheap to clone, every clone is the same handle.
#[derive(Debug, Clone)]
pub struct Cancel(Arc<Node>);

#[derive(Debug)]
struct Node {
    token: CancellationToken,
    reason: OnceLock<Reason>,
    /// Process groups of live children started for this job.
    groups: Mutex<BTreeSet<u32>>,
    children: Mutex<Vec<Weak<Node>>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// A root, cancelled only by [`Cancel::cancel`].
    pub fn new() -> Self {
        Self::with_token(CancellationToken::new())
    }

    fn with_token(token: CancellationToken) -> Self {
        Self(Arc::new(Node {
            token,
            reason: OnceLock::new(),
            groups: Mutex::new(BTreeSet::new()),
            children: Mutex::new(Vec::new()),
        }))
    }

    /// A handle cancelled with this one (for the same reason), or on its own.
    pub fn child(&self) -> Self {
        let child = Self::with_token(self.0.token.child_token());
        {
            let mut children = lock(&self.0.children);
            children.retain(|c| c.strong_count() > 0);
            children.push(Arc::downgrade(&child.0));
        }
        // Cancelled between the token's check and the registration above: pass it on.
        if let Some(reason) = self.reason() {
            child.cancel(reason);
        }
        child
    }

    /// Cancels the job and its children: the token fires and every registered child group is
    /// killed. The first reason given is the one reported.
    pub fn cancel(&self, reason: Reason) {
        let _ = self.0.reason.set(reason.clone());
        self.0.token.cancel();
        let groups: Vec<u32> = lock(&self.0.groups).iter().copied().collect();
        for group in groups {
            crate::process::kill_group(group);
        }
        let children: Vec<Arc<Node>> = lock(&self.0.children)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for child in children {
            Cancel(child).cancel(reason.clone());
        }
    }

    /// Why the job was cancelled, if it was.
    pub fn reason(&self) -> Option<Reason> {
        self.0.reason.get().cloned()
    }

    /// The signal that cancelled the job, if a signal did.
    pub fn signal(&self) -> Option<i32> {
        match self.0.reason.get() {
            Some(Reason::Signal(signal)) => Some(*signal),
            _ => None,
        }
    }

    /// Whether the job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.reason.get().is_some()
    }

    /// An [`ErrorKind::Interrupted`] error once cancelled: asked before starting new work.
    pub fn check(&self) -> Result<()> {
        match self.0.reason.get() {
            None => Ok(()),
            Some(reason) => Err(Error::new(ErrorKind::Interrupted, reason.to_string())),
        }
    }

    /// Completes when the job is cancelled (for `select!`).
    pub async fn cancelled(&self) {
        self.0.token.cancelled().await;
    }

    /// The token async code selects on.
    pub fn token(&self) -> &CancellationToken {
        &self.0.token
    }

    pub(crate) fn add_group(&self, group: u32) {
        lock(&self.0.groups).insert(group);
    }

    pub(crate) fn remove_group(&self, group: u32) {
        lock(&self.0.groups).remove(&group);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelling_a_root_cancels_its_children_with_the_same_reason() {
        let root = Cancel::new();
        let job = root.child();
        let grandchild = job.child();
        root.cancel(Reason::Signal(15));
        assert_eq!(job.signal(), Some(15));
        assert_eq!(grandchild.reason(), Some(Reason::Signal(15)));
        assert!(job.token().is_cancelled());
        let err = grandchild.check().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Interrupted);
        assert_eq!(err.to_string(), "interrupted by SIGTERM");
    }

    #[test]
    fn cancelling_one_job_leaves_its_siblings_and_parent_running() {
        let root = Cancel::new();
        let first = root.child();
        let second = root.child();
        first.cancel(Reason::Stopped("shutdown grace of 60 s ran out".into()));
        assert!(first.is_cancelled());
        assert!(!second.is_cancelled() && !root.is_cancelled());
        assert!(second.check().is_ok());
        assert_eq!(
            first.check().unwrap_err().to_string(),
            "cancelled: shutdown grace of 60 s ran out"
        );
    }

    #[test]
    fn a_child_of_a_cancelled_handle_starts_cancelled() {
        let root = Cancel::new();
        root.cancel(Reason::Signal(2));
        assert_eq!(root.child().signal(), Some(2));
    }

    #[test]
    fn the_first_reason_is_the_one_reported() {
        let job = Cancel::new();
        job.cancel(Reason::Signal(2));
        job.cancel(Reason::Signal(15));
        assert_eq!(job.signal(), Some(2));
    }

    #[tokio::test]
    async fn cancelling_kills_the_registered_children_of_that_job_only() {
        use std::time::Duration;
        let root = Cancel::new();
        let (doomed, spared) = (root.child(), root.child());
        let spawn = || {
            let mut command = crate::process::async_tool_command("sleep".as_ref(), false);
            command.arg("30").spawn().unwrap()
        };
        let (mut a, mut b) = (spawn(), spawn());
        let _ga = crate::process::Registered::new(a.id(), &doomed);
        let _gb = crate::process::Registered::new(b.id(), &spared);
        doomed.cancel(Reason::Stopped("test".into()));
        let status = tokio::time::timeout(Duration::from_secs(5), a.wait())
            .await
            .expect("killed at once")
            .unwrap();
        assert!(!status.success());
        assert!(
            b.try_wait().unwrap().is_none(),
            "the other job's child runs on"
        );
        b.kill().await.unwrap();
    }
}

//! # coffer-verifier
//!
//! Proving that backups restore:
//!
//! - [`sandbox`]: throwaway `mariadbd` instances on loopback ports, which the drill restores into
//!   and which the tests and the demo use as their source databases;
//! - [`drill`]: the monthly recovery drill, [`run_drill`]: restore the newest full backup into a
//!   sandbox, replay the archived binlogs, prove the runbook's checklist item by item;
//! - [`report`]: the drill's report, stored in the repository as JSON and Markdown, and the
//!   history of past drills.

pub mod drill;
pub mod report;
pub mod sandbox;

pub use drill::{DrillOptions, DrillOutcome, run_drill};
pub use report::{DrillReport, Status, Verdict};
pub use sandbox::{BinlogFormat, Sandbox, SandboxError, SandboxOptions};

//! # coffer-restore
//!
//! The read path: getting backups back out of the repository, verified before use.
//!
//! - [`verify`]: [`verify_backup`] re-reads every artifact of a backup, checks its size and
//!   SHA-256, decodes it, and for a dump re-derives the expectations and compares them with the
//!   manifest's.
//!
//! Full restores and point-in-time replay build on the same verified reader next.

pub mod verify;

pub use verify::{VerifyReport, verify_backup};

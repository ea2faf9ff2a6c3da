//! # coffer-restore
//!
//! The read path: getting backups back out of the repository, verified before use.
//!
//! - [`verify`]: [`verify_backup`] re-reads every artifact of a backup, checks its size and
//!   SHA-256, decodes it, and for a dump re-derives the expectations and compares them with the
//!   manifest's.
//! - [`full`]: [`restore_full`] restores a full backup into a server: every digest verified
//!   before the target is touched, non-empty databases refused unless replacing them was asked
//!   for, `before`/`after` hooks around it, the dump replayed by the server's own client.
//!
//! - [`pitr`]: point-in-time plans (the newest full before the target, the archived binlogs from
//!   its coordinates to an exact stop position found in the binlog indexes) and their replay in
//!   one client session.
//! - [`find`]: `binlog find`, the archived transactions that changed a table (kind, rows,
//!   positions), read from the archived binlogs themselves.

pub mod find;
pub mod full;
pub mod pitr;
pub mod verify;

pub use full::{RestoreOptions, RestoreReport, restore_full};
pub use verify::{VerifyReport, verify_backup};

//! # coffer-restore
//!
//! The read path: getting backups back out of the repository, verified before use.
//!
//! - [`verify`]: [`verify_backup`] re-reads every artifact of a backup, checks its size and
//!   SHA-256, decodes it, and for a dump re-derives the expectations and compares them with the
//!   manifest's; [`verify_id`] does it for `backup verify ID` under a shared repository lock
//!   ([`read_locked`]).
//! - [`restore`]: the restore from request to report: a [`RestoreRequest`] (a backup id,
//!   `latest` or a point in time) resolved into a [`RestorePlan`], then run in the order that
//!   keeps the target safe: every digest verified before the target is touched, non-empty
//!   databases refused unless replacing them was asked for, `before`/`after` hooks around it,
//!   the dump, then the binlogs. It is the only module that uses both of these two:
//! - [`full`]: loading a full backup's dump into a server through its own client;
//! - [`pitr`]: point-in-time plans (the newest full before the target, the archived binlogs from
//!   its coordinates to an exact stop position found in the binlog indexes) and their replay in
//!   one client session.
//! - [`find`]: `binlog find`, the archived transactions that changed a table (kind, rows,
//!   positions), read from the archived binlogs themselves.

pub mod find;
pub mod full;
pub mod pitr;
pub mod restore;
pub mod verify;

pub use full::RestoreOptions;
pub use restore::{RestorePlan, RestoreReport, RestoreRequest, RestoreSource};
pub use verify::{VerifyReport, read_locked, verify_backup, verify_id};

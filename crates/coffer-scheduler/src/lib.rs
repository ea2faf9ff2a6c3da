//! # coffer-scheduler
//!
//! The backup jobs, and (next) the daemon's schedule that runs them.
//!
//! - [`full`]: the full backup, [`run_full_backup`]: a consistent `mariadb-dump` streamed
//!   through the artifact pipeline, its expectations read from the stream, manifest last.
//!
//! Binlog archiving, file, configuration and audit-log backups, and the cron loop with its
//! missed-run and overlap rules join this crate as they are built.

pub mod full;

pub use full::run_full_backup;

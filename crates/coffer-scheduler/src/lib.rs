//! # coffer-scheduler
//!
//! The backup jobs, and (next) the daemon's schedule that runs them.
//!
//! - [`full`]: the full backup, [`run_full_backup`]: a consistent `mariadb-dump` streamed
//!   through the artifact pipeline, its expectations read from the stream, manifest last.
//!
//! - [`incremental`]: the incremental backup, [`run_incremental_backup`]: every closed binary
//!   log archived over the replication protocol, each with an index of its transactions.
//!
//! Continuous binlog streaming, file, configuration and audit-log backups, and the cron loop with its
//! missed-run and overlap rules join this crate as they are built.

pub mod full;
pub mod incremental;

pub use full::run_full_backup;
pub use incremental::run_incremental_backup;

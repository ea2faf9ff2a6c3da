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
//! - [`stream`]: continuous binlog archiving, [`run_binlog_stream`]: a supervised
//!   `--stop-never` replication stream; closed files archived whole, the active file shipped as
//!   segments every interval, reconnecting without gaps or duplicates.
//!
//! - [`files`]: the file snapshot job, [`run_files_backup`]: each `[[files]]` source
//!   snapshotted into deduplicated chunks, its parent's unchanged files not read again.
//!
//! - [`recovery_point`]: how many seconds of committed transactions the archive lacks;
//!   [`status`]: that and the newest backups, as the value `coffer status` prints;
//!   [`health`]: config, database, dump tool and storage checked, as `coffer check` prints them.
//!
//! - [`archiver`]: what the last two share: the source's binlog list against the archive's,
//!   fetching, storing a whole file or a segment.
//!
//! - [`daemon`]: the daemon's loop: jobs started when due, never overlapping themselves, at
//!   most `max_concurrent_jobs` at once, retried, their last runs kept under `state/`, missed
//!   runs caught up once, a clean shutdown.
//!
//! - [`notify`]: the daemon's alerts (`[[notify]]`): failure, recovery, staleness, drill
//!   results and full disks, once per change, to webhooks, Slack, email and healthchecks pings.
//!
//! - [`prune`]: the retention plan carried out, manifest before data, and the leftovers of
//!   backups that never finished swept after a grace period.
//!
//! - [`schedule`] (re-exported from core): when a job is due: a cron expression in the
//!   configured zone, right across daylight-saving changes.
//!
//! File, configuration and audit-log backups, and the daemon's loop with its missed-run and
//! overlap rules join this crate as they are built.

pub mod archiver;
pub mod daemon;
pub mod files;
pub mod full;
pub mod health;
pub mod incremental;
pub mod notify;
pub mod prune;
pub mod recovery_point;
pub mod status;
pub mod stream;

pub use coffer_core::schedule;
pub use files::{FilesOptions, run_files_backup};
pub use full::run_full_backup;
pub use incremental::run_incremental_backup;
pub use prune::{PruneReport, run_prune};
pub use stream::{StreamOptions, StreamStats, run_binlog_stream};

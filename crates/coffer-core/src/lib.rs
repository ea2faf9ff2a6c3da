//! # coffer-core
//!
//! The foundation every other coffer crate stands on:
//!
//! - [`config`]: the TOML configuration, resolved against the environment ([`config::Config`]);
//! - [`storage`]: the [`storage::Storage`] trait and its backends, a local folder and S3;
//! - [`pipeline`]: streaming bytes through compression, encryption and SHA-256 into storage
//!   ([`pipeline::store`]) and back, verified ([`pipeline::ArtifactReader`]);
//! - [`manifest`]: what a backup records about itself, including the expectations a restore
//!   must meet; [`repository`]: the layout in storage and the catalog of backups;
//! - [`catalog`]: the cache of manifests already read and checked, on the backup host;
//! - [`dumpscan`]: reading those expectations from a dump stream as it passes; [`dump`]: running
//!   the dump tool with coffer's options through it;
//! - [`binlog`] and [`binlog_events`] (re-exported from the pure `coffer-binlog` crate): indexing
//!   binary logs natively; [`archive`]: the binlog archive as restores see
//!   it (whole files and the segments of the file the server is still writing);
//! - [`binlog_events`]: which transactions of a binary log changed which tables, how, and how many
//!   rows (row events counted, statements parsed);
//! - [`client`]: running the server's client tools safely and querying metadata;
//! - [`grants`]: `SHOW GRANTS` parsed, and what an account's privileges let a dump see;
//! - [`names`]: names from outside checked before they become paths, keys, arguments or SQL, and
//!   [`names::quote_ident`], the one way a name becomes SQL;
//! - [`process`]: every child's environment, process group and bounded output;
//! - [`cancel`]: stopping one job or all of them cleanly; [`clock`]: the time, settable in tests;
//!   [`job`]: the two together, as every job is given them;
//! - [`scratch`]: the private folder every temporary file lives in, cleaned after a dead run;
//! - [`signing`]: minisign signatures over manifests and drill reports, and key pairs;
//! - [`schedule`]: when a job is due, from cron in the configured zone, right across DST;
//! - [`retention`]: which items of a kind a retention policy keeps (restic's rules);
//! - [`lock`]: the repository lock, shared or exclusive, safe without conditional writes;
//! - [`error`]: the error type and its kinds, which decide exit codes.
//!
//! The storage format is specified in `docs/FORMAT.md`.

pub mod archive;
pub mod cancel;
pub mod catalog;
pub mod clock;
pub use coffer_binlog::events as binlog_events;
pub use coffer_binlog::index as binlog;
pub mod client;
pub mod config;
pub mod dump;
pub mod dumpscan;
pub mod error;
pub mod grants;
pub mod job;
pub mod lock;
pub mod manifest;
pub mod names;
pub mod pipeline;
pub mod process;
pub mod repository;
pub mod retention;
pub mod schedule;
pub mod scratch;
pub mod secret;
pub mod signing;
pub mod storage;

pub use error::{Error, ErrorKind, Result};

/// Formats an error and all its sources on one line: `outer: inner: innermost`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text.replace('\n', " ")
}

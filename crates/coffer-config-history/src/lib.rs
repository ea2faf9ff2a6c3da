//! # coffer-config-history
//!
//! Configuration history: the files a `[[config_backup]]` table names (`/srv/app/.env`,
//! `/etc/nginx/**/*.conf`) versioned whenever a content changes, so an operator can see what
//! changed when, with secrets masked, and get any version back byte-exact. The format is
//! specified in `docs/FORMAT.md`, section *Configuration history*.
//!
//! - [`paths`]: the table's absolute paths and globs expanded to files, walking only the
//!   folders a glob can match ([`paths::expand`]);
//! - [`mask`]: values of secret-looking keys (`DB_PASSWORD=…`) replaced by `********`
//!   ([`mask::Masker`]);
//! - [`version`]: one version's manifest, `configs/NAME/ID.json`: every file of the table with
//!   its metadata and chunk ids, and which paths changed ([`version::Version`]); version ids;
//! - [`capture`]: one run: hash every file, store changed contents as chunks through
//!   `coffer_files`' [`ChunkStore`](coffer_files::store::ChunkStore), and write a version only
//!   when a content changed ([`capture::capture`], [`capture::capture_all`]);
//! - [`read`]: the history of one path ([`read::history`]), the masked unified diff of two
//!   versions ([`read::diff`]) and the restore of one version to a file ([`read::restore`]);
//! - [`git`]: the optional mirror, one commit per version in a local bare git repository, secret
//!   values masked ([`git::commit_version`]);
//! - [`watch`]: the tables' folders watched for changes (inotify), so the daemon captures within
//!   seconds of an edit rather than at the next poll ([`watch::watch`]).
//!
//! Errors are [`coffer_core::error::Error`]s: a bad id or path on the command line is
//! [`ErrorKind::Config`](coffer_core::error::ErrorKind::Config), a crafted or damaged version
//! manifest [`ErrorKind::Integrity`](coffer_core::error::ErrorKind::Integrity).

pub mod capture;
pub mod git;
pub mod mask;
pub mod paths;
pub mod read;
pub mod version;
pub mod watch;

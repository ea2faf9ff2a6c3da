//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// coffer: backups of MariaDB/MySQL that are proven restorable.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file [default: $COFFER_CONFIG, else ./config/coffer.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration, the source database (reachable, privileges) and the repository
    /// (reachable; for S3, which capabilities the server has).
    Check(JsonFlag),
    /// Take, list, show and verify backups.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Restore backups.
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// Inspect and feed the binlog archive.
    #[command(subcommand)]
    Binlog(BinlogCommand),
    /// Recovery drills: restore a backup into a sandbox and prove the runbook's checklist.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Show the newest backups and the recovery point: how many seconds of committed
    /// transactions the archive lacks.
    Status(JsonFlag),
    /// Signing keys for manifests and drill reports (minisign's format).
    #[command(subcommand)]
    Key(KeyCommand),
    /// List and break the repository locks (`locks/`): shared for backups, restores, verify and
    /// drills, exclusive for prune.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Delete the backups retention no longer keeps (`[retention.*]`), manifest before data,
    /// and the leftovers of backups that never finished. Every kept and deleted backup is
    /// printed with its reasons.
    Prune(PruneArgs),
    /// Browse file snapshots without restoring them.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Run the scheduled jobs (\[schedule\]) until SIGTERM: full and incremental backups (or the
    /// continuous binlog stream), prune, verify and the drill, each when it is due; serves
    /// `GET /up` and `/metrics` on \[daemon\] listen, alerts the \[\[notify\]\] targets, and
    /// re-reads the configuration on SIGHUP.
    Daemon,
    /// Configuration history (`[[config_backup]]`): the versions of a file and their diffs.
    #[command(subcommand)]
    Config(ConfigCommand),
}

// --- configuration history (`[[config_backup]]`) ---

/// `coffer config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the versions in which a file was added, modified or deleted, oldest first.
    History {
        /// The file's absolute path, as `[[config_backup]] paths` names it.
        path: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Show a unified diff of a file between two versions, secret values masked
    /// [default: the version before the newest → the newest].
    Diff(ConfigDiffArgs),
}

/// `coffer config diff` flags.
#[derive(Debug, Args)]
pub struct ConfigDiffArgs {
    /// The file's absolute path.
    pub path: String,
    /// The older version [default: the file's version before --to].
    #[arg(long, value_name = "ID")]
    pub from: Option<String>,
    /// The newer version [default: the file's newest].
    #[arg(long, value_name = "ID")]
    pub to: Option<String>,
    /// age identity file (private key), for an encrypted repository.
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,
}

/// `coffer restore config` flags.
#[derive(Debug, Args)]
pub struct RestoreConfigArgs {
    /// The file's absolute path, as recorded.
    pub path: String,
    /// The version to restore [default: the newest that holds the file].
    #[arg(long, value_name = "ID")]
    pub version: Option<String>,
    /// Where to write it (refused if it exists, unless --overwrite).
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Replace an existing FILE.
    #[arg(long)]
    pub overwrite: bool,
    /// age identity file (private key), for an encrypted repository.
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `coffer prune` flags.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Print the plan; delete nothing (and take no lock).
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for the repository's exclusive lock before giving up (exit 7).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub lock_wait: u64,
    /// age identity file (private key): in an encrypted repository, file-snapshot chunks are
    /// pruned only with it (their listings must be read).
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `coffer lock …`
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// List every lock: id, kind, host, pid, purpose, age, heartbeat age, and whether it is
    /// live or stale.
    List(JsonFlag),
    /// Remove a lock by id, or every stale lock with --stale. A live lock is removed only with
    /// --force (its holder then stops within a minute, when its heartbeat finds it gone).
    Break(LockBreakArgs),
}

/// `coffer lock break` flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "stale"])))]
pub struct LockBreakArgs {
    /// The lock's id (as listed).
    pub id: Option<String>,
    /// Remove every stale lock.
    #[arg(long)]
    pub stale: bool,
    /// Remove the lock even though it is live.
    #[arg(long, requires = "id")]
    pub force: bool,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `coffer key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new key pair: coffer.key (the secret half, mode 0600, for `[repository]
    /// signing_key_file` on the backup host) and coffer.pub (for `verify_key` and `minisign -V`).
    /// Never replaces an existing key.
    Generate(KeyGenerateArgs),
}

/// `coffer key generate` flags.
#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// Where to write coffer.key and coffer.pub (created, mode 0700, if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub output_dir: PathBuf,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `coffer binlog …`
#[derive(Debug, Subcommand)]
pub enum BinlogCommand {
    /// Print the recoverable windows (from which full backup to which moment a point in time is
    /// reachable) and any gap in the archive; exits non-zero on a gap.
    Window(JsonFlag),
    /// Archive binlogs continuously until stopped (SIGTERM, Ctrl-C): a replication stream from
    /// the source; each file archived when it closes, the file being written shipped every
    /// interval. Reconnects after network or server failures without gaps or duplicates.
    Stream(StreamArgs),
    /// List the archived transactions that changed a table (e.g. the accidental DELETE), with the
    /// position to pass to `restore db --at-position FILE:START` to stop right before one.
    Find(FindArgs),
}

/// `coffer binlog find` flags.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// The table: `db.table`, or `table` in any database.
    #[arg(long, value_name = "TABLE")]
    pub table: String,
    /// Only this database.
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Only changes of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<ChangeKindArg>,
    /// Only transactions committed at or after this moment, e.g. '2025-10-29 11:00:00' (read in
    /// --tz, else the config's timezone) or RFC 3339 with offset.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only transactions committed at or before this moment (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// The zone --since, --until and the printed times are in (IANA name) [default: the
    /// config's timezone].
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// age identity file (private key), for encrypted backups.
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// What a change did, on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChangeKindArg {
    /// Rows added (INSERT, REPLACE).
    Insert,
    /// Rows changed.
    Update,
    /// Rows removed (DELETE, TRUNCATE).
    Delete,
}

/// `coffer drill …`
#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Restore a full backup into a sandbox, replay the archived binlogs, check every item of
    /// the checklist, store the report in the repository and print it. Exits 10 when an item
    /// fails.
    Run(DrillRunArgs),
    /// List past drills with their verdicts, recovery times and recovery points.
    History(JsonFlag),
}

/// `coffer drill run` flags.
#[derive(Debug, Args)]
pub struct DrillRunArgs {
    /// The full backup to drill [default: the newest].
    #[arg(long, value_name = "ID", conflicts_with = "latest")]
    pub backup: Option<String>,
    /// Drill the newest full backup (the default).
    #[arg(long)]
    pub latest: bool,
    /// Leave the sandbox running for inspection until Ctrl-C; its address is printed.
    #[arg(long)]
    pub keep_sandbox: bool,
    /// age identity file (private key), for encrypted backups.
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,
    #[command(flatten)]
    pub lock: LockWaitArg,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `coffer binlog stream` flags.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Ship the active binlog every this many seconds [default: \[binlog\] ship_interval_seconds,
    /// else 60].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,
    #[command(flatten)]
    pub lock: LockWaitArg,
}

/// `coffer restore …`
#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Restore a full backup into a database server. Every artifact's digest is verified before
    /// the target is touched; a non-empty target database is refused unless --drop-existing.
    Db(RestoreDbArgs),
    /// Restore a file snapshot, or one folder of it, into a folder or an S3 prefix. Every
    /// chunk's digest is verified before it is written; no path can leave the target; a
    /// non-empty target is refused unless --overwrite.
    Files(RestoreFilesArgs),
    /// Restore one version of a configuration file, byte-exact with its recorded mode.
    Config(RestoreConfigArgs),
}

/// `coffer restore files` flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["snapshot", "latest"])))]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to", "to_s3"])))]
pub struct RestoreFilesArgs {
    /// The snapshot to restore (an id as listed by `files list`).
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Restore the newest snapshot (of --source, when given).
    #[arg(long)]
    pub latest: bool,
    /// The `[[files]]` source whose snapshot is meant (needed with --latest when there are
    /// several).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Only this folder or file of the snapshot (`documents/`), restored at its path under the
    /// target.
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Restore into this folder (created if missing; must be empty unless --overwrite).
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Restore as objects under this bucket and prefix (`s3://bucket/prefix`), with the
    /// endpoint and credentials of the snapshot's `[[files]]` S3 source, else of the
    /// repository's S3 server.
    #[arg(long, value_name = "URL")]
    pub to_s3: Option<String>,
    /// Count what would be restored; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Restore into a target that is not empty, replacing what is in the way.
    #[arg(long)]
    pub overwrite: bool,
    /// age identity file (private key), for encrypted repositories.
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,
    #[command(flatten)]
    pub lock: LockWaitArg,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `coffer files …`
#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// List the file snapshots, oldest first.
    List {
        /// Only snapshots of this `[[files]]` source.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// List a snapshot's entries (all, or those at or under PATH): type, mode, size, time, path.
    Ls {
        /// Snapshot id, or `latest`.
        id: String,
        /// A folder or file of the snapshot (`documents/`).
        path: Option<String>,
        /// With `latest`: the newest snapshot of this source.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// age identity file (private key), for encrypted repositories.
        #[arg(long, value_name = "PATH")]
        identity_file: Option<PathBuf>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Find entries in every snapshot (or one) by glob: a pattern with `/` matches the whole
    /// path (`documents/**/*.pdf`), one without matches the name (`invoice-*.pdf`).
    Find {
        /// The glob.
        pattern: String,
        /// Only snapshots of this source.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Only this snapshot (an id, or `latest`).
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        /// age identity file (private key), for encrypted repositories.
        #[arg(long, value_name = "PATH")]
        identity_file: Option<PathBuf>,
        #[command(flatten)]
        output: JsonFlag,
    },
}

/// `coffer restore db` flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["backup", "latest", "at", "at_position", "at_gtid"])))]
pub struct RestoreDbArgs {
    /// The full backup to restore (an id as listed).
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Restore the newest full backup.
    #[arg(long)]
    pub latest: bool,
    /// Point in time: every transaction committed at or before this moment, e.g.
    /// '2025-10-29 11:59:00' (read in --tz, else the config's timezone) or RFC 3339 with offset.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// The zone --at is written in (IANA name) [default: the config's timezone].
    #[arg(long, value_name = "ZONE", requires = "at")]
    pub tz: Option<String>,
    /// Point in time: every event before this binlog position (a transaction's start position
    /// excludes that transaction).
    #[arg(long, value_name = "FILE:POS")]
    pub at_position: Option<String>,
    /// Point in time: up to and including this transaction.
    #[arg(long, value_name = "GTID")]
    pub at_gtid: Option<String>,
    /// Target server [default: \[restore\] target_host/target_port, else the source's].
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// Restore a single-database backup under this name.
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Drop target databases that already hold tables, then restore.
    #[arg(long)]
    pub drop_existing: bool,
    /// Do not ask for confirmation (needed for --drop-existing without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print what would be restored where, and change nothing (and take no lock).
    #[arg(long)]
    pub dry_run: bool,
    /// age identity file (private key), for encrypted backups.
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,
    #[command(flatten)]
    pub lock: LockWaitArg,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `--lock-wait`, on every command that takes the repository's shared lock.
#[derive(Debug, Clone, Copy, Args)]
pub struct LockWaitArg {
    /// How long to wait while a prune holds the repository's exclusive lock before giving up
    /// (exit 7, naming the holder) [default: \[daemon\] lock_wait_seconds, else 600].
    #[arg(long, value_name = "SECONDS")]
    pub lock_wait: Option<u64>,
}

impl LockWaitArg {
    /// The wait: the flag, else the configuration's `[daemon] lock_wait_seconds`.
    pub fn or_config(self, config: &coffer_core::config::Config) -> std::time::Duration {
        self.lock_wait
            .map_or(config.daemon.lock_wait, std::time::Duration::from_secs)
    }
}

/// `backup run full|incremental` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub lock: LockWaitArg,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `coffer backup …`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a backup now.
    #[command(subcommand)]
    Run(RunCommand),
    /// List the backups in the repository, oldest first.
    List {
        /// Only backups of this kind.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Show one backup's manifest.
    Show {
        /// Backup id (as listed), or `latest`.
        id: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Re-read every artifact of a backup and check its size, SHA-256 and contents.
    Verify {
        /// Backup id (as listed), or `latest`.
        id: String,
        /// age identity file (private key), to also decrypt and check encrypted artifacts.
        #[arg(long, value_name = "PATH")]
        identity_file: Option<PathBuf>,
        /// For a file snapshot: also read every chunk back and check its digest (without it,
        /// only that every chunk is indexed and every pack it is in exists).
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// For a file snapshot: read back the chunks of one part of the packs, `N/M` (`1/10`
        /// reads the first tenth; run `2/10` next time to cover them all).
        #[arg(long, value_name = "N/M")]
        read_data_subset: Option<String>,
        #[command(flatten)]
        lock: LockWaitArg,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Keep a backup or a file snapshot whatever retention says (a legal hold, an incident),
    /// until unpinned.
    Pin {
        /// Backup id (as listed), `latest`, or a file snapshot id (as `files list` shows).
        id: String,
        /// Why it is kept: shown by `prune` as the reason.
        #[arg(long)]
        reason: String,
    },
    /// Let retention decide about a pinned backup or file snapshot again.
    Unpin {
        /// Backup or file snapshot id.
        id: String,
    },
}

/// `coffer backup run …`
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// A full logical backup of the source databases.
    Full(RunArgs),
    /// Archive every closed binary log the repository lacks (rotating the active one first when
    /// it holds unarchived transactions).
    Incremental(RunArgs),
    /// A snapshot of each `[[files]]` source (or --source): only what changed since the last
    /// one is read and stored.
    Files(RunFilesArgs),
    /// Version the `[[config_backup]]` files: a new version only when a content changed.
    Config(JsonFlag),
}

/// `backup run files` flags.
#[derive(Debug, Args)]
pub struct RunFilesArgs {
    /// Only the `[[files]]` source of this name.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Read every file, even those the last snapshot says are unchanged.
    #[arg(long)]
    pub full_scan: bool,
    #[command(flatten)]
    pub lock: LockWaitArg,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Backup kinds on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Full backups.
    Full,
    /// Archived binary logs (incremental backups).
    Binlog,
    /// Shipped pieces of the binary log the server is still writing (`binlog stream`).
    Segment,
}

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
        #[command(flatten)]
        output: JsonFlag,
    },
}

/// `coffer backup run …`
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// A full logical backup of the source databases.
    Full(JsonFlag),
}

/// Backup kinds on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Full backups.
    Full,
}

//! One module per command group; each returns the exit code to use on success paths that still
//! report a finding (e.g. verification found damage).

mod backup;
mod binlog;
mod check;
mod config;
mod daemon;
mod drill;
mod files;
mod key;
mod lock;
mod prune;
mod restore;
mod status;

use anyhow::Result;
use coffer_core::config::{Config, ProcessEnv};
use coffer_core::job::JobContext;
use coffer_core::repository::Repository;

use crate::cli::{
    BackupCommand, BinlogCommand, Cli, Command, DrillCommand, FilesCommand, KeyCommand,
    RestoreCommand, RunCommand,
};

/// Runs the parsed command line.
pub async fn run(cli: Cli, job: &JobContext) -> Result<u8> {
    match cli.command {
        Command::Check(flags) => check::run(cli.config.as_deref(), flags.json).await,
        // Needs no configuration: keys are made before the config that names them.
        Command::Key(KeyCommand::Generate(args)) => key::generate(&args),
        Command::Binlog(BinlogCommand::Window(flags)) => {
            let config = load_config(cli.config.as_deref())?;
            binlog::window(&config, flags.json).await
        }
        Command::Binlog(BinlogCommand::Stream(args)) => {
            let config = load_config(cli.config.as_deref())?;
            binlog::stream(&config, job, &args).await
        }
        Command::Binlog(BinlogCommand::Find(args)) => {
            let config = load_config(cli.config.as_deref())?;
            binlog::find(&config, args).await
        }
        Command::Drill(DrillCommand::Run(args)) => {
            let config = load_config(cli.config.as_deref())?;
            drill::run(&config, job, args).await
        }
        Command::Drill(DrillCommand::History(flags)) => {
            let config = load_config(cli.config.as_deref())?;
            drill::history(&config, flags.json).await
        }
        Command::Status(flags) => {
            let config = load_config(cli.config.as_deref())?;
            status::run(&config, job, flags.json).await
        }
        Command::Lock(command) => {
            let config = load_config(cli.config.as_deref())?;
            match command {
                crate::cli::LockCommand::List(flags) => lock::list(&config, job, flags.json).await,
                crate::cli::LockCommand::Break(args) => {
                    lock::break_locks(&config, job, &args).await
                }
            }
        }
        Command::Restore(RestoreCommand::Db(args)) => {
            let config = load_config(cli.config.as_deref())?;
            restore::run_db(&config, job, args).await
        }
        Command::Restore(RestoreCommand::Files(args)) => {
            let config = load_config(cli.config.as_deref())?;
            files::restore(&config, job, &args).await
        }
        Command::Files(command) => {
            let config = load_config(cli.config.as_deref())?;
            match command {
                FilesCommand::List { source, output } => {
                    files::list(&config, source.as_deref(), output.json).await
                }
                FilesCommand::Ls {
                    id,
                    path,
                    source,
                    identity_file,
                    output,
                } => {
                    files::ls(
                        &config,
                        &id,
                        path.as_deref(),
                        source.as_deref(),
                        identity_file.as_deref(),
                        output.json,
                    )
                    .await
                }
                FilesCommand::Find {
                    pattern,
                    source,
                    snapshot,
                    identity_file,
                    output,
                } => {
                    files::find(
                        &config,
                        &pattern,
                        source.as_deref(),
                        snapshot.as_deref(),
                        identity_file.as_deref(),
                        output.json,
                    )
                    .await
                }
            }
        }
        Command::Config(command) => {
            let config = load_config(cli.config.as_deref())?;
            config::run(&config, command).await
        }
        Command::Restore(RestoreCommand::Config(args)) => {
            let config = load_config(cli.config.as_deref())?;
            config::restore(&config, args).await
        }
        Command::Daemon => {
            let config = load_config(cli.config.as_deref())?;
            daemon::run(&config).await
        }
        Command::Prune(args) => {
            let config = load_config(cli.config.as_deref())?;
            prune::run(&config, job, args).await
        }
        Command::Backup(command) => {
            let config = load_config(cli.config.as_deref())?;
            match command {
                BackupCommand::Run(RunCommand::Full(args)) => {
                    backup::run_full(&config, job, &args).await
                }
                BackupCommand::Run(RunCommand::Incremental(args)) => {
                    backup::run_incremental(&config, job, &args).await
                }
                BackupCommand::Run(RunCommand::Files(args)) => {
                    files::run(&config, job, &args).await
                }
                BackupCommand::Run(RunCommand::Config(flags)) => {
                    config::capture(&config, job, flags.json).await
                }
                BackupCommand::List { kind, output } => {
                    backup::list(&config, kind, output.json).await
                }
                BackupCommand::Show { id, output } => backup::show(&config, &id, output.json).await,
                BackupCommand::Pin { id, reason } => backup::pin(&config, job, &id, &reason).await,
                BackupCommand::Unpin { id } => backup::unpin(&config, &id).await,
                BackupCommand::Verify {
                    id,
                    identity_file,
                    read_data,
                    read_data_subset,
                    lock,
                    output,
                } => {
                    let wait = lock.or_config(&config);
                    if coffer_files::snapshot::is_snapshot_id(&id) {
                        return files::verify(
                            &config,
                            job,
                            &id,
                            files::read_data(read_data, read_data_subset.as_deref())?,
                            identity_file.as_deref(),
                            wait,
                            output.json,
                        )
                        .await;
                    }
                    if read_data || read_data_subset.is_some() {
                        return Err(coffer_core::Error::config(
                            "--read-data and --read-data-subset apply to file snapshots \
                             (ids like 20261202T030000Z-files-3fa9); a database backup's \
                             verify always reads every artifact",
                        )
                        .into());
                    }
                    backup::verify(
                        &config,
                        job,
                        &id,
                        identity_file.as_deref(),
                        wait,
                        output.json,
                    )
                    .await
                }
            }
        }
    }
}

/// Finds and loads the configuration (`--config`, else `$COFFER_CONFIG`, else the default path).
pub fn load_config(explicit: Option<&std::path::Path>) -> Result<Config> {
    let path = Config::locate(explicit, &ProcessEnv);
    let config = Config::load(&path, &ProcessEnv)?;
    // Before anything makes a temp file: they all go under the configured state_dir, and what
    // a killed run left there is removed now.
    coffer_core::scratch::init(config.state_dir.as_deref())?;
    Ok(config)
}

/// Opens the configured repository.
pub async fn open_repository(config: &Config) -> Result<Repository> {
    Ok(Repository::open(&config.repository, config.stall_timeout)
        .await?
        .with_cache(config.state_dir.as_deref()))
}

/// Reads an age identity (private key) file as `age-keygen` writes it.
pub fn read_identity(path: &std::path::Path) -> Result<age::x25519::Identity> {
    coffer_core::config::warn_if_shared("--identity-file", path);
    let text = std::fs::read_to_string(path).map_err(|e| {
        coffer_core::Error::config(format!("cannot read identity file {}: {e}", path.display()))
    })?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .ok_or_else(|| {
            coffer_core::Error::config(format!(
                "{} holds no age identity (AGE-SECRET-KEY-…)",
                path.display()
            ))
        })?;
    line.parse().map_err(|e| {
        coffer_core::Error::config(format!("{}: invalid age identity: {e}", path.display())).into()
    })
}

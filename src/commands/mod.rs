//! One module per command group; each returns the exit code to use on success paths that still
//! report a finding (e.g. verification found damage).

mod backup;
mod check;

use anyhow::Result;
use coffer_core::config::{Config, ProcessEnv};
use coffer_core::repository::Repository;

use crate::cli::{BackupCommand, Cli, Command, RunCommand};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Check(flags) => check::run(cli.config.as_deref(), flags.json).await,
        Command::Backup(command) => {
            let config = load_config(cli.config.as_deref())?;
            match command {
                BackupCommand::Run(RunCommand::Full(flags)) => {
                    backup::run_full(&config, flags.json).await
                }
                BackupCommand::List { kind, output } => {
                    backup::list(&config, kind, output.json).await
                }
                BackupCommand::Show { id, output } => backup::show(&config, &id, output.json).await,
                BackupCommand::Verify {
                    id,
                    identity_file,
                    output,
                } => backup::verify(&config, &id, identity_file.as_deref(), output.json).await,
            }
        }
    }
}

/// Finds and loads the configuration (`--config`, else `$COFFER_CONFIG`, else the default path).
pub fn load_config(explicit: Option<&std::path::Path>) -> Result<Config> {
    let path = Config::locate(explicit, &ProcessEnv);
    Ok(Config::load(&path, &ProcessEnv)?)
}

/// Opens the configured repository.
pub async fn open_repository(config: &Config) -> Result<Repository> {
    Ok(Repository::open(&config.repository).await?)
}

//! The `coffer` binary: flags, logging and exit codes around the library crates.

mod cli;
mod commands;
mod exit;
mod output;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("coffer: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // One line, outermost context first, no backtrace: what an operator reads at 3 a.m.
            let message = err.chain().map(ToString::to_string).collect::<Vec<_>>();
            let mut line = String::new();
            for part in message {
                if !line.contains(&part) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&part);
                }
            }
            eprintln!("coffer: error: {}", line.replace('\n', " "));
            ExitCode::from(exit::code_for_error(&err))
        }
    }
}

fn init_logging(format: cli::LogFormat) {
    let filter = EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| {
        EnvFilter::new("warn,coffer=info,coffer_core=info,coffer_scheduler=info,coffer_restore=info,coffer_verifier=info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}

//! The `coffer` binary: flags, logging and exit codes around the library crates.

#[macro_use]
mod output;
mod cli;
mod commands;
mod exit;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc: a file backup moves chunk buffers of up to 8 MiB between
/// a dozen threads, and glibc's per-thread arenas kept what they freed, so peak RSS grew past
/// 300 MiB on a 2 GiB tree (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    // `binlog stream` and a kept drill sandbox wait for the signal as their way to stop; every
    // other command is interrupted by it (children killed, cleanup, after hooks, exit 130/143).
    let stops_on_signal = matches!(
        &cli.command,
        cli::Command::Binlog(cli::BinlogCommand::Stream(_)) | cli::Command::Daemon
    ) || matches!(&cli.command, cli::Command::Drill(cli::DrillCommand::Run(args)) if args.keep_sandbox);
    // One job per run: the signal handler cancels it.
    let job = coffer_core::job::JobContext::new();
    let result = runtime.block_on(async {
        if !stops_on_signal {
            watch_signals(job.cancel.clone())?;
        }
        commands::run(cli, &job).await
    });
    // Children and temp files are gone once the command returned; the run's folder goes now. A
    // blocking thread stuck in a hung mount cannot be cancelled: it is not waited for forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    coffer_core::scratch::finish();
    let interrupted = job.cancel.signal();
    match result {
        Ok(code) => ExitCode::from(code),
        // `coffer files ls | head`: the reader has what it wanted.
        Err(err) if err.is::<output::StdoutClosed>() => ExitCode::SUCCESS,
        Err(err) if interrupted.is_some() => {
            eprintln!("coffer: error: {}", one_line(&err));
            ExitCode::from(exit::code_for_signal(interrupted.unwrap_or(2)))
        }
        Err(err) => {
            eprintln!("coffer: error: {}", one_line(&err));
            ExitCode::from(exit::code_for_error(&err))
        }
    }
}

/// One line, outermost context first, no backtrace: what an operator reads at 3 a.m.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for part in err.chain().map(ToString::to_string) {
        if !line.contains(&part) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&part);
        }
    }
    line.replace('\n', " ")
}

/// Installs the SIGINT/SIGTERM handlers (before any work starts, so no signal is missed) and
/// turns the first signal into cancelling the run's job: children killed, new ones refused, and
/// the command unwinds through its error path, cleaning up as it goes.
fn watch_signals(cancel: coffer_core::cancel::Cancel) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let signo = tokio::select! {
            _ = int.recv() => 2,
            _ = term.recv() => 15,
        };
        tracing::warn!(
            signal = %coffer_core::cancel::signal_name(signo),
            "interrupted: stopping children and cleaning up"
        );
        cancel.cancel(coffer_core::cancel::Reason::Signal(signo));
    });
    Ok(())
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

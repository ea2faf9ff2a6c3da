//! `coffer-sandbox`: a throwaway MariaDB for the demo and the benchmark, started with the same
//! code the drill uses. It loads SQL files, creates a backup account, writes a ready file with
//! the port, and runs until its standard input closes (so a script that dies takes it along).
//!
//! ```text
//! coffer-sandbox --ready-file F [--server-id N] [--sql FILE]... [--scale N]
//!                [--user U --password-file P [--grants "ALL PRIVILEGES ON *.*"]]
//! ```

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use coffer_verifier::{Sandbox, SandboxOptions};

/// What a backup account needs (the default for `--user`).
const BACKUP_GRANTS: &str = "SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, BINLOG MONITOR, REPLICATION SLAVE ON *.*";

struct Args {
    ready_file: PathBuf,
    server_id: u32,
    sql: Vec<PathBuf>,
    scale: Option<u64>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    grants: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        ready_file: PathBuf::new(),
        server_id: 1,
        sql: Vec::new(),
        scale: None,
        user: None,
        password_file: None,
        grants: BACKUP_GRANTS.to_string(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--ready-file" => args.ready_file = value()?.into(),
            "--server-id" => {
                args.server_id = value()?
                    .parse()
                    .map_err(|_| "--server-id takes a number".to_string())?
            }
            "--sql" => args.sql.push(value()?.into()),
            "--scale" => {
                args.scale = Some(
                    value()?
                        .parse()
                        .map_err(|_| "--scale takes a number".to_string())?,
                )
            }
            "--user" => args.user = Some(value()?),
            "--password-file" => args.password_file = Some(value()?.into()),
            "--grants" => args.grants = value()?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.ready_file.as_os_str().is_empty() {
        return Err("--ready-file is required".into());
    }
    Ok(args)
}

fn run(args: Args) -> Result<(), String> {
    let sandbox = Sandbox::start(SandboxOptions {
        server_id: args.server_id,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    for file in &args.sql {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let scale = args
            .scale
            .map(|s| format!("SET @scale = {s};\n"))
            .unwrap_or_default();
        sandbox
            .sql(&format!("{scale}{text}"))
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    if let (Some(user), Some(password_file)) = (&args.user, &args.password_file) {
        let password = std::fs::read_to_string(password_file)
            .map_err(|e| format!("{}: {e}", password_file.display()))?;
        sandbox
            .create_user(user, password.trim_end_matches('\n'), &args.grants)
            .map_err(|e| e.to_string())?;
    }
    std::fs::write(
        &args.ready_file,
        format!(
            "port={}\nsocket={}\ndir={}\n",
            sandbox.port(),
            sandbox.socket().display(),
            sandbox.dir().display()
        ),
    )
    .map_err(|e| format!("{}: {e}", args.ready_file.display()))?;
    // Block until whoever started us closes our stdin (or dies).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(sandbox);
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coffer-sandbox: error: {e}");
            ExitCode::from(1)
        }
    }
}

//! Running the dump tool with the options every coffer dump uses, its output scanned for the
//! expectations as it passes ([`crate::dumpscan`]). The full backup stores the output; the drill
//! dumps a restored copy the same way and compares what the scanner finds.

use std::io::{Read, Write};
use std::process::Stdio;

use crate::dumpscan::{DumpFacts, DumpScanner};
use crate::process::Logged;
use crate::{Error, ErrorKind, Result};

/// `mariadb-dump` options of every coffer dump (after the defaults file, before the coordinates
/// options and `--databases`). Rows in primary-key order, binary columns in hex: the rendering
/// the table data digests are defined over.
pub const DUMP_OPTIONS: &[&str] = &[
    "--single-transaction",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--order-by-primary",
    "--quick",
    "--default-character-set=utf8mb4",
];

/// Lines of the dump tool's stderr kept for the error message.
const STDERR_TAIL: usize = 20;

/// Runs the dump tool, copying its output into `writer` through a [`DumpScanner`]. Fails (kind
/// `Backup`) when the tool fails or its output lacks the completion trailer.
///
/// A dump that produces nothing for `stall` is stopped and fails saying so; one whose job is
/// cancelled is killed and fails as interrupted.
pub fn run_dump(
    tool: &std::path::Path,
    args: &[String],
    writer: &mut dyn Write,
    stall: std::time::Duration,
    cancel: &crate::cancel::Cancel,
) -> Result<DumpFacts> {
    let name = tool
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    cancel.check()?;
    let mut child = crate::process::tool_command(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .logged()
        .spawn()
        .map_err(|e| Error::other(format!("cannot start {name}: {e}")))?;
    let group = crate::process::Registered::new(Some(child.id()), cancel);
    let watchdog = crate::process::Watchdog::start(Some(child.id()), stall);
    let stderr_tail = crate::process::drain_tail(child.stderr.take().expect("stderr is piped"));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut scanner = DumpScanner::new();
    let mut buf = vec![0u8; 256 * 1024];
    let copied: Result<()> = (|| loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Backup,
                    format!("reading {name} output: {e}"),
                ));
            }
        };
        watchdog.tick();
        scanner.feed(&buf[..n]);
        writer.write_all(&buf[..n]).map_err(Error::from)?;
    })();
    if copied.is_err() {
        let _ = child.kill();
    }
    drop(stdout);
    let status = child
        .wait()
        .map_err(|e| Error::other(format!("waiting for {name}: {e}")))?;
    let stderr_text =
        crate::process::tail_lines(&stderr_tail.join().unwrap_or_default(), STDERR_TAIL);
    drop(group);
    cancel.check()?;
    if watchdog.stalled() {
        return Err(watchdog.error(ErrorKind::Backup, &name));
    }
    copied?;
    if !status.success() {
        let detail = if stderr_text.is_empty() {
            String::new()
        } else {
            format!(": {stderr_text}")
        };
        return Err(Error::new(
            ErrorKind::Backup,
            format!("{name} failed ({status}){detail}"),
        ));
    }
    let facts = scanner.finish();
    if !facts.completed {
        return Err(Error::new(
            ErrorKind::Backup,
            format!("{name} output ended before its completion trailer"),
        ));
    }
    Ok(facts)
}

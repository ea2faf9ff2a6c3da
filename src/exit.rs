//! The exit-code contract (documented in docs/CLI.md; scripts, systemd and alerting read it).

use coffer_core::ErrorKind;

/// Success.
pub const OK: u8 = 0;
/// An unexpected failure: a bug, or the local machine (a missing tool, a temp file).
pub const INTERNAL: u8 = 1;
/// Bad command line, configuration or input (clap also exits 2 on usage errors).
pub const BAD_INPUT: u8 = 2;
/// The database could not be reached or refused us.
pub const DATABASE: u8 = 3;
/// The repository storage could not be reached or failed.
pub const STORAGE: u8 = 4;
/// The job failed: a backup (e.g. the dump tool failed) or a restore (the client tool failed).
pub const JOB_FAILED: u8 = 5;
/// Verification found damaged or missing data.
pub const VERIFY_FAILED: u8 = 6;
/// Another coffer holds the repository lock.
pub const LOCKED: u8 = 7;
/// The named backup does not exist.
pub const NOT_FOUND: u8 = 8;
/// Refused to protect data: a restore onto a non-empty database without `--drop-existing`, or
/// a destructive step without confirmation.
pub const REFUSED: u8 = 9;
/// A recovery drill ran and at least one checklist item failed (its report says which).
pub const DRILL_FAILED: u8 = 10;

/// Interrupted by SIGINT (128 + 2); SIGTERM exits 143 (128 + 15).
pub const INTERRUPTED: u8 = 130;

/// The exit code after an interruption by `signal`: 128 + its number, as shells report it.
pub fn code_for_signal(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(INTERRUPTED)
}

/// The exit code for an error of `kind`.
pub fn code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Config => BAD_INPUT,
        ErrorKind::Database => DATABASE,
        ErrorKind::Storage => STORAGE,
        ErrorKind::Backup | ErrorKind::Restore => JOB_FAILED,
        ErrorKind::Refused => REFUSED,
        ErrorKind::Integrity => VERIFY_FAILED,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Locked => LOCKED,
        ErrorKind::Interrupted => INTERRUPTED,
        ErrorKind::Other => INTERNAL,
    }
}

/// The exit code for an error that reached `main`: the kind of the first coffer error in its chain.
pub fn code_for_error(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<coffer_core::Error>())
        .map_or(INTERNAL, |e| code_for(e.kind()))
}

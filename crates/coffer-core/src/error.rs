//! The error type of `coffer-core`.
//!
//! Policy (after rustic's): every public function of this crate returns [`Error`]. Each error
//! carries an [`ErrorKind`], which the binary maps to a documented exit code, and says whether it
//! is transient (worth retrying with backoff) or permanent. Errors gain context as they travel up;
//! they never lose it. Messages are lowercase fragments that read well after "failed to …", and
//! never contain a secret.

use std::fmt;

/// What went wrong, in the terms an operator or a script cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration file or a command-line value is wrong.
    Config,
    /// The source (or target) database cannot be reached or refused us.
    Database,
    /// The repository storage cannot be reached or failed an operation.
    Storage,
    /// A backup job failed (the dump tool failed, the stream broke).
    Backup,
    /// A restore failed while writing to the target (the client tool failed, a hook failed).
    Restore,
    /// The operation was refused to protect data (a non-empty target without `--drop-existing`).
    Refused,
    /// Stored data does not match its recorded digest or size, or cannot be decoded.
    Integrity,
    /// An object or backup that should exist does not.
    NotFound,
    /// Another process holds the repository lock.
    Locked,
    /// The process was interrupted (SIGINT, SIGTERM) and stopped cleanly.
    Interrupted,
    /// Anything else: a bug or an environment problem (missing tool, I/O on local disk).
    Other,
}

/// The error of every fallible `coffer-core` operation.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    transient: bool,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A permanent error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            transient: false,
            message: message.to_string(),
            source: None,
        }
    }

    /// A configuration error.
    pub fn config(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// A storage error.
    pub fn storage(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Storage, message)
    }

    /// An integrity error (digest or size mismatch, undecodable data).
    pub fn integrity(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Integrity, message)
    }

    /// A refusal that protects data.
    pub fn refused(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Refused, message)
    }

    /// A database error.
    pub fn database(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Database, message)
    }

    /// A "does not exist" error.
    pub fn not_found(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Anything else.
    pub fn other(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Other, message)
    }

    /// Marks the error as transient: the same call may succeed later.
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// Attaches the underlying cause; its text is appended to the message when displayed in full.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefixes the message with what was being done: `"storing data/x: " + message`.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The kind, which decides the exit code.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        // An io::Error that wraps one of ours (it crossed a Read/Write boundary) keeps its kind.
        if err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let inner = err.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        Error::other(&err).with_source(err)
    }
}

impl From<Error> for std::io::Error {
    fn from(err: Error) -> Self {
        std::io::Error::other(err)
    }
}

/// The result of `coffer-core` operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

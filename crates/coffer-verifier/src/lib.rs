//! # coffer-verifier
//!
//! Proving that backups restore. Today it holds [`sandbox`]: throwaway `mariadbd` instances on
//! loopback ports, which the recovery drill restores into and which the tests and the demo use
//! as their source databases. The drill's checklist and reports come next.

pub mod sandbox;

pub use sandbox::{BinlogFormat, Sandbox, SandboxError, SandboxOptions};

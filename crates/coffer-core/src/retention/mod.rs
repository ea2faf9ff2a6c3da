//! Retention: which backups a repository keeps, and why.
//!
//! - [`policy`]: the rules of one kind (restic's `keep_*`), a pure function of times;
//! - [`plan`](mod@plan): the whole catalog through those rules and the guarantees above them (the newest
//!   full backup, pins, the restore chains of every promised point in time), each item kept or
//!   deleted with its reasons — what `coffer prune` prints and then carries out;
//! - [`pins`]: backups kept whatever the rules say, stored under `pins/`.

pub mod pins;
pub mod plan;
pub mod policy;

pub use plan::{Pin, PlanItem, PrunePlan, plan};
pub use policy::{Policy, Reasons, parse_span};

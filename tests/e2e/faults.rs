//! The fault suite: what the outside world does to coffer (signals and `kill -9` at several
//! moments, a crashed or frozen source, storage that dies, damaged or crafted objects) and what
//! coffer then lists, verifies, leaves behind and tells the operator. `docs/RELIABILITY.md`
//! lists every case with its outcome.

mod damaged;
mod disk;
mod interrupted;
mod signals;

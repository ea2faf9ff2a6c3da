//! # coffer-binlog
//!
//! MariaDB and MySQL binary logs, read natively and purely: bytes in, facts out. No async
//! runtime, no database client, no storage — so it can be tested on any bytes and reused by
//! every reader of the archive (restores, `binlog find`, retention, the audit archive).
//!
//! - [`framing`]: the byte stream cut into events, once for every reader here
//!   ([`framing::EventFramer`]): the magic, the 19-byte headers, the CRC32 trailer the format
//!   description announces, fed in chunks of any size with at most one partial event held;
//! - [`index`]: the transaction index of a binlog file — each transaction's GTID, positions and
//!   commit time ([`index::BinlogIndexer`], [`index::BinlogIndex`]), read from the 19-byte event
//!   headers and the few event bodies that bound transactions;
//! - [`events`]: which transactions changed which tables, how and how many rows
//!   ([`events::EventScanner`]): row events decoded (v1, v2, MariaDB's compressed events) with
//!   exact row counts from the table map's column types, and statement events parsed for their
//!   table and kind.
//!
//! `coffer-core` re-exports them as `coffer_core::binlog` and `coffer_core::binlog_events`.

pub mod events;
pub mod framing;
pub mod index;
pub mod index_json;

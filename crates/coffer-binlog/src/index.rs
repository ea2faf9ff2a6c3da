//! Reading MariaDB/MySQL binary logs natively, just far enough to index them.
//!
//! Replay is left to `mariadb-binlog`, which understands every event type; coffer reads only the
//! 19-byte v4 event headers and the few event bodies that delimit transactions, so that a
//! point-in-time restore can stop at an exact position instead of handing a wall-clock time to a
//! tool that reads it in the wrong zone. [`BinlogIndexer`] is fed the file's bytes in chunks of
//! any size (as they stream into the repository) and keeps at most a few hundred bytes of any
//! event, whatever the event's size.
//!
//! A transaction is a group of events that starts with a MariaDB GTID event and ends with an XID
//! event (transactional engines), a `COMMIT` query (non-transactional changes), or, for a GTID
//! flagged standalone (DDL), the one query that follows it. Its commit time is the header
//! timestamp of that last event (whole seconds, as the binlog records them); its end position is
//! where the next event starts: replaying `--stop-position=END` includes it, `--stop-position=START`
//! excludes it.

use serde::{Deserialize, Serialize};

pub use crate::framing::MAGIC;
use crate::framing::{Event, EventFramer, EventHeader, EventSink};
pub use crate::index_json::{
    IndexHeader, TransactionSummary, TransactionWriter, read_index, write_index,
};

/// Bytes of an event kept for decoding; the rest is skipped as it streams past.
const KEEP: usize = 1024;

const QUERY_EVENT: u8 = 2;
const STOP_EVENT: u8 = 3;
const ROTATE_EVENT: u8 = 4;
const FORMAT_DESCRIPTION_EVENT: u8 = 15;
const XID_EVENT: u8 = 16;
const GTID_EVENT: u8 = 162;

/// MariaDB GTID event flag: the group is one statement with no COMMIT (DDL and the like).
const FL_STANDALONE: u8 = 1;

/// One committed transaction in a binlog file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// `domain-server-sequence`, when the server writes GTIDs (MariaDB always does).
    pub gtid: Option<String>,
    /// Position of the transaction's first event (its GTID event).
    pub start_position: u64,
    /// Position just after its last event.
    pub end_position: u64,
    /// Header timestamp of its last event, in seconds since the Unix epoch (UTC).
    pub commit_time: i64,
}

/// What an indexed binlog file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogIndex {
    /// Server id in the format description event.
    pub server_id: u32,
    /// Server version in the format description event.
    pub server_version: String,
    /// Whether events carry a CRC32 checksum.
    pub checksums: bool,
    /// Timestamp of the first event (Unix seconds).
    pub first_event_time: Option<i64>,
    /// Timestamp of the last event (Unix seconds).
    pub last_event_time: Option<i64>,
    /// Bytes read: the position after the last whole event.
    pub end_position: u64,
    /// The file the server continued in, from the final rotate event.
    pub next_file: Option<String>,
    /// Whether the file was closed by a rotate or stop event (not the active file, not cut short).
    pub closed: bool,
    /// Committed transactions, in file order.
    pub transactions: Vec<Transaction>,
}

/// Errors in a binlog's structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinlogError {
    /// The file does not start with the binlog magic.
    #[error("not a binary log: bad magic bytes")]
    BadMagic,
    /// An event header announces an impossible length.
    #[error("corrupt event at position {position}: length {length}")]
    BadEvent {
        /// Where the event starts.
        position: u64,
        /// Its announced length.
        length: u32,
    },
}

struct OpenGroup {
    gtid: String,
    start: u64,
    standalone: bool,
}

/// Streaming indexer: [`BinlogIndexer::feed`] every chunk, then [`BinlogIndexer::finish`].
pub struct BinlogIndexer {
    framer: EventFramer,
    state: IndexState,
}

/// The indexing of whole events, framed by someone else: the [`BinlogIndexer`]'s own framer, or
/// the [`crate::events::EventScanner`]'s, which shares its framer with it.
#[derive(Default)]
pub(crate) struct IndexState {
    index: BinlogIndex,
    group: Option<OpenGroup>,
}

impl Default for BinlogIndexer {
    fn default() -> Self {
        Self::new()
    }
}

impl BinlogIndexer {
    /// An indexer at the start of a file.
    pub fn new() -> Self {
        Self {
            framer: EventFramer::new(),
            state: IndexState::default(),
        }
    }

    /// Indexes the next chunk of the file.
    pub fn feed(&mut self, data: &[u8]) {
        self.framer.feed(data, &mut self.state);
    }

    /// What is indexed so far: whole events only (a partly fed event is not counted yet).
    /// Lets a caller tailing a growing file see its transactions without ending the scan.
    pub fn snapshot(&self) -> &BinlogIndex {
        &self.state.index
    }

    /// Takes the transactions indexed so far out of the index, so a caller tailing a file that
    /// grows for hours keeps only those it has not dealt with yet.
    pub fn drain_transactions(&mut self) -> Vec<Transaction> {
        self.state.drain_transactions()
    }

    /// Bytes fed so far (the position in the file the next chunk starts at).
    pub fn fed(&self) -> u64 {
        self.framer.position()
    }

    /// Ends the scan. A file cut inside an event (the active file, a truncated copy) is indexed up
    /// to its last whole event, and is not `closed`.
    pub fn finish(self) -> Result<BinlogIndex, BinlogError> {
        self.framer.finish()?;
        Ok(self.state.index)
    }
}

impl EventSink for IndexState {
    fn keep(&mut self, _: &EventHeader) -> usize {
        KEEP
    }

    fn event(&mut self, event: &Event<'_>) {
        let h = &event.header;
        let timestamp = i64::from(h.timestamp);
        let kind = h.kind;
        let server_id = h.server_id;
        let end = event.end;
        let start = event.position;
        self.index.end_position = end;
        // Artificial events (timestamp 0, e.g. a fake rotate) carry no time.
        if timestamp != 0 {
            self.index.first_event_time.get_or_insert(timestamp);
            self.index.last_event_time = Some(timestamp);
        }
        // At most KEEP bytes, however much a framer shared with another reader holds.
        let body = &event.body[..event.body.len().min(KEEP)];
        let checksum_len = if self.index.checksums { 4 } else { 0 };
        match kind {
            FORMAT_DESCRIPTION_EVENT => {
                self.index.server_id = server_id;
                if body.len() >= 52 {
                    let version = &body[2..52];
                    let version = &version[..version
                        .iter()
                        .position(|&b| b == 0)
                        .unwrap_or(version.len())];
                    self.index.server_version = String::from_utf8_lossy(version).into_owned();
                }
                // Checksum-aware servers end the event with the algorithm byte and a CRC32: the
                // framer reads it.
                if body.len() >= 5 {
                    self.index.checksums = event.checksums;
                }
            }
            GTID_EVENT if body.len() >= 13 => {
                let seq = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
                let domain = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
                let flags = body[12];
                self.group = Some(OpenGroup {
                    gtid: format!("{domain}-{server_id}-{seq}"),
                    start,
                    standalone: flags & FL_STANDALONE != 0,
                });
            }
            XID_EVENT => self.close_group(end, timestamp),
            QUERY_EVENT => {
                let standalone = self.group.as_ref().is_some_and(|g| g.standalone);
                if standalone
                    || query_text(body, checksum_len)
                        .is_some_and(|q| q.eq_ignore_ascii_case(b"COMMIT"))
                {
                    self.close_group(end, timestamp);
                }
            }
            // A rotate written by the server itself ends the file; a fake one (timestamp 0) at
            // the start of a remote dump only names the file.
            ROTATE_EVENT if body.len() >= 8 && (timestamp != 0 || start > 4) => {
                let name = &body[8..body.len().saturating_sub(checksum_len).max(8)];
                self.index.next_file = Some(String::from_utf8_lossy(name).into_owned());
                self.index.closed = true;
            }
            STOP_EVENT => self.index.closed = true,
            _ => {}
        }
    }
}

impl IndexState {
    /// Takes the transactions indexed so far.
    pub(crate) fn drain_transactions(&mut self) -> Vec<Transaction> {
        std::mem::take(&mut self.index.transactions)
    }

    fn close_group(&mut self, end: u64, timestamp: i64) {
        if let Some(group) = self.group.take() {
            self.index.transactions.push(Transaction {
                gtid: Some(group.gtid),
                start_position: group.start,
                end_position: end,
                commit_time: timestamp,
            });
        }
    }
}

/// The SQL text of a query event body (without the checksum).
fn query_text(body: &[u8], checksum_len: usize) -> Option<&[u8]> {
    // Post-header: thread id (4), exec time (4), db length (1), error code (2), status vars length (2).
    if body.len() < 13 {
        return None;
    }
    let db_len = usize::from(body[8]);
    let status_len = usize::from(u16::from_le_bytes([body[11], body[12]]));
    let start = 13 + status_len + db_len + 1;
    let end = body.len().checked_sub(checksum_len)?;
    body.get(start..end.max(start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::HEADER_LEN;

    fn event(kind: u8, timestamp: u32, server_id: u32, position: u64, body: &[u8]) -> Vec<u8> {
        let length = (HEADER_LEN + body.len()) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&server_id.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&((position + u64::from(length)) as u32).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    fn gtid(seq: u64, flags: u8) -> Vec<u8> {
        let mut body = seq.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(flags);
        body.extend_from_slice(&[0; 6]);
        body
    }

    fn query(sql: &str) -> Vec<u8> {
        let mut body = vec![0u8; 13];
        body[8] = 3; // db "app"
        body.extend_from_slice(b"app\0");
        body.extend_from_slice(sql.as_bytes());
        body
    }

    /// A hand-made binlog without checksums: one DDL, one row transaction, one COMMIT-ended group.
    fn sample() -> (Vec<u8>, Vec<Transaction>) {
        let mut file = MAGIC.to_vec();
        let mut fde = vec![0u8; 2 + 50 + 4 + 1];
        fde[2..12].copy_from_slice(b"10.11.19-M");
        fde.extend_from_slice(&[0, 0, 0, 0, 0]); // algorithm 0 (off) + 4 bytes
        let push = |file: &mut Vec<u8>, kind, ts, body: &[u8]| {
            let at = file.len() as u64;
            file.extend(event(kind, ts, 7, at, body));
            (at, file.len() as u64)
        };
        push(&mut file, FORMAT_DESCRIPTION_EVENT, 1_000, &fde);
        let (s1, _) = push(&mut file, GTID_EVENT, 1_001, &gtid(1, FL_STANDALONE));
        let (_, e1) = push(
            &mut file,
            QUERY_EVENT,
            1_001,
            &query("CREATE TABLE t (id INT)"),
        );
        let (s2, _) = push(&mut file, GTID_EVENT, 1_002, &gtid(2, 0));
        push(&mut file, QUERY_EVENT, 1_002, &query("BEGIN"));
        push(&mut file, 30, 1_002, &[9u8; 3000]); // a large row event
        let (_, e2) = push(&mut file, XID_EVENT, 1_003, &[1, 0, 0, 0, 0, 0, 0, 0]);
        let (s3, _) = push(&mut file, GTID_EVENT, 1_004, &gtid(3, 0));
        push(&mut file, QUERY_EVENT, 1_004, &query("BEGIN"));
        push(
            &mut file,
            QUERY_EVENT,
            1_004,
            &query("INSERT INTO m VALUES (1)"),
        );
        let (_, e3) = push(&mut file, QUERY_EVENT, 1_005, &query("COMMIT"));
        let mut rotate = 4u64.to_le_bytes().to_vec();
        rotate.extend_from_slice(b"mysql-bin.000002");
        push(&mut file, ROTATE_EVENT, 1_006, &rotate);
        let t = |gtid: &str, start, end, time| Transaction {
            gtid: Some(gtid.into()),
            start_position: start,
            end_position: end,
            commit_time: time,
        };
        (
            file,
            vec![
                t("0-7-1", s1, e1, 1_001),
                t("0-7-2", s2, e2, 1_003),
                t("0-7-3", s3, e3, 1_005),
            ],
        )
    }

    #[test]
    fn transactions_and_rotation_are_indexed_whatever_the_chunking() {
        let (file, expected) = sample();
        for chunk in [1, 3, 19, 20, 64, 4096, file.len()] {
            let mut indexer = BinlogIndexer::new();
            for piece in file.chunks(chunk) {
                indexer.feed(piece);
            }
            let index = indexer.finish().unwrap();
            assert_eq!(index.transactions, expected, "chunk {chunk}");
            assert_eq!(index.server_id, 7);
            assert!(index.server_version.starts_with("10.11.19"));
            assert!(index.closed);
            assert_eq!(index.next_file.as_deref(), Some("mysql-bin.000002"));
            assert_eq!(index.end_position, file.len() as u64);
            assert_eq!(
                (index.first_event_time, index.last_event_time),
                (Some(1_000), Some(1_006))
            );
        }
    }

    #[test]
    fn a_cut_file_is_indexed_to_its_last_whole_event_and_not_closed() {
        let (file, expected) = sample();
        let cut = expected[1].end_position as usize + 10;
        let mut indexer = BinlogIndexer::new();
        indexer.feed(&file[..cut]);
        let index = indexer.finish().unwrap();
        assert_eq!(index.transactions, expected[..2]);
        assert_eq!(index.end_position, expected[1].end_position);
        assert!(!index.closed);
    }

    #[test]
    fn garbage_is_refused() {
        let mut indexer = BinlogIndexer::new();
        indexer.feed(b"-- not a binlog");
        assert_eq!(indexer.finish().unwrap_err(), BinlogError::BadMagic);
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&[0u8; 19]);
        let mut indexer = BinlogIndexer::new();
        indexer.feed(&bad);
        assert!(matches!(
            indexer.finish().unwrap_err(),
            BinlogError::BadEvent { position: 4, .. }
        ));
    }
}

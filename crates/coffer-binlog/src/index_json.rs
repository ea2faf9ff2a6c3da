//! The stored transaction index (`index.json`) written and read with bounded memory.
//!
//! The artifact is one JSON object: the header fields of [`BinlogIndex`] and `transactions`, an
//! array of [`Transaction`]s (FORMAT.md). A binlog of a million small transactions has an index
//! of about 100 MB, so neither side holds it whole:
//!
//! - writing, [`TransactionWriter`] appends each transaction to any `Write` (a spool file) as it
//!   is indexed, keeping only a [`TransactionSummary`]; [`write_index`] then writes the header,
//!   the spooled array and the closing bytes. The output is byte for byte what
//!   `serde_json::to_vec(&BinlogIndex)` writes for the same index, so older readers (and `jq`)
//!   read it unchanged;
//! - reading, [`read_index`] hands each transaction to a callback as it is parsed and returns the
//!   header fields, whatever the key order, with the same rules as deserializing a
//!   [`BinlogIndex`]: unknown keys ignored, missing `Option` fields `None`, missing required ones
//!   and duplicates an error, nothing after the object but whitespace.

use std::fmt;
use std::io::{self, Read, Write};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::index::{BinlogIndex, Transaction};

/// The fields of a [`BinlogIndex`] other than its transactions, in the same order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexHeader {
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
    /// Whether the file was closed by a rotate or stop event.
    pub closed: bool,
}

impl BinlogIndex {
    /// Its header fields (everything but the transactions).
    pub fn header(&self) -> IndexHeader {
        IndexHeader {
            server_id: self.server_id,
            server_version: self.server_version.clone(),
            checksums: self.checksums,
            first_event_time: self.first_event_time,
            last_event_time: self.last_event_time,
            end_position: self.end_position,
            next_file: self.next_file.clone(),
            closed: self.closed,
        }
    }
}

impl IndexHeader {
    /// The index with these header fields and `transactions`.
    pub fn with_transactions(self, transactions: Vec<Transaction>) -> BinlogIndex {
        BinlogIndex {
            server_id: self.server_id,
            server_version: self.server_version,
            checksums: self.checksums,
            first_event_time: self.first_event_time,
            last_event_time: self.last_event_time,
            end_position: self.end_position,
            next_file: self.next_file,
            closed: self.closed,
            transactions,
        }
    }
}

/// What a manifest needs of an index's transactions: their number, the first and the last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionSummary {
    /// How many.
    pub count: u64,
    /// The first, in file order.
    pub first: Option<Transaction>,
    /// The last, in file order.
    pub last: Option<Transaction>,
}

impl TransactionSummary {
    fn note(&mut self, t: &Transaction) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(t.clone());
        }
        self.last = Some(t.clone());
    }
}

/// Writes transactions as the elements of the index's `transactions` array (without the
/// brackets), one after another, keeping only their [`TransactionSummary`].
pub struct TransactionWriter<W: Write> {
    out: W,
    summary: TransactionSummary,
}

impl<W: Write> TransactionWriter<W> {
    /// A writer of no transactions yet into `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            summary: TransactionSummary::default(),
        }
    }

    /// Appends one transaction.
    pub fn push(&mut self, t: &Transaction) -> io::Result<()> {
        if self.summary.count > 0 {
            self.out.write_all(b",")?;
        }
        serde_json::to_writer(&mut self.out, t).map_err(io::Error::from)?;
        self.summary.note(t);
        Ok(())
    }

    /// What was written so far.
    pub fn summary(&self) -> &TransactionSummary {
        &self.summary
    }

    /// The output and the summary.
    pub fn into_parts(self) -> (W, TransactionSummary) {
        (self.out, self.summary)
    }
}

/// Writes a whole index artifact into `out`: `header`, then the `transactions` array whose
/// elements `transactions` reads (as a [`TransactionWriter`] wrote them), then a newline. The
/// bytes equal `serde_json::to_vec` of the same [`BinlogIndex`] plus `\n`.
pub fn write_index(
    out: &mut impl Write,
    header: &IndexHeader,
    transactions: &mut impl Read,
) -> io::Result<()> {
    let head = serde_json::to_vec(header).map_err(io::Error::from)?;
    // `{"server_id":…,"closed":…}`: reopen the object for one more field.
    let open = head
        .strip_suffix(b"}")
        .ok_or_else(|| io::Error::other("a serialized index header ends with '}'"))?;
    out.write_all(open)?;
    out.write_all(b",\"transactions\":[")?;
    io::copy(transactions, out)?;
    out.write_all(b"]}\n")
}

/// Reads an index artifact from `input`, handing each transaction to `visit` in file order as it
/// is parsed; returns the header fields. Memory is bounded by one transaction (and by what one
/// header field holds), whatever the number of transactions. Any input that is not one index
/// object is an error, never a panic.
pub fn read_index<R: Read>(
    input: R,
    mut visit: impl FnMut(Transaction),
) -> Result<IndexHeader, serde_json::Error> {
    let mut de =
        serde_json::Deserializer::from_reader(io::BufReader::with_capacity(64 * 1024, input));
    let header = IndexSeed { visit: &mut visit }.deserialize(&mut de)?;
    de.end()?;
    Ok(header)
}

/// The fields of the index object.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    ServerId,
    ServerVersion,
    Checksums,
    FirstEventTime,
    LastEventTime,
    EndPosition,
    NextFile,
    Closed,
    Transactions,
    #[serde(other)]
    Other,
}

struct IndexSeed<'a, F> {
    visit: &'a mut F,
}

impl<'de, F: FnMut(Transaction)> DeserializeSeed<'de> for IndexSeed<'_, F> {
    type Value = IndexHeader;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<IndexHeader, D::Error> {
        deserializer.deserialize_map(self)
    }
}

/// Sets a field once: a second occurrence is an error, as for a derived `Deserialize`.
fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de, F: FnMut(Transaction)> Visitor<'de> for IndexSeed<'_, F> {
    type Value = IndexHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a binlog index object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IndexHeader, A::Error> {
        let mut server_id = None;
        let mut server_version = None;
        let mut checksums = None;
        let mut first_event_time = None;
        let mut last_event_time = None;
        let mut end_position = None;
        let mut next_file = None;
        let mut closed = None;
        let mut transactions = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::ServerId => once(&mut server_id, "server_id", map.next_value()?)?,
                Field::ServerVersion => {
                    once(&mut server_version, "server_version", map.next_value()?)?
                }
                Field::Checksums => once(&mut checksums, "checksums", map.next_value()?)?,
                Field::FirstEventTime => {
                    once(&mut first_event_time, "first_event_time", map.next_value()?)?
                }
                Field::LastEventTime => {
                    once(&mut last_event_time, "last_event_time", map.next_value()?)?
                }
                Field::EndPosition => once(&mut end_position, "end_position", map.next_value()?)?,
                Field::NextFile => once(&mut next_file, "next_file", map.next_value()?)?,
                Field::Closed => once(&mut closed, "closed", map.next_value()?)?,
                Field::Transactions => {
                    if transactions.is_some() {
                        return Err(de::Error::duplicate_field("transactions"));
                    }
                    map.next_value_seed(TransactionsSeed {
                        visit: &mut *self.visit,
                    })?;
                    transactions = Some(());
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = de::Error::missing_field;
        transactions.ok_or_else(|| missing("transactions"))?;
        Ok(IndexHeader {
            server_id: server_id.ok_or_else(|| missing("server_id"))?,
            server_version: server_version.ok_or_else(|| missing("server_version"))?,
            checksums: checksums.ok_or_else(|| missing("checksums"))?,
            first_event_time: first_event_time.flatten(),
            last_event_time: last_event_time.flatten(),
            end_position: end_position.ok_or_else(|| missing("end_position"))?,
            next_file: next_file.flatten(),
            closed: closed.ok_or_else(|| missing("closed"))?,
        })
    }
}

/// The `transactions` array, each element handed over as it is parsed.
struct TransactionsSeed<'a, F> {
    visit: &'a mut F,
}

impl<'de, F: FnMut(Transaction)> DeserializeSeed<'de> for TransactionsSeed<'_, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(Transaction)> Visitor<'de> for TransactionsSeed<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of transactions")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(t) = seq.next_element::<Transaction>()? {
            (self.visit)(t);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tx(n: u64) -> Transaction {
        Transaction {
            gtid: (!n.is_multiple_of(5)).then(|| format!("0-1-{n}")),
            start_position: 4 + n * 100,
            end_position: 104 + n * 100,
            commit_time: 1_700_000_000 + n as i64,
        }
    }

    fn sample(n: u64) -> BinlogIndex {
        BinlogIndex {
            server_id: 7,
            server_version: "10.11.19-MariaDB-log".into(),
            checksums: true,
            first_event_time: Some(1_700_000_000),
            last_event_time: (n > 1).then_some(1_700_000_100),
            end_position: 4 + n * 100,
            next_file: n.is_multiple_of(2).then(|| "mysql-bin.000002".into()),
            closed: n.is_multiple_of(2),
            transactions: (0..n).map(tx).collect(),
        }
    }

    /// The artifact written the streaming way.
    fn streamed(index: &BinlogIndex) -> Vec<u8> {
        let mut spool = TransactionWriter::new(Vec::new());
        for t in &index.transactions {
            spool.push(t).unwrap();
        }
        let (spooled, summary) = spool.into_parts();
        assert_eq!(summary.count, index.transactions.len() as u64);
        assert_eq!(summary.first.as_ref(), index.transactions.first());
        assert_eq!(summary.last.as_ref(), index.transactions.last());
        let mut out = Vec::new();
        write_index(&mut out, &index.header(), &mut spooled.as_slice()).unwrap();
        out
    }

    fn read_all(bytes: &[u8]) -> Result<BinlogIndex, serde_json::Error> {
        let mut transactions = Vec::new();
        let header = read_index(bytes, |t| transactions.push(t))?;
        Ok(header.with_transactions(transactions))
    }

    #[test]
    fn the_streaming_writer_writes_what_the_whole_index_serializes_to() {
        for n in [0, 1, 2, 3, 1000] {
            let index = sample(n);
            let bytes = streamed(&index);
            let mut whole = serde_json::to_vec(&index).unwrap();
            whole.push(b'\n');
            assert_eq!(bytes, whole, "{n} transactions");
            assert_eq!(
                serde_json::from_slice::<BinlogIndex>(&bytes).unwrap(),
                index
            );
            assert_eq!(read_all(&bytes).unwrap(), index);
        }
    }

    #[test]
    fn whole_indexes_are_read_whatever_the_key_order_and_unknown_keys() {
        let index = sample(3);
        // As older coffer wrote it, pretty-printed, and with transactions first.
        let old = serde_json::to_vec(&index).unwrap();
        assert_eq!(read_all(&old).unwrap(), index);
        let pretty = serde_json::to_vec_pretty(&index).unwrap();
        assert_eq!(read_all(&pretty).unwrap(), index);
        let header = serde_json::to_string(&index.header()).unwrap();
        let text = format!(
            r#"{{"transactions":{},"later":{{"a":[1,{{"b":null}}]}},{}"#,
            serde_json::to_string(&index.transactions).unwrap(),
            &header[1..]
        );
        assert_eq!(read_all(text.as_bytes()).unwrap(), index);
        assert_eq!(
            serde_json::from_str::<BinlogIndex>(&text).unwrap(),
            index,
            "what the whole reader reads too"
        );
        // Option fields may be missing or null.
        let minimal = br#"{"transactions":[],"server_id":1,"server_version":"v","checksums":false,
            "end_position":4,"closed":false,"next_file":null}"#;
        let read = read_all(minimal).unwrap();
        assert_eq!(
            read,
            serde_json::from_slice::<BinlogIndex>(minimal).unwrap()
        );
        assert_eq!(read.first_event_time, None);
    }

    #[test]
    fn truncated_garbage_and_malformed_indexes_are_errors() {
        let bytes = streamed(&sample(20));
        for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 3, bytes.len() - 2] {
            assert!(read_all(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let bad: &[&[u8]] = &[
            b"",
            b"garbage",
            b"[]",
            b"null",
            b"{}",
            br#"{"server_id":1,"server_version":"v","checksums":false,"end_position":4,"closed":false}"#,
            br#"{"transactions":[],"server_id":1,"server_version":"v","checksums":false,"end_position":4}"#,
            br#"{"transactions":[],"transactions":[],"server_id":1,"server_version":"v","checksums":false,"end_position":4,"closed":false}"#,
            br#"{"transactions":[],"server_id":1,"server_id":1,"server_version":"v","checksums":false,"end_position":4,"closed":false}"#,
            br#"{"transactions":null,"server_id":1,"server_version":"v","checksums":false,"end_position":4,"closed":false}"#,
            br#"{"transactions":[{"gtid":"0-1-1"}],"server_id":1,"server_version":"v","checksums":false,"end_position":4,"closed":false}"#,
            br#"{"transactions":[],"server_id":-1,"server_version":"v","checksums":false,"end_position":4,"closed":false}"#,
            br#"{"transactions":[],"server_id":1,"server_version":"v","checksums":false,"end_position":4,"closed":false} trailing"#,
        ];
        for input in bad {
            assert!(
                read_all(input).is_err(),
                "{}",
                String::from_utf8_lossy(input)
            );
            // The whole-index reader refuses them too.
            assert!(serde_json::from_slice::<BinlogIndex>(input).is_err());
        }
    }

    #[test]
    fn transactions_reach_the_callback_one_at_a_time_in_file_order() {
        let index = sample(50);
        let bytes = streamed(&index);
        let mut seen = 0u64;
        let mut last_end = 0;
        read_index(bytes.as_slice(), |t| {
            assert_eq!(t, tx(seen));
            assert!(t.end_position > last_end);
            last_end = t.end_position;
            seen += 1;
        })
        .unwrap();
        assert_eq!(seen, 50);
    }

    fn any_transaction() -> impl Strategy<Value = Transaction> {
        (
            proptest::option::of("[0-9a-z\"\\\\-]{0,12}"),
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
        )
            .prop_map(
                |(gtid, start_position, end_position, commit_time)| Transaction {
                    gtid,
                    start_position,
                    end_position,
                    commit_time,
                },
            )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_all(&bytes);
        }

        #[test]
        fn damaged_indexes_never_panic_and_agree_with_the_whole_reader(
            n in 0u64..8,
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = streamed(&sample(n));
            let at = at % bytes.len();
            bytes[at] = byte;
            let streamed = read_all(&bytes);
            let whole = serde_json::from_slice::<BinlogIndex>(&bytes);
            prop_assert_eq!(streamed.ok(), whole.ok());
        }

        #[test]
        fn any_index_round_trips(
            transactions in proptest::collection::vec(any_transaction(), 0..20),
            server_version in "\\PC{0,20}",
            next_file in proptest::option::of("[a-z.0-9]{1,16}"),
            times in (proptest::option::of(any::<i64>()), proptest::option::of(any::<i64>())),
            server_id in any::<u32>(),
            end_position in any::<u64>(),
            flags in (any::<bool>(), any::<bool>()),
        ) {
            let index = BinlogIndex {
                server_id,
                server_version,
                checksums: flags.0,
                first_event_time: times.0,
                last_event_time: times.1,
                end_position,
                next_file,
                closed: flags.1,
                transactions,
            };
            let bytes = streamed(&index);
            prop_assert_eq!(&serde_json::from_slice::<BinlogIndex>(&bytes).unwrap(), &index);
            prop_assert_eq!(read_all(&bytes).unwrap(), index);
        }
    }
}

//! Everything read back from storage is untrusted: whatever the bytes, the parsers of manifests,
//! transaction indexes, binlogs and dumps return an error or a value, and never panic.

use coffer_core::binlog::{BinlogIndex, BinlogIndexer};
use coffer_core::binlog_events::{EventScanner, TableFilter};
use coffer_core::dumpscan::DumpScanner;
use coffer_core::manifest::Manifest;
use proptest::prelude::*;

/// Bytes that look like a binlog: the magic, then anything.
fn binlog_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..4096).prop_map(|tail| {
        let mut bytes = b"\xfebin".to_vec();
        bytes.extend(tail);
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_as_a_manifest_are_an_error_or_a_checked_manifest(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Manifest::from_json("manifests/x.json", &bytes);
    }

    #[test]
    fn any_json_as_a_manifest_never_panics(text in "\\{\"format_version\": ?[0-9]{1,3}(, \"id\": \"[ -~]{0,20}\")?(, \"kind\": \"(full|binlog|segment|other)\")?[ -~]{0,200}\\}") {
        let _ = Manifest::from_json("manifests/x.json", text.as_bytes());
    }

    #[test]
    fn any_bytes_as_a_transaction_index_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = serde_json::from_slice::<BinlogIndex>(&bytes);
    }

    #[test]
    fn any_bytes_after_the_binlog_magic_never_panic_the_indexer(bytes in binlog_bytes(), chunk in 1usize..512) {
        let mut indexer = BinlogIndexer::new();
        for piece in bytes.chunks(chunk) {
            indexer.feed(piece);
        }
        let _ = indexer.finish();
    }

    #[test]
    fn any_bytes_after_the_binlog_magic_never_panic_the_event_scanner(bytes in binlog_bytes(), chunk in 1usize..512) {
        let mut scanner = EventScanner::new(TableFilter::default());
        for piece in bytes.chunks(chunk) {
            scanner.feed(piece);
        }
        let _ = scanner.finish();
    }

    #[test]
    fn any_bytes_as_a_dump_never_panic_the_scanner(bytes in prop::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..512) {
        let mut scanner = DumpScanner::new();
        for piece in bytes.chunks(chunk) {
            scanner.feed(piece);
        }
        let _ = scanner.finish();
    }
}

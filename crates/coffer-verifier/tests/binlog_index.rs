//! The native binlog indexer agrees with the server about real binary logs.

use coffer_core::binlog::BinlogIndexer;
use coffer_verifier::{BinlogFormat, Sandbox, SandboxOptions};

/// (end position, GTID) of every committed group, as `SHOW BINLOG EVENTS` tells them.
fn server_view(sandbox: &Sandbox, file: &str) -> Vec<(u64, String)> {
    let events = sandbox
        .sql(&format!("SHOW BINLOG EVENTS IN '{file}'"))
        .unwrap();
    let mut out = Vec::new();
    let mut gtid: Option<(String, bool)> = None;
    for line in events.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let (kind, end, info) = (cols[2], cols[4].parse::<u64>().unwrap(), cols[5]);
        match kind {
            "Gtid" => {
                let standalone = !info.starts_with("BEGIN");
                let id = info.rsplit(' ').next().unwrap().to_string();
                gtid = Some((id, standalone));
            }
            "Xid" => out.push((end, gtid.take().unwrap().0)),
            "Query" if gtid.as_ref().is_some_and(|g| g.1) || info == "COMMIT" => {
                out.push((end, gtid.take().unwrap().0))
            }
            _ => {}
        }
    }
    out
}

fn index_real_binlog(format: BinlogFormat) {
    let sandbox = Sandbox::start(SandboxOptions {
        server_id: 42,
        binlog_format: format,
        ..Default::default()
    })
    .unwrap();
    // The position is read in the same session, before the rotation: in MIXED format the
    // session's end logs a DROP TEMPORARY TABLE into the next file.
    let last_gtid = sandbox
        .sql(
            "CREATE DATABASE app; USE app;
             CREATE TABLE invoices (id INT PRIMARY KEY, note TEXT) ENGINE=InnoDB;
             CREATE TABLE legacy (id INT) ENGINE=MyISAM;
             INSERT INTO invoices VALUES (1, 'a'), (2, 'b');
             BEGIN; UPDATE invoices SET note = REPEAT('x', 20000) WHERE id = 1; DELETE FROM invoices WHERE id = 2; COMMIT;
             INSERT INTO legacy VALUES (1);
             CREATE TEMPORARY TABLE scratch (id INT);
             INSERT INTO scratch VALUES (7);
             INSERT INTO invoices SELECT id + 10, 'from scratch' FROM scratch;
             DELETE FROM invoices;
             SELECT @@gtid_binlog_pos;
             FLUSH BINARY LOGS;",
        )
        .unwrap();
    let file = "mysql-bin.000001";
    let bytes = std::fs::read(sandbox.binlog_dir().join(file)).unwrap();
    let mut indexer = BinlogIndexer::new();
    for chunk in bytes.chunks(4093) {
        indexer.feed(chunk);
    }
    let index = indexer.finish().unwrap();
    assert_eq!(index.server_id, 42);
    assert!(
        index.checksums,
        "MariaDB 10.11 writes CRC32 checksums by default"
    );
    assert!(index.closed);
    assert_eq!(index.next_file.as_deref(), Some("mysql-bin.000002"));
    assert_eq!(index.end_position, bytes.len() as u64);
    let ours: Vec<(u64, String)> = index
        .transactions
        .iter()
        .map(|t| (t.end_position, t.gtid.clone().unwrap()))
        .collect();
    let theirs = server_view(&sandbox, file);
    assert!(
        theirs.len() >= 8,
        "expected every statement above in the binlog: {theirs:?}"
    );
    assert_eq!(ours, theirs);
    assert_eq!(ours.last().unwrap().1, last_gtid.trim());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for t in &index.transactions {
        assert!(
            (now - 300..=now + 5).contains(&t.commit_time),
            "commit time {} is not recent",
            t.commit_time
        );
        assert!(t.start_position < t.end_position);
    }
}

#[test]
fn row_format_binlog_is_indexed_like_the_server_sees_it() {
    index_real_binlog(BinlogFormat::Row);
}

#[test]
fn mixed_format_binlog_is_indexed_like_the_server_sees_it() {
    index_real_binlog(BinlogFormat::Mixed);
}

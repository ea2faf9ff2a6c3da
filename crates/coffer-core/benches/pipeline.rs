//! Throughput of the parts coffer adds on top of `mariadb-dump | zstd`: the dump scanner
//! (row counts and per-table digests) and the whole store pipeline (scan + zstd-3 + SHA-256 +
//! local folder), on a synthetic dump shaped like `mariadb-dump` output. The end-to-end
//! comparison against the stock tools is `scripts/bench.sh`.

use std::hint::black_box;
use std::io::Write;

use coffer_core::config::Compression;
use coffer_core::dumpscan::DumpScanner;
use coffer_core::pipeline::{self, Encoding, Progress};
use coffer_core::storage::LocalStorage;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// About `target` bytes of dump text: one table, extended inserts of 500 rows each.
fn synthetic_dump(target: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(target + 4096);
    out.extend_from_slice(
        b"-- MariaDB dump\nUSE `app`;\nCREATE TABLE `invoices` (\n  `id` int NOT NULL\n);\n",
    );
    let mut id = 0u64;
    while out.len() < target {
        out.extend_from_slice(b"INSERT INTO `invoices` VALUES\n");
        for i in 0..500 {
            id += 1;
            let sep = if i == 499 { ";\n" } else { ",\n" };
            write!(
                out,
                "({id},{},'INV-{id:08}','Debtor {} (it\\'s) ltd.',{}.25,'SAR','2025-06-01','funded',NULL,'2025-01-01 00:00:00'){sep}",
                id % 997,
                id % 97,
                500 + (id * 7919) % 100_000
            )
            .unwrap();
        }
    }
    out.extend_from_slice(b"-- Dump completed on 2026-11-26 17:46:43\n");
    out
}

fn bench(c: &mut Criterion) {
    let dump = synthetic_dump(64 * 1024 * 1024);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Bytes(dump.len() as u64));
    group.sample_size(10);

    group.bench_function("dumpscan", |b| {
        b.iter(|| {
            let mut scanner = DumpScanner::new();
            for chunk in dump.chunks(256 * 1024) {
                scanner.feed(chunk);
            }
            black_box(scanner.finish())
        })
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path().to_path_buf());
    let dump = std::sync::Arc::new(dump);
    group.bench_function("scan_zstd3_sha256_store", |b| {
        b.iter(|| {
            let dump = dump.clone();
            let encoding = Encoding {
                compression: Compression::Zstd(3),
                recipient: None,
            };
            runtime
                .block_on(pipeline::store(
                    &storage,
                    "dump.sql",
                    "data/bench/dump.sql.zst",
                    &encoding,
                    Progress::default(),
                    move |w| {
                        let mut scanner = DumpScanner::new();
                        for chunk in dump.chunks(256 * 1024) {
                            scanner.feed(chunk);
                            w.write_all(chunk)?;
                        }
                        Ok(scanner.finish())
                    },
                ))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
